"""Tier-0 placement with Rucio: dataset, block and LFN of each output; the t0_rules table.

Revision ID: 0006_t0_placement
Revises: 0005_gui_registration
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_t0_placement"
down_revision = "0005_gui_registration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("t0_outputs") as batch:
        batch.add_column(sa.Column("dataset", sa.String(512)))
        batch.add_column(sa.Column("block", sa.String(600)))
        batch.add_column(sa.Column("lfn", sa.String(2048)))
        batch.create_index("ix_t0_outputs_block", ["block"])
    op.create_table(
        "t0_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("block", sa.String(600), nullable=False),
        sa.Column("dataset", sa.String(512), nullable=False),
        sa.Column("rse", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_since", sa.Float, nullable=False),
        sa.Column("checked_at", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("block", "rse", name="uq_t0_rules_block_rse"),
    )
    op.create_index("ix_t0_rules_state", "t0_rules", ["state", "updated_at"])


def downgrade() -> None:
    op.drop_table("t0_rules")
    with op.batch_alter_table("t0_outputs") as batch:
        batch.drop_index("ix_t0_outputs_block")
        batch.drop_column("lfn")
        batch.drop_column("block")
        batch.drop_column("dataset")
