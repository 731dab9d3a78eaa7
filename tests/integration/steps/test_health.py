"""Health check against a real Redis and real worker subprocesses: a worker that is alive but not
consuming (SIGSTOP) raises exactly one alarm however often the check runs; SIGCONT clears it."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redislib
from click.testing import CliRunner
from sqlalchemy import select

from t0dqm import celery as t0celery
from t0dqm import config
from t0dqm.catalog.db import Catalog, alarms, files, get_catalog, reset_catalogs
from t0dqm.dev import services
from t0dqm.dev.stack import LocalStack
from t0dqm.steps import health as steps_health
from t0dqm.tasks import health as th
from tests.conftest import make_settings

pytestmark = pytest.mark.integration

HEALTH_ENV = {"health__canary_timeout": "6", "health__inspect_timeout": "2"}


def _env(settings: config.Settings, broker: str) -> dict[str, str]:
    return {
        "T0DQM_ROOT": str(settings.root),
        "T0DQM_FLAVOUR": settings.flavour,
        "T0DQM_BROKER_URL": broker,
        **{f"T0DQM_{k.upper()}": v for k, v in HEALTH_ENV.items()},
    }


@pytest.fixture
def two_workers(
    tmp_path: Path, redis_server: services.Service
) -> Iterator[tuple[LocalStack, config.Settings]]:
    """Worker 'main' consumes every queue but archive; worker 'arch' consumes archive only."""
    redislib.Redis.from_url(redis_server.url).flushall()
    settings = make_settings(tmp_path / "root", broker_url=redis_server.url, **HEALTH_ENV)
    settings.flavour_root.mkdir(parents=True, exist_ok=True)
    t0celery.reload(settings)
    Catalog(settings.catalog_url).upgrade()
    stack = LocalStack(settings, extra_env=_env(settings, redis_server.url))
    stack.start_broker()
    queues = t0celery.all_queues(settings)
    stack.start_worker("main", 2, [q for q in queues if q != "archive"])
    stack.start_worker("arch", 1, ["archive"])
    try:
        stack.wait_ready(60)
        for q in queues:  # every queue answers once before the test starts (workers fully up)
            t0celery.app.signature("t0dqm.tasks.ops.noop", args=("warm",)).apply_async(queue=q).get(
                timeout=60
            )
        yield stack, settings
    finally:
        for child in stack.children:  # never leave a stopped group behind
            try:
                os.killpg(child.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        stack.stop()
        reset_catalogs()
        config.reset(None)


def _active(catalog: Catalog) -> dict[str, int]:
    with catalog.read() as conn:
        return {
            r.key: r.count
            for r in conn.execute(select(alarms.c.key, alarms.c.count).where(alarms.c.active.is_(True)))
        }


def _beat(catalog: Catalog) -> None:
    catalog.acquire_lease(steps_health.BEAT_LEASE, "beat", 3600)


def test_stopped_worker_raises_one_alarm_and_sigcont_clears_it(two_workers) -> None:
    stack, settings = two_workers
    catalog = get_catalog(settings.catalog_url)
    _beat(catalog)

    healthy = th.run_check(settings, catalog, notify=False)
    assert healthy.healthy, healthy.raised
    assert all(q["canary"] == "ok" for q in healthy.queues.values()), healthy.queues
    assert [w.split("@")[0] for w in healthy.queues["archive"]["consumers"]] == ["arch"]

    arch = next(c for c in stack.children if c.name == "arch")
    os.killpg(arch.proc.pid, signal.SIGSTOP)
    try:
        counts = []
        for _ in range(3):  # from this process (cron / external monitor)
            report = th.run_check(settings, catalog, notify=False)
            assert not report.healthy
            assert [a["key"] for a in report.raised] == ["health:queue:archive"]
            assert report.queues["archive"]["canary"] == "unanswered"
            assert report.queues["archive"]["consumers"] == []
            active = _active(catalog)
            assert list(active) == ["health:queue:archive"]
            counts.append(active["health:queue:archive"])
        assert counts == [1, 2, 3]  # one alarm row whose count grows: no flood

        # the beat's way: the check task on the ops worker (it need not canary its own queue)
        result = t0celery.app.signature("t0dqm.tasks.health.check").apply_async()
        task_report = result.get(timeout=120)
        assert [a["key"] for a in task_report["raised"]] == ["health:queue:archive"]
        assert task_report["queues"]["ops"]["canary"] == "self"
        assert list(_active(catalog)) == ["health:queue:archive"]

        # the CLI from cron: exit 1 while unhealthy
        runner = CliRunner()
        env = _env(settings, settings.broker_url)
        out = runner.invoke(
            __import__("t0dqm.cli", fromlist=["cli"]).cli, ["health", "check", "--no-notify"], env=env
        )
        assert out.exit_code == 1, out.output
        assert "health:queue:archive" in out.output and "UNHEALTHY" in out.output
        assert list(_active(get_catalog(settings.catalog_url))) == ["health:queue:archive"]
    finally:
        os.killpg(arch.proc.pid, signal.SIGCONT)

    report = th.run_check(settings, catalog, notify=False)
    assert report.healthy, report.raised
    assert report.cleared == ["health:queue:archive"]
    assert _active(catalog) == {}
    out = CliRunner().invoke(
        __import__("t0dqm.cli", fromlist=["cli"]).cli,
        ["health", "check", "--json"],
        env=_env(settings, settings.broker_url),
    )
    assert out.exit_code == 0, out.output


def test_beat_heartbeat_latency_and_notification(two_workers) -> None:
    _stack, settings = two_workers
    catalog = get_catalog(settings.catalog_url)
    report = th.run_check(settings, catalog, notify=False)
    assert [a["key"] for a in report.raised] == ["health:beat"], report.as_dict()

    # the real heartbeat task, through the ops worker
    t0celery.app.signature("t0dqm.tasks.ops.beat_heartbeat").apply_async().get(timeout=60)
    old = time.time() - 6 * 3600
    with catalog.begin() as conn:
        conn.execute(
            files.insert().values(
                path="OnlineData/x/DQM_V0001_R000123456.root",
                name="DQM_V0001_R000123456.root",
                cls="online_data",
                run=123456,
                version=1,
                dataset="/Global/Online/ALL",
                size=10,
                adler32="00000001",
                mtime=old,
                zippat="OnlineData/x/DQM_Online_R0001234xx_S%04d.zip",
                state="received",
                index_state="indexed",
                created_at=old,
                updated_at=old,
                attempts=0,
            )
        )
    sent: list[str] = []
    from t0dqm import notify

    class Capture:
        name = "capture"

        def send(self, alarm: notify.Alarm) -> None:
            sent.append(alarm.key)

    report = th.run_check(settings, catalog, notify=False)
    assert [a["key"] for a in report.raised] == ["health:latency:zip"]
    assert "DQM_V0001_R000123456.root" in report.raised[0]["message"]
    assert report.cleared == ["health:beat"]
    assert notify.dispatch_pending(catalog, settings, [Capture()]) == 1
    assert notify.dispatch_pending(catalog, settings, [Capture()]) == 0  # rate-limited per key
    assert sent == ["health:latency:zip"]

    # the notify task runs on the ops worker and finds nothing due
    assert t0celery.app.signature("t0dqm.tasks.health.notify").apply_async().get(timeout=60) == 0


def test_broker_down_is_one_alarm(tmp_path: Path) -> None:
    port = services.free_port()
    settings = make_settings(tmp_path / "root", broker_url=f"redis://127.0.0.1:{port}/0", **HEALTH_ENV)
    t0celery.reload(settings)
    try:
        catalog = get_catalog(settings.catalog_url)
        _beat(catalog)
        for _ in range(2):
            report = th.run_check(settings, catalog, notify=False)
            assert [a["key"] for a in report.raised] == ["health:broker"]
            assert all(q["canary"] == "unknown" for q in report.queues.values())
        assert _active(catalog) == {"health:broker": 2}
    finally:
        reset_catalogs()
        config.reset(None)
