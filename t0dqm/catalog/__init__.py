"""The catalog: schema, migrations, claims and leases, and all SQL, by entity."""
