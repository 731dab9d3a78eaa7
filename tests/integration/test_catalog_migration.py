"""Schema migrations: a version-1 catalog (no t0_outputs, no running counts) is upgraded in place; SQLite and
PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import insert, inspect, select

from t0dqm import counts
from t0dqm.catalog import SCHEMA_VERSION, Catalog, count_deltas, files, meta, metadata, t0_outputs
from t0dqm.catalog import counts as counts_table


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("pg_url")


def make_v1(url: str) -> Catalog:
    cat = Catalog(url)
    v1_tables = [t for t in metadata.sorted_tables if t not in (t0_outputs, counts_table, count_deltas)]
    metadata.create_all(cat.engine, tables=v1_tables)
    now = time.time()
    with cat.begin() as conn:
        conn.execute(insert(meta).values(key="schema_version", value="1"))
        conn.execute(insert(files).values(
            path="a/DQM_V0001_R000000001.root", name="DQM_V0001_R000000001.root", cls="online_data", run=1,
            version=1, dataset="/A/B/C", size=1, adler32="00000001", mtime=now, state="received",
            index_state="pending", created_at=now, updated_at=now, attempts=0))
    return cat


def test_upgrade_v1_to_current(catalog_url: str) -> None:
    assert SCHEMA_VERSION == 3
    cat = make_v1(catalog_url)
    try:
        assert cat.schema_version() == 1
        assert "t0_outputs" not in inspect(cat.engine).get_table_names()
        assert cat.upgrade() == 3
        assert cat.schema_version() == 3
        assert {"t0_outputs", "counts", "count_deltas"} <= set(inspect(cat.engine).get_table_names())
        with cat.read() as conn:  # schema 3 counted the existing file and left nothing on the version worklist
            totals = counts.totals(conn)
            assert counts.by(totals, "state", "file") == {"received": 1}
            assert conn.execute(select(files.c.versions_checked_at)).scalar() is not None
        now = time.time()
        with cat.begin() as conn:
            conn.execute(insert(t0_outputs).values(path="/x/y.root", size=3, created_at=now, updated_at=now))
        with cat.read() as conn:
            assert conn.execute(select(files.c.path)).scalar() == "a/DQM_V0001_R000000001.root"  # data kept
            row = conn.execute(select(t0_outputs)).mappings().one()
        assert (row["state"], row["needed_by"], row["endpoints_done"]) == ("present", 0, "[]")
        assert cat.upgrade() == 3  # idempotent
        # a second catalog object still believing v1 state does not re-run the migration
        other = Catalog(catalog_url)
        assert other.upgrade() == 3
        other.dispose()
    finally:
        cat.dispose()
