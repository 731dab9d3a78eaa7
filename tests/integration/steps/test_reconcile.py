"""Redis is only the conveyor: flushing it while work is in flight delays work, never loses it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog
from t0dqm.celery import app, queue_name
from t0dqm.dev import simulate


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"reconcile__stale_seconds": "2", "reconcile__lease_seconds": "30"}


def test_flushing_redis_mid_flight_loses_nothing(
    celery_stack: config.Settings, redis_server, tmp_path: Path
) -> None:
    settings = celery_stack
    n = 30
    simulate.simulate(tmp_path / "producer", n, seed=5, n_hists=30, dropbox=settings.dropbox)
    cat = get_catalog(settings.catalog_url)
    client = redis.Redis.from_url(redis_server.url)

    def counts() -> tuple[int, int]:
        with cat.read() as conn:
            received = conn.execute(select(func.count()).select_from(files)).scalar_one()
            indexed = conn.execute(
                select(func.count()).select_from(files).where(files.c.index_state == "indexed")
            ).scalar_one()
        return received, indexed

    # Hold the index step deterministically: the worker stops consuming the merge queue, every file is
    # received into a partial index (the merge request waits in Redis), then Redis is flushed with that
    # work in flight.
    index_queue = queue_name("index-merge", settings)
    assert app.control.cancel_consumer(index_queue, reply=True, timeout=10)
    app.send_task("t0dqm.tasks.receive.scan")
    deadline = time.monotonic() + 120
    while counts()[0] < n and time.monotonic() < deadline:
        time.sleep(0.05)
    flushed_at = counts()
    assert flushed_at == (n, 0), flushed_at
    assert client.llen(index_queue) > 0, "no merge request was waiting; the flush proves nothing"
    client.flushall()  # every queued message, result and marker is gone
    assert app.control.add_consumer(index_queue, reply=True, timeout=10)

    deadline = time.monotonic() + 180
    while counts() != (n, n) and time.monotonic() < deadline:
        app.send_task("t0dqm.tasks.receive.scan")  # what beat does
        app.send_task("t0dqm.tasks.ops.reconcile")
        time.sleep(1.0)
    assert counts() == (n, n), f"after the flush at {flushed_at}: {counts()}"
    with cat.read() as conn:
        paths = [r[0] for r in conn.execute(select(files.c.path))]
    assert len(paths) == len(set(paths)) == n  # filed exactly once each
