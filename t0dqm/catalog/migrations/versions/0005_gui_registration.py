"""DQM GUI registration: when the GUI accepted each file, and why a file was not sent (t0dqm.steps.gui).

Revision ID: 0005_gui_registration
Revises: 0004_bounded_decisions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_gui_registration"
down_revision = "0004_bounded_decisions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Adds what is missing (a catalog created from the table definitions may have it already)."""
    found = sa.inspect(op.get_bind())
    columns = {c["name"] for c in found.get_columns("files")}
    if "gui_registered_at" not in columns:
        op.add_column("files", sa.Column("gui_registered_at", sa.Float))
    if "gui_reason" not in columns:
        op.add_column("files", sa.Column("gui_reason", sa.Text))
    if "ix_files_gui" not in {i["name"] for i in found.get_indexes("files")}:
        op.create_index("ix_files_gui", "files", ["gui_registered_at", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_files_gui", table_name="files")
    with op.batch_alter_table("files") as batch:
        batch.drop_column("gui_reason")
        batch.drop_column("gui_registered_at")
