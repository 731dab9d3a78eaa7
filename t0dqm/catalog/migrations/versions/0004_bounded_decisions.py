"""Periodic decisions bounded by their candidates (issue 14): version control's worklist, quota's age
index, running counts of files and archives.

- files.versions_checked_at, and the partial index ix_files_versions_unchecked over the rows where it
  is NULL. Backfill: the samples with no superseded ROOT file left are stamped.
- ix_files_present_age: present files per class by mtime (a partial index).
- Tables counts and count_deltas, filled by one recount. Triggers on files and archives keep them
  current (t0dqm.catalog.counts).

The column and the indexes are skipped when they already exist, so a catalog created from a newer
table definition is upgraded too.

Revision ID: 0004_bounded_decisions
Revises: 0003_heartbeats
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_bounded_decisions"
down_revision = "0003_heartbeats"
branch_labels = None
depends_on = None

PRESENT = "state IN ('received', 'zipped')"
UNCHECKED = "versions_checked_at IS NULL"


def _key(primary_key: bool) -> list[sa.Column[str]]:
    return [
        sa.Column(name, sa.String(size), nullable=False, primary_key=primary_key)
        for name, size in (("entity", 16), ("cls", 32), ("state", 16), ("index_state", 16))
    ]


def upgrade() -> None:
    from t0dqm.catalog import counts, queries

    conn = op.get_bind()
    inspector = sa.inspect(conn)
    if "versions_checked_at" not in {c["name"] for c in inspector.get_columns("files")}:
        op.add_column("files", sa.Column("versions_checked_at", sa.Float))
    indexes = {ix["name"] for ix in inspector.get_indexes("files")}
    if "ix_files_versions_unchecked" not in indexes:
        op.create_index(
            "ix_files_versions_unchecked",
            "files",
            ["run", "dataset"],
            sqlite_where=sa.text(UNCHECKED),
            postgresql_where=sa.text(UNCHECKED),
        )
    if "ix_files_present_age" not in indexes:
        op.create_index(
            "ix_files_present_age",
            "files",
            ["cls", "mtime"],
            sqlite_where=sa.text(PRESENT),
            postgresql_where=sa.text(PRESENT),
        )
    tables = set(inspector.get_table_names())
    if "counts" not in tables:
        op.create_table(
            "counts",
            *_key(True),
            sa.Column("n", sa.BigInteger, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
        )
    if "count_deltas" not in tables:
        op.create_table(
            "count_deltas",
            sa.Column(
                "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
            ),
            *_key(False),
            sa.Column("n", sa.Integer, nullable=False),
            sa.Column("bytes", sa.BigInteger, nullable=False),
        )
    queries.backfill_versions_checked(conn)
    counts.rebuild(conn)
    counts.install_triggers(conn)


def downgrade() -> None:
    from t0dqm.catalog import counts

    counts.drop_triggers(op.get_bind())
    op.drop_table("count_deltas")
    op.drop_table("counts")
    op.drop_index("ix_files_present_age", table_name="files")
    op.drop_index("ix_files_versions_unchecked", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("versions_checked_at")
