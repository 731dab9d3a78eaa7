"""A catalog from before alembic (hand-written schema_version 1 or 2) is recognised, stamped and
migrated in place, data kept; SQLite and PostgreSQL."""

from __future__ import annotations

import time

from sqlalchemy import Index, MetaData, Table, insert, inspect, select

from t0dqm.catalog.db import Catalog, files, meta, metadata, t0_outputs
from t0dqm.catalog.schema import LEGACY_REVISIONS, head


def make_legacy(url: str, version: int) -> Catalog:
    """A catalog as t0dqm's hand-written migrations left it at ``version`` (1: no t0_outputs)."""
    cat = Catalog(url)
    tables = [t for t in metadata.sorted_tables if t.name in _LEGACY_TABLES and t is not t0_outputs]
    metadata.create_all(cat.engine, tables=tables)
    if version >= 2:  # t0_outputs as schema 2 had it (later revisions add columns)
        legacy = MetaData()
        Table(
            "t0_outputs",
            legacy,
            *[c._copy() for c in t0_outputs.columns if c.name in _LEGACY_T0_OUTPUTS],
            Index("ix_t0_outputs_state", "state", "created_at"),
        )
        legacy.create_all(cat.engine)
    now = time.time()
    with cat.begin() as conn:
        conn.execute(insert(meta).values(key="schema_version", value=str(version)))
        conn.execute(
            insert(files).values(
                path="a/DQM_V0001_R000000001.root",
                name="DQM_V0001_R000000001.root",
                cls="online_data",
                run=1,
                version=1,
                dataset="/A/B/C",
                size=1,
                adler32="00000001",
                mtime=now,
                state="received",
                index_state="pending",
                created_at=now,
                updated_at=now,
                attempts=0,
            )
        )
    return cat


# The tables the hand-written schema 2 had (later revisions add others).
_LEGACY_TABLES = {
    "meta",
    "files",
    "quarantine",
    "archives",
    "members",
    "streamer_units",
    "t0_outputs",
    "audit",
    "leases",
    "alarms",
}
_LEGACY_T0_OUTPUTS = {
    "id",
    "path",
    "size",
    "adler32",
    "created_at",
    "endpoints_required",
    "endpoints_done",
    "needed_by",
    "state",
    "updated_at",
}


def test_upgrade_v1_to_head(catalog_url: str) -> None:
    cat = make_legacy(catalog_url, 1)
    try:
        assert cat.revision() == LEGACY_REVISIONS[1] == "0001_baseline"
        assert "t0_outputs" not in inspect(cat.engine).get_table_names()
        assert "alembic_version" not in inspect(cat.engine).get_table_names()
        assert cat.upgrade() == head()
        assert cat.revision() == head()
        assert "t0_outputs" in inspect(cat.engine).get_table_names()
        now = time.time()
        with cat.begin() as conn:
            conn.execute(insert(t0_outputs).values(path="/x/y.root", size=3, created_at=now, updated_at=now))
        with cat.read() as conn:
            assert conn.execute(select(files.c.path)).scalar() == "a/DQM_V0001_R000000001.root"  # data kept
            row = conn.execute(select(t0_outputs)).mappings().one()
        assert (row["state"], row["needed_by"], row["endpoints_done"]) == ("present", 0, "[]")
        assert cat.upgrade() == head()  # idempotent
        other = Catalog(catalog_url)  # a second process at the same catalog finds nothing to do
        assert other.upgrade() == head()
        other.dispose()
    finally:
        cat.dispose()


def test_v2_is_stamped_not_recreated(catalog_url: str) -> None:
    cat = make_legacy(catalog_url, 2)
    try:
        assert cat.revision() == "0002_t0_outputs"
        assert cat.upgrade() == head()  # would fail with "table t0_outputs exists" if not stamped first
        with cat.read() as conn:
            assert conn.execute(select(files.c.path)).scalar() == "a/DQM_V0001_R000000001.root"
    finally:
        cat.dispose()
