"""Catalog schema by alembic: concurrent `t0dqm db upgrade`, tables in step with the revisions, the
embedded SQLite creating its own schema, and workers and beat refusing another revision."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from t0dqm.catalog.db import Catalog, get_catalog, metadata, reset_catalogs
from t0dqm.catalog.schema import SchemaMismatch, alembic_config, check, ensure, head
from tests.integration.workerproc import REPO, t0dqm_env


def stamp_to(url: str, revision: str) -> None:
    """Migrate a fresh catalog only as far as ``revision`` (an older t0dqm's schema)."""
    cat = Catalog(url)
    with cat.engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    cat.dispose()


def test_six_concurrent_upgrades_on_empty_postgresql(pg_url: str, tmp_path: Path) -> None:
    env = t0dqm_env(tmp_path / "root", T0DQM_CATALOG_URL=pg_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "t0dqm", "db", "upgrade"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(6)
    ]
    outputs = [(p.wait(timeout=300), p.stdout.read().decode()) for p in procs if p.stdout]
    assert [rc for rc, _ in outputs] == [0] * 6, outputs
    assert all(f"schema revision {head()}" in out for _, out in outputs), outputs
    cat = Catalog(pg_url)
    assert cat.revision() == head()
    cat.dispose()


def test_tables_match_the_revisions(catalog_url: str) -> None:
    """The Table definitions of t0dqm.catalog.db and the schema the revisions build do not differ."""
    cat = Catalog(catalog_url)
    cat.upgrade()
    with cat.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    cat.dispose()
    assert diff == []


def test_sqlite_creates_its_schema_by_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'catalog.sqlite'}"
    try:
        assert get_catalog(url).revision() == head()
    finally:
        reset_catalogs()


def test_sqlite_migrates_an_older_revision_by_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    stamp_to(url, "0001_baseline")
    cat = Catalog(url)
    assert ensure(cat.engine, cat.read_engine) == head()
    assert cat.revision() == head()
    cat.dispose()


def test_postgresql_is_checked_not_migrated(pg_url: str) -> None:
    cat = Catalog(pg_url)
    with pytest.raises(SchemaMismatch, match=rf"revision none \(empty catalog\), this t0dqm needs {head()}"):
        get_catalog(pg_url)
    assert cat.revision() is None  # nothing was created behind the operator's back
    stamp_to(pg_url, "0001_baseline")
    with pytest.raises(
        SchemaMismatch, match=rf"revision 0001_baseline, this t0dqm needs {head()}.*db upgrade"
    ):
        check(cat.engine)
    cat.upgrade()
    assert get_catalog(pg_url).revision() == head()
    with cat.engine.begin() as conn:  # as a newer t0dqm would leave it
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    reset_catalogs()
    with pytest.raises(SchemaMismatch, match=r"9999_from_the_future, unknown to this t0dqm"):
        get_catalog(pg_url)
    with pytest.raises(SchemaMismatch, match=r"9999_from_the_future"):
        cat.upgrade()  # an older t0dqm does not touch a newer catalog
    cat.dispose()


@pytest.mark.parametrize("kind", ["worker", "beat"])
def test_worker_and_beat_refuse_another_revision(
    kind: str, pg_url: str, redis_server, tmp_path: Path
) -> None:
    stamp_to(pg_url, "0001_baseline")
    args = {
        "worker": ["worker", "-Q", "dev.ops", "-P", "solo", "--without-gossip", "--without-mingle"],
        "beat": ["beat", "-s", str(tmp_path / "beat-schedule")],
    }[kind]
    env = t0dqm_env(tmp_path / "root", T0DQM_CATALOG_URL=pg_url, T0DQM_BROKER_URL=redis_server.url)
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "t0dqm", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "refusing to start" in out and "0001_baseline" in out and head() in out, out
