"""Beat on two hosts, one sender: real `celery -A t0dqm beat` processes against the test Redis and a
PostgreSQL catalog. Messages are taken from Redis and counted by their origin (the sending process);
staleness is set through configuration, and only end states are asserted, with generous deadlines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis as redislib
from sqlalchemy import select

from t0dqm import config
from t0dqm.beat_election import ElectedScheduler, current_leader
from t0dqm.catalog.db import Catalog, audit
from t0dqm.dev.hosts import on_host
from t0dqm.tasks import queued
from tests.conftest import make_settings
from tests.integration.test_heartbeat import wait_for
from tests.integration.workerproc import REPO, stop_group, t0dqm_env

TASK = "t0dqm.tasks.ops.reconcile"
QUEUE = "ops"  # the dev flavour's ops queue, where reconcile goes


@pytest.fixture
def cat(pg_url: str) -> Iterator[Catalog]:
    catalog = Catalog(pg_url)
    catalog.upgrade()
    yield catalog
    catalog.dispose()


def beat_env(tmp_path: Path, cat: Catalog, redis_url: str, stale_after: int, lease: int) -> dict[str, str]:
    return t0dqm_env(
        tmp_path / "root",
        T0DQM_CATALOG_URL=cat.url,
        T0DQM_BROKER_URL=redis_url,
        T0DQM_HEARTBEAT__INTERVAL="1",
        T0DQM_HEARTBEAT__STALE_AFTER=str(stale_after),
        T0DQM_HEARTBEAT__LEADER_LEASE=str(lease),
        T0DQM_BEAT__EVERY__RECONCILE="1",
    )


@contextmanager
def beat(host: str, env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    log = tmp_path / f"beat-{host}.log"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "t0dqm",
        "beat",
        "-l",
        "INFO",
        "-s",
        str(tmp_path / f"schedule-{host}"),
    ]
    with open(log, "w") as fh:
        proc = on_host(host, argv, env, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc, log
    finally:
        stop_group(proc)


class Consumer:
    """Takes the messages of TASK off the queue as a worker would (the (step, item) marker goes on
    receipt, so beat may send the next one) and counts them by the pid of the process that sent them."""

    def __init__(self, redis_url: str) -> None:
        self.client = redislib.Redis.from_url(redis_url)
        self.marker = queued.item_key(f"t0dqm:{config.get().flavour}:", TASK)
        self.counts: Counter[int] = Counter()

    def __call__(self) -> Counter[int]:
        while (raw := self.client.rpop(QUEUE)) is not None:
            headers = json.loads(raw)["headers"]
            if headers["task"] == TASK:
                self.counts[int(headers["origin"].split("@", 1)[0].removeprefix("gen"))] += 1
                self.client.delete(self.marker)
        return Counter(self.counts)


def leader_pid(cat: Catalog, host: str) -> int | None:
    owner = current_leader(cat, config.get()) or ""
    return int(owner.split(":")[1]) if owner.startswith(f"{host}:") else None


@pytest.fixture
def dev_settings(tmp_path: Path) -> Iterator[config.Settings]:
    settings = make_settings(tmp_path / "me")
    config.reset(settings)
    yield settings
    config.reset(None)


def test_only_the_leader_sends_and_the_standby_takes_over(
    cat: Catalog, redis_server, tmp_path: Path, dev_settings: config.Settings
) -> None:
    url = redis_server.url
    redislib.Redis.from_url(url).flushdb()
    senders = Consumer(url)
    env = beat_env(tmp_path, cat, url, stale_after=3, lease=5)
    with beat("beatA", env, tmp_path) as (proc_a, _):
        pid_a = wait_for(lambda: leader_pid(cat, "beatA"))
        assert pid_a, f"beatA never led; leader is {current_leader(cat, dev_settings)}"
        with beat("beatB", env, tmp_path) as (proc_b, log_b):
            assert wait_for(lambda: "beat: standby, leader is beatA:" in log_b.read_text())
            base = senders()[pid_a]
            assert wait_for(lambda: senders()[pid_a] >= base + 3)  # A goes on sending
            sent = senders()
            assert set(sent) == {pid_a}, sent  # the standby sent nothing

            os.kill(pid_a, signal.SIGKILL)  # the leader dies without a word
            proc_a.wait(60)
            pid_b = wait_for(lambda: leader_pid(cat, "beatB"))
            assert pid_b and pid_b != pid_a
            before_b = senders()
            assert wait_for(lambda: senders()[pid_b] >= 2)
            assert senders()[pid_a] == before_b[pid_a]  # nothing more from the dead leader
            assert proc_b.poll() is None
    with cat.read() as conn:
        [row] = (
            conn.execute(
                select(audit).where(audit.c.action == "lease-takeover", audit.c.path == "beat-leader:dev")
            )
            .mappings()
            .all()
        )
    assert row["detail"].startswith(f"from beatA:{pid_a}:") and f"to beatB:{pid_b}:" in row["detail"]


def test_a_clean_stop_hands_over_at_once(
    cat: Catalog, redis_server, tmp_path: Path, dev_settings: config.Settings
) -> None:
    """Heartbeats that go stale only after 10 minutes: B can lead within the deadline only because A
    gave the lease back when it stopped."""
    env = beat_env(tmp_path, cat, redis_server.url, stale_after=600, lease=600)
    with beat("beatA", env, tmp_path) as (proc_a, _):
        assert wait_for(lambda: leader_pid(cat, "beatA"))
        with beat("beatB", env, tmp_path) as (_, log_b):
            assert wait_for(lambda: "beat: standby, leader is beatA:" in log_b.read_text())
            os.killpg(proc_a.pid, signal.SIGTERM)
            proc_a.wait(60)
            assert wait_for(lambda: leader_pid(cat, "beatB"))
    with cat.read() as conn:  # a handover, not a takeover
        assert conn.execute(select(audit).where(audit.c.action == "lease-takeover")).all() == []


def test_new_leader_goes_on_from_the_recorded_runs(tmp_path: Path, dev_settings: config.Settings) -> None:
    from t0dqm import celery as t0celery
    from t0dqm.catalog.db import get_catalog, reset_catalogs

    t0celery.reload(dev_settings)
    try:
        cat = get_catalog(dev_settings.catalog_url)
        earlier = time.time() - 3600
        cat.record_beat_run("dev:health", earlier, "someone")
        cat.record_beat_run("dev:health", earlier + 60, "someone")
        cat.record_beat_run("online:health", earlier + 999, "another flavour")
        scheduler = ElectedScheduler(app=t0celery.app)
        scheduler.schedule["health"].last_run_at = datetime.fromtimestamp(earlier - 7200, tz=UTC)
        assert scheduler.elect() and scheduler.leading
        assert scheduler.schedule["health"].last_run_at == datetime.fromtimestamp(earlier + 60, tz=UTC)
        with scheduler._catalog_call():  # celery's SIGTERM handler calls close() in the middle of a renewal
            scheduler.close()
        assert current_leader(cat, dev_settings) == scheduler.owner  # no release under our own open lock
        scheduler.close()  # beat's shutdown calls it again once the renewal is unwound
        assert current_leader(cat, dev_settings) is None
    finally:
        reset_catalogs()
