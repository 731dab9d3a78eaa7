"""Alembic revisions of the catalog, oldest first by down_revision."""
