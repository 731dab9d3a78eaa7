"""Storage Manager cleanup task on a real small directory, occupancy injected (and read with statvfs):
occupancy mode and age mode through the guarded deleter, the alarm for unchecked files, beat entries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.alarms import active_alarms
from t0dqm.catalog.db import audit, get_catalog, reset_catalogs
from t0dqm.steps import sm
from tests.conftest import make_settings

NOW = 1_700_000_000.0
HOUR = 3600
DAY = 86400
# name: (run, age, checked, repacked)
FILES = {
    "repacked": (100, HOUR, True, True),
    "old-checked": (100, 4 * DAY, True, False),
    "young-checked": (101, 2 * DAY, True, False),
    "unchecked": (102, 10 * DAY, False, False),
    "unchecked-young": (103, 1 * DAY, False, False),
}


@pytest.fixture
def area(tmp_path: Path) -> Iterator[tuple[config.Settings, dict[str, Path]]]:
    root = tmp_path / "root"
    p5 = root / "dev" / "p5" / "store" / "t0streamer"
    p5.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    paths: dict[str, Path] = {}
    lines = []
    for name, (run, age, checked, repacked) in FILES.items():
        p = p5 / f"run{run}_{name}.dat"
        p.write_bytes(b"s" * (1000 + run))
        paths[name] = p
        lines.append(
            {
                "path": str(p),
                "run": run,
                "size": 1000 + run,
                "mtime": NOW - age,
                "checked": checked,
                "repacked": repacked,
            }
        )
    stray = outside / "run104_stray.dat"
    stray.write_bytes(b"s" * 10)
    paths["stray"] = stray
    lines.append(
        {"path": str(stray), "run": 104, "size": 10, "mtime": NOW, "checked": True, "repacked": True}
    )
    listing = tmp_path / "listing.jsonl"
    listing.write_text("".join(json.dumps(line) + "\n" for line in lines))
    settings = make_settings(
        root,
        storage_manager__enabled="true",
        storage_manager__listing=str(listing),
        storage_manager__area=str(p5),
        retention__enabled="true",
    )
    config.reset(settings)
    yield settings, paths
    reset_catalogs()
    config.reset(None)


def path_audit(settings: config.Settings) -> list[tuple[str, str, str, int]]:
    with get_catalog(settings.catalog_url).read() as conn:
        return sorted(
            (r.action, Path(r.path).stem.split("_", 1)[1], r.rule, r.size)
            for r in conn.execute(
                select(audit.c.action, audit.c.path, audit.c.rule, audit.c.size).where(
                    audit.c.entity == "path"
                )
            )
        )


def stems(paths: list[str]) -> list[str]:
    return sorted(Path(p).stem.split("_", 1)[1] for p in paths)


def test_sm_cleanup_occupancy_then_age(area: tuple[config.Settings, dict[str, Path]]) -> None:
    from t0dqm.tasks.sm import sm_cleanup

    settings, paths = area
    kw = {"now": NOW, "occupancy": 0.45}

    # occupancy mode, dry-run: audit says what would go, nothing goes
    res = sm_cleanup.apply(kwargs={**kw, "mode": "occupancy", "dry_run": True}).get()
    assert [(Path(d["path"]).stem.split("_", 1)[1], d["rule"], d["unchecked"]) for d in res["delete"]] == [
        ("stray", "repacked", False),
        ("old-checked", "occupancy", False),
        ("repacked", "repacked", False),
    ]
    assert stems(res["execution"]["deleted"]) == ["old-checked", "repacked"]
    assert len(res["execution"]["refused"]) == 1 and "stray" in res["execution"]["refused"][0]
    assert res["alarm"] is False and all(p.exists() for p in paths.values())
    assert path_audit(settings) == [
        ("dry-run-delete", "old-checked", "sm-occupancy", 1100),
        ("dry-run-delete", "repacked", "sm-repacked", 1100),
    ]

    # occupancy mode, executed: the audit matches what disappeared; unchecked files untouched
    res = sm_cleanup.apply(kwargs={**kw, "mode": "occupancy", "dry_run": False}).get()
    gone = {n for n, p in paths.items() if not p.exists()}
    assert gone == {"repacked", "old-checked"} and res["execution"]["deleted_bytes"] == 2200
    assert {r[1] for r in path_audit(settings) if r[0] == "delete"} == gone
    assert active_alarms(get_catalog(settings.catalog_url)) == []

    # age mode at 45 %: runs older than 7 days go regardless of status; the unchecked one raises the alarm
    res = sm_cleanup.apply(kwargs={**kw, "mode": "age", "dry_run": False}).get()
    assert [(Path(d["path"]).stem.split("_", 1)[1], d["rule"], d["unchecked"]) for d in res["delete"]] == [
        ("unchecked", "run-age", True)
    ]
    assert res["alarm"] is True and not paths["unchecked"].exists() and paths["unchecked-young"].exists()
    alarms = active_alarms(get_catalog(settings.catalog_url))
    assert [(a["key"], a["severity"]) for a in alarms] == [(sm.ALARM_KEY, "critical")]
    assert "1 files not yet checked" in alarms[0]["message"]
    assert {r[1] for r in path_audit(settings) if r[0] == "delete"} == {
        "repacked",
        "old-checked",
        "unchecked",
    }
    assert ("delete", "unchecked", "sm-run-age", 1102) in path_audit(settings)

    # age mode below 30 %: 30 days, nothing left that old; files already gone are audited as missing
    res = sm_cleanup.apply(kwargs={"now": NOW, "occupancy": 0.1, "mode": "age", "dry_run": False}).get()
    assert res["delete"] == [] and res["alarm"] is False


def test_sm_cleanup_statvfs_refusals_and_beat(area: tuple[config.Settings, dict[str, Path]]) -> None:
    import beat_schedule
    from t0dqm.tasks.sm import sm_cleanup

    settings, paths = area
    # occupancy read from the area with statvfs when not given
    res = sm_cleanup.apply(kwargs={"now": NOW, "mode": "occupancy", "dry_run": True}).get()
    assert 0.0 <= res["occupancy"] <= 1.0
    assert abs(res["occupancy"] - sm.occupancy(settings["storage_manager"]["area"])) < 0.05
    assert all(p.exists() for p in paths.values())
    assert sm_cleanup.apply(kwargs={"mode": "bogus"}).get()["refused"].startswith("mode must be")

    # a bad listing refuses everything
    Path(settings["storage_manager"]["listing"]).write_text('{"path": "/x", "run": "notanumber"}\n')
    res = sm_cleanup.apply(
        kwargs={"now": NOW, "occupancy": 0.95, "mode": "occupancy", "dry_run": False}
    ).get()
    assert "bad listing line" in res["refused"] and all(p.exists() for p in paths.values())

    schedule = beat_schedule.build(settings)
    assert schedule["sm-cleanup-occupancy"]["schedule"] == 900.0
    assert schedule["sm-cleanup-occupancy"]["kwargs"] == {"mode": "occupancy"}
    assert schedule["sm-cleanup-age"]["kwargs"] == {"mode": "age"}
    assert sorted(schedule["sm-cleanup-age"]["schedule"].hour) == [3, 15]
    assert schedule["t0-retention"]["task"] == "t0dqm.tasks.streamer.retention_cleanup"
    off = beat_schedule.build(make_settings(settings.root))
    assert not {"sm-cleanup-age", "sm-cleanup-occupancy", "t0-retention"} & set(off)


def test_sm_cleanup_disabled_or_unconfigured(settings: config.Settings) -> None:
    from t0dqm.tasks.sm import sm_cleanup

    assert sm_cleanup.apply().get() == {"skipped": "storage_manager.enabled is false"}
    assert sm_cleanup.apply(kwargs={"force": True}).get() == {"refused": "storage_manager.listing is not set"}
