"""Two index mergers on two hosts: the merge lease of one killed with kill -9 in its own UTS and pid
namespaces (another machine, as far as /proc can tell) is taken over once its heartbeat is stale, and
the other merges. PostgreSQL catalog; staleness set by configuration; end states only."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.db import Catalog, audit, get_catalog, reset_catalogs
from t0dqm.dev.hosts import can_rename, on_host
from t0dqm.steps import index as dqmindex
from tests.conftest import make_settings
from tests.integration.steps.test_index import MERGED, ONLINE, filed
from tests.integration.test_heartbeat import wait_for
from tests.integration.workerproc import REPO, t0dqm_env

HOLDER = r"""
import json, sys
from t0dqm import config
from t0dqm.steps import index
from t0dqm.catalog.db import get_catalog
from t0dqm.identity import process_identity
settings = config.get()
with index.merge_lease(settings, get_catalog(settings.catalog_url)):
    print(json.dumps({"identity": process_identity()}), flush=True)
    sys.stdin.read()
"""

FAST = {"heartbeat__interval": "1", "heartbeat__stale_after": "3"}


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Iterator[config.Settings]:
    cat = Catalog(pg_url)
    cat.upgrade()
    cat.dispose()
    settings = make_settings(tmp_path / "root", catalog_url=pg_url, **FAST)
    config.reset(settings)
    yield settings
    reset_catalogs()
    config.reset(None)


def test_merge_lease_of_a_dead_host_is_taken_over(pg_settings: config.Settings, tmp_path: Path) -> None:
    settings, cat = pg_settings, get_catalog(pg_settings.catalog_url)
    ids = [filed(settings, n) for n in (ONLINE, MERGED)]
    for file_id in ids:
        assert dqmindex.import_one(file_id, settings, cat) == "partial"
    env = t0dqm_env(
        settings.root,
        T0DQM_CATALOG_URL=settings.catalog_url,
        **{f"T0DQM_{k.upper()}": v for k, v in FAST.items()},
    )
    holder = on_host(
        "mergeA",
        [sys.executable, "-c", HOLDER],
        env,
        own_pids=True,
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        identity = json.loads(holder.stdout.readline())["identity"]
        assert identity.startswith("mergeA:")
        with pytest.raises(dqmindex.MergeBusy):  # a live merger elsewhere: this one waits its turn
            dqmindex.merge_all(settings, cat)
    finally:
        holder.kill()  # kill -9; its own pid namespace dies with it
        holder.wait(60)

    def merged() -> dict[str, int] | None:
        try:
            return dqmindex.merge_all(settings, cat)
        except dqmindex.MergeBusy:
            return None

    counts = wait_for(merged)
    assert counts is not None and counts["indexed"] == 2
    with cat.read() as conn:
        [row] = conn.execute(select(audit).where(audit.c.action == "lease-takeover")).mappings().all()
    assert row["path"] == dqmindex.merge_lease_name(settings)
    assert row["detail"].startswith(f"from {identity}:")
    # in its own pid namespace only the heartbeat can tell; as a plain process here, /proc tells first
    assert ("heartbeat stale" if can_rename() else "process gone") in row["detail"]
