"""Heartbeats: one row per live process; claims and leases are dead when their holder's row is stale.
beat_runs: what the elected beat last sent, so a standby that takes over goes on from there.

Also fences off t0dqm versions from before alembic: they read ``meta.schema_version`` and refuse to run
on a catalog whose number is above their own (2), so it is set to 3 here.

Revision ID: 0003_heartbeats
Revises: 0002_t0_outputs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_heartbeats"
down_revision = "0002_t0_outputs"
branch_labels = None
depends_on = None

meta = sa.table("meta", sa.column("key", sa.String), sa.column("value", sa.Text))


def upgrade() -> None:
    op.create_table(
        "heartbeats",
        sa.Column("identity", sa.String(256), primary_key=True),
        sa.Column("host", sa.String(256), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("locator", sa.String(256), nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("beat_at", sa.Float, nullable=False),
    )
    op.create_index("ix_heartbeats_beat_at", "heartbeats", ["beat_at"])
    op.create_table(
        "beat_runs",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("last_run_at", sa.Float, nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("sent_by", sa.String(256), nullable=False),
    )
    op.execute(meta.delete().where(meta.c.key == "schema_version"))
    op.execute(meta.insert().values(key="schema_version", value="3"))


def downgrade() -> None:
    op.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
    op.drop_table("beat_runs")
    op.drop_table("heartbeats")
