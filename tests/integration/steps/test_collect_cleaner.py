"""Producer disk cleaner on real folders with injected disk usage; alarms through the catalog."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import config, notify
from t0dqm.catalog.db import alarms as alarms_table
from t0dqm.catalog.db import audit, get_catalog
from t0dqm.policies.collect import DiskUsage
from t0dqm.steps import collect as collector


@pytest.fixture
def producer(settings: config.Settings, tmp_path: Path) -> Iterator[collector.Producer]:
    collect_dir = tmp_path / "producer" / "collect"
    collect_dir.mkdir(parents=True)
    current = config.Settings(
        data=dict(settings.data, producers=[{"host": "prod1", "dir": str(collect_dir)}])
    )
    config.reset(current)
    [p] = collector.producers(current, "prod1")
    yield p
    config.reset(settings)


def done_file(p: collector.Producer, name: str, size: int) -> Path:
    run = name.split("_R", 1)[1][:9]
    path = p.done / run[0:3] / run[3:6] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def fill_done(p: collector.Producer) -> dict[str, Path]:
    return {
        "r100": done_file(p, "DQM_V0001_Ecal_R000000100.root", 300),
        "r100t": done_file(p, "DQM_V0001_Ecal_R000000100_T00000001.root_d", 100),
        "r200": done_file(p, "DQM_V0001_Hcal_R000200000.root", 300),
        "r300": done_file(p, "DQM_V0001_Ecal_R000300000.root", 300),
    }


def alarm_row(key_prefix: str):
    with get_catalog(config.get().catalog_url).read() as conn:
        return conn.execute(select(alarms_table).where(alarms_table.c.key.like(key_prefix + "%"))).first()


def test_below_high_mark_nothing_happens(producer: collector.Producer) -> None:
    files = fill_done(producer)
    (producer.dir / "junk.txt").write_text("x")
    report = collector.clean_once(producer, config.get(), usage=DiskUsage(total=10_000, used=8_999))
    assert not report.act and report.deleted == []
    assert all(p.exists() for p in files.values()) and (producer.dir / "junk.txt").exists()


def test_frees_done_files_in_run_order_down_to_half(producer: collector.Producer) -> None:
    files = fill_done(producer)
    # 2000 total, 1800 used (90 %): must free 800 -> runs 100 (300 + 100), 200 (300), 300 (300) = 1000
    report = collector.clean_once(producer, config.get(), usage=DiskUsage(total=2000, used=1800))
    assert report.act and report.to_free == 800 and not report.short
    assert report.deleted == [str(files["r100"]), str(files["r100t"]), str(files["r200"]), str(files["r300"])]
    # full disk of 1000: free 500 -> run 100 (400) is not enough, run 200 too (700); run 300 stays
    files = fill_done(producer)
    report = collector.clean_once(producer, config.get(), usage=DiskUsage(total=1000, used=1000))
    assert [Path(p).name for p in report.deleted] == [
        files["r100"].name,
        files["r100t"].name,
        files["r200"].name,
    ]
    assert files["r300"].exists()
    files = fill_done(producer)
    report = collector.clean_once(producer, config.get(), usage=DiskUsage(total=1600, used=1450))
    assert report.to_free == 650 and report.freed == 700
    assert not files["r100"].exists() and not files["r200"].exists() and files["r300"].exists()
    assert not (producer.done / "000" / "000").exists()  # emptied folders removed
    with get_catalog(config.get().catalog_url).read() as conn:
        rules = set(conn.execute(select(audit.c.rule).where(audit.c.action == "delete")).scalars())
    assert rules == {"producer-cleaner"}
    assert alarm_row("producer-disk:prod1") is None


def test_cleans_collect_folder_but_keeps_pending_and_open_files(producer: collector.Producer) -> None:
    d = producer.dir
    final = d / "DQM_V0001_Ecal_R000000100.root"
    snap = d / "DQM_V0001_Ecal_R000000100_T00000001.root"
    for path in (final, snap, d / "stray.log", d / "held.dat"):
        path.write_bytes(b"x")
    for i, name in enumerate(("a.tmp", "b.tmp", "c.tmp")):
        (d / name).write_bytes(b"x")
        os.utime(d / name, (1000 + i, 1000 + i))
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "sub" / "deeper" / "f").write_bytes(b"x")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ("import sys, time\nf = open(sys.argv[1])\nprint('ready', flush=True)\ntime.sleep(600)\n"),
            str(d / "held.dat"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        collector.clean_once(producer, config.get(), usage=DiskUsage(total=100, used=95))
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in d.iterdir()) == sorted([final.name, snap.name, "held.dat", "c.tmp"])


def test_alarm_when_done_cannot_free_enough_rate_limited(producer: collector.Producer) -> None:
    fill_done(producer)
    settings = config.get()
    report = collector.clean_once(producer, settings, usage=DiskUsage(total=10_000, used=9_500))
    assert report.short and report.freed == 1000
    row = alarm_row("producer-disk:prod1")
    assert row is not None and row.active and row.severity == "critical" and row.count == 1
    catalog = get_catalog(settings.catalog_url)
    sent: list[str] = []

    class Capture:
        name = "capture"

        def send(self, alarm: notify.Alarm) -> None:
            sent.append(alarm.key)

    assert notify.dispatch_pending(catalog, settings, notifiers=[Capture()], now=1e9) == 1
    collector.clean_once(producer, settings, usage=DiskUsage(total=10_000, used=9_500))  # still short
    assert alarm_row("producer-disk:prod1").count == 2
    assert (
        notify.dispatch_pending(catalog, settings, notifiers=[Capture()], now=1e9 + 60) == 0
    )  # rate-limited
    assert len(sent) == 1
    # disk back to normal: the alarm clears
    collector.clean_once(producer, settings, usage=DiskUsage(total=10_000, used=1_000))
    assert not alarm_row("producer-disk:prod1").active


def test_clean_task_uses_real_statvfs(producer: collector.Producer) -> None:
    from t0dqm.tasks import collect as tasks

    result = tasks.clean_producer.apply(args=("prod1",)).get()
    assert 0.0 < result[str(producer.dir)]["usage"] <= 1.0
