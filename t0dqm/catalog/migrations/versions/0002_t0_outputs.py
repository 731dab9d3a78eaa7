"""Tier-0 disk outputs: where each must go and whether processing still needs it (hand-written schema 2).

Revision ID: 0002_t0_outputs
Revises: 0001_baseline
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_t0_outputs"
down_revision = "0001_baseline"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "t0_outputs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(2048), nullable=False, unique=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("adler32", sa.String(8)),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("endpoints_required", sa.Text, nullable=False),
        sa.Column("endpoints_done", sa.Text, nullable=False),
        sa.Column("needed_by", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_t0_outputs_state", "t0_outputs", ["state", "created_at"])


def downgrade() -> None:
    op.drop_table("t0_outputs")
