"""Prometheus endpoint: scrape it over HTTP; the values match the catalog and Redis."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redislib
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from t0dqm import celery as t0celery
from t0dqm import config
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import archives, files, get_catalog, quarantine, reset_catalogs
from t0dqm.dev import services
from t0dqm.servers import metrics
from tests.conftest import make_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def msettings(tmp_path: Path, redis_server: services.Service) -> Iterator[config.Settings]:
    redislib.Redis.from_url(redis_server.url).flushall()
    settings = make_settings(
        tmp_path / "root", broker_url=redis_server.url, quota__online_data="1000", quota__offline_data="4000"
    )
    t0celery.reload(settings)
    yield settings
    reset_catalogs()
    config.reset(None)


def _file(i: int, cls: str, size: int, state: str, index_state: str, created: float) -> dict:
    return dict(
        path=f"d/f{i}.root",
        name=f"f{i}.root",
        cls=cls,
        run=100 + i,
        version=1,
        dataset="/A/B/C",
        size=size,
        adler32="00000001",
        mtime=created,
        zippat="z/Z_S%04d.zip",
        state=state,
        index_state=index_state,
        created_at=created,
        updated_at=created,
        attempts=0,
    )


def _archive(i: int, state: str, size: int, **kw) -> dict:
    now = time.time()
    return dict(
        path=f"z/Z{i}_S0001.zip",
        pattern=f"z/Z{i}_S%04d.zip",
        serial=1,
        state=state,
        size=size,
        nfiles=1,
        created_at=now,
        updated_at=now,
        **kw,
    )


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_scrape_matches_catalog_and_redis(msettings: config.Settings) -> None:
    settings = msettings
    catalog = get_catalog(settings.catalog_url)
    now = time.time()
    with catalog.begin() as conn:
        conn.execute(
            insert(files),
            [
                _file(1, "online_data", 100, "received", "pending", now - 7200),
                _file(2, "online_data", 250, "zipped", "indexed", now),
                _file(3, "offline_data", 1000, "zipped", "indexed", now),
                _file(4, "offline_data", 5000, "removed", "indexed", now),  # not present: no quota use
                _file(5, "offline_data", 7, "received", "failed", now),
            ],
        )
        for row in (
            _archive(1, "verified", 300),
            _archive(2, "on_tape", 700),
            _archive(3, "cleaned", 11),
            _archive(4, "copied", 5000, copied_at=now - 60),
            _archive(5, "frozen", 13, frozen_at=now - 120),
        ):
            conn.execute(insert(archives).values(**row))  # one by one: the rows have different columns
        conn.execute(
            insert(quarantine),
            [
                dict(
                    path="0001/x.root",
                    name="x.root",
                    step="receive",
                    reason="bad",
                    created_at=now,
                    resolved_at=None,
                ),
                dict(
                    path="0001/y.root",
                    name="y.root",
                    step="receive",
                    reason="bad",
                    created_at=now,
                    resolved_at=now,
                ),
            ],
        )
    raise_alarm(catalog, "a:1", "one", "critical")
    raise_alarm(catalog, "a:2", "two", "warning")
    raise_alarm(catalog, "a:3", "three", "warning")
    clear_alarm(catalog, "a:3")
    catalog.acquire_lease("heartbeat:beat", "beat", 3600)
    client = redislib.Redis.from_url(settings.broker_url)
    key = f"{t0celery.app.conf.t0dqm_prefix}metrics:tasks"
    client.hset(
        key,
        mapping={
            "t0dqm.tasks.archive.zip_file:ok": 5,
            "t0dqm.tasks.archive.zip_file:error": 2,
            "t0dqm.tasks.archive.zip_file:seconds": 1.5,
            "t0dqm.tasks.tape.stage:timeout": 1,
        },
    )
    for _ in range(3):
        client.lpush("archive", b"{}")

    server = metrics.serve(settings, "127.0.0.1", 0)
    try:
        got = _scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert v("t0dqm_broker_up") == 1 and v("t0dqm_catalog_up") == 1
    assert v("t0dqm_queue_depth", queue="archive") == 3 and v("t0dqm_queue_depth", queue="receive") == 0
    assert v("t0dqm_files", state="received") == 2 and v("t0dqm_files", state="zipped") == 2
    assert v("t0dqm_files", state="removed") == 1
    assert v("t0dqm_files_index", state="indexed") == 3 and v("t0dqm_files_index", state="pending") == 1
    assert v("t0dqm_files_index", state="failed") == 1 and v("t0dqm_files_index", state="partial") == 0
    assert v("t0dqm_archives", state="verified") == 1 and v("t0dqm_archives", state="open") == 0
    # safe states without require_tape: verified, on_tape, cleaned
    assert v("t0dqm_archived_bytes") == 300 + 700 + 11
    assert v("t0dqm_quota_used_bytes", **{"class": "online_data"}) == 350
    assert v("t0dqm_quota_used_bytes", **{"class": "offline_data"}) == 1007
    assert v("t0dqm_quota_used_bytes", **{"class": "relval_mc"}) == 0
    assert v("t0dqm_quota_bytes", **{"class": "online_data"}) == 1000
    assert v("t0dqm_quota_use_ratio", **{"class": "online_data"}) == pytest.approx(0.35)
    assert v("t0dqm_quota_use_ratio", **{"class": "offline_data"}) == pytest.approx(1007 / 4000)
    assert (
        v("t0dqm_alarms_active", severity="critical") == 1
        and v("t0dqm_alarms_active", severity="warning") == 1
    )
    assert v("t0dqm_alarms_active", severity="info") == 0
    assert v("t0dqm_quarantined") == 1
    assert v("t0dqm_tasks_total", task="t0dqm.tasks.archive.zip_file", outcome="ok") == 5
    assert v("t0dqm_tasks_total", task="t0dqm.tasks.archive.zip_file", outcome="error") == 2
    assert v("t0dqm_tasks_total", task="t0dqm.tasks.tape.stage", outcome="timeout") == 1
    assert v("t0dqm_task_seconds_total", task="t0dqm.tasks.archive.zip_file") == 1.5
    assert 0 <= v("t0dqm_beat_heartbeat_age_seconds") < 3600
    assert v("t0dqm_oldest_waiting_seconds", step="index") >= 7200  # f1 pending since 2 h
    assert v("t0dqm_oldest_waiting_seconds", step="verify") >= 60
    assert v("t0dqm_oldest_waiting_seconds", step="stage") >= 120
    assert v("t0dqm_oldest_waiting_seconds", step="receive") == 0


def test_broker_down_still_answers(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "root", broker_url=f"redis://127.0.0.1:{services.free_port()}/0")
    t0celery.reload(settings)
    try:
        registry = metrics.make_registry(settings)
        assert registry.get_sample_value("t0dqm_broker_up") == 0
        assert registry.get_sample_value("t0dqm_catalog_up") == 1
        assert registry.get_sample_value("t0dqm_files", {"state": "received"}) == 0
        assert registry.get_sample_value("t0dqm_beat_heartbeat_age_seconds") == -1
    finally:
        reset_catalogs()
        config.reset(None)


def test_cli_metrics_help_and_commands_registered() -> None:
    from t0dqm.cli import cli

    out = CliRunner().invoke(cli, ["metrics", "serve", "--help"])
    assert out.exit_code == 0 and "--port" in out.output
    for name in ("health", "metrics", "reprocess", "retry-bad"):
        assert name in cli.commands
