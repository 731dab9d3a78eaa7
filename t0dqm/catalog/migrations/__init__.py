"""Alembic migrations of the catalog schema (run them with ``t0dqm db upgrade``; see t0dqm.catalog.schema)."""
