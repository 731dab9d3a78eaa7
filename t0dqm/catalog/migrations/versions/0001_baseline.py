"""Baseline: the catalog as the hand-written schema 1 left it (files, archives, audit, leases, ...).

A catalog created before alembic with ``meta.schema_version = 1`` is stamped at this revision.

Revision ID: 0001_baseline
Revises:
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0001_baseline"
down_revision = None
branch_labels = None
depends_on = None


def _claim_columns() -> list[sa.Column[Any]]:
    return [sa.Column("claimed_by", sa.String(128)), sa.Column("claimed_until", sa.Float)]


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "archives",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("pattern", sa.String(1024), nullable=False),
        sa.Column("serial", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("nfiles", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("adler32", sa.String(8)),
        sa.Column("first_write", sa.Float),
        sa.Column("last_write", sa.Float),
        sa.Column("frozen_at", sa.Float),
        sa.Column("copied_at", sa.Float),
        sa.Column("verified_at", sa.Float),
        sa.Column("cleaned_at", sa.Float),
        sa.Column("tries", sa.Integer, nullable=False),
        sa.Column("next_try_at", sa.Float),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        *_claim_columns(),
        sa.UniqueConstraint("pattern", "serial", name="uq_archives_pattern_serial"),
    )
    op.create_index("ix_archives_state", "archives", ["state", "updated_at"])
    op.create_table(
        "files",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1024), nullable=False, unique=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("cls", sa.String(32), nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("dataset", sa.String(512), nullable=False),
        sa.Column("subsystem", sa.String(128)),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("md5", sa.String(32)),
        sa.Column("adler32", sa.String(8), nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("zippat", sa.String(1024)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("index_state", sa.String(16), nullable=False),
        sa.Column("archive_id", sa.Integer, sa.ForeignKey("archives.id")),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        *_claim_columns(),
        sa.Column("attempts", sa.Integer, nullable=False),
    )
    op.create_index("ix_files_state", "files", ["state", "updated_at"])
    op.create_index("ix_files_index_state", "files", ["index_state", "updated_at"])
    op.create_index("ix_files_run", "files", ["run", "dataset"])
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("resolved_at", sa.Float),
    )
    op.create_index("ix_quarantine_path", "quarantine", ["path"])
    op.create_table(
        "members",
        sa.Column("archive_id", sa.Integer, sa.ForeignKey("archives.id"), nullable=False),
        sa.Column("file_id", sa.Integer, sa.ForeignKey("files.id"), nullable=False, unique=True),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("adler32", sa.String(8), nullable=False),
        sa.Column("added_at", sa.Float, nullable=False),
        sa.UniqueConstraint("archive_id", "name", name="uq_members_archive_name"),
    )
    op.create_table(
        "streamer_units",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("stream", sa.String(128), nullable=False),
        sa.Column("run", sa.Integer, nullable=False),
        sa.Column("files", sa.Integer, nullable=False),
        sa.Column("bytes", sa.Integer, nullable=False),
        sa.Column("newest_mtime", sa.Integer),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(32)),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("label", "stream", "run", name="uq_streamer_unit"),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("host", sa.String(128), nullable=False),
        sa.Column("entity", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.Integer),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16)),
        sa.Column("path", sa.String(2048)),
        sa.Column("size", sa.Integer),
        sa.Column("checksum", sa.String(64)),
        sa.Column("rule", sa.String(64)),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_audit_entity", "audit", ["entity", "entity_id"])
    op.create_index("ix_audit_action", "audit", ["action", "at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(256), primary_key=True),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.create_table(
        "alarms",
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("first_at", sa.Float, nullable=False),
        sa.Column("last_at", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("notified_at", sa.Float),
        sa.Column("active", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "alarms",
        "leases",
        "audit",
        "streamer_units",
        "members",
        "quarantine",
        "files",
        "archives",
        "meta",
    ):
        op.drop_table(table)
