"""Version and quota control with real files: only archived ROOT files go, .dqminfo and rows stay, alarms."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import insert, select, update

from t0dqm import config
from t0dqm.catalog.alarms import active_alarms, clear_alarm, raise_alarm
from t0dqm.catalog.db import alarms, archives, audit, files, get_catalog
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.steps import cleanup
from t0dqm.steps.receive import receive_one
from tests.conftest import make_settings

OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"


def filed(settings: config.Settings, name: str, mtime: float | None = None) -> tuple[int, Path]:
    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    run, subsystems, strict = simulate.content_for(name)
    simulate.write_dqm_file(src / name, run, subsystems, n_hists=10, strict=strict)
    if mtime is not None:
        os.utime(src / name, (mtime, mtime))
    out = receive_one(dropbox.upload(src / name, settings.dropbox))
    assert out.status == "filed"
    return out.file_id, settings.repository / out.target


def archive(file_id: int, state: str) -> None:
    now = time.time()
    with get_catalog().begin() as conn:
        aid = conn.execute(
            insert(archives).values(
                path=f"z/{file_id}.zip",
                pattern=f"z/{file_id}_S%04d.zip",
                serial=1,
                state=state,
                created_at=now,
                updated_at=now,
            )
        ).inserted_primary_key[0]
        conn.execute(update(files).where(files.c.id == file_id).values(archive_id=aid, state="zipped"))


def file_state(file_id: int) -> str:
    with get_catalog().read() as conn:
        return conn.execute(select(files.c.state).where(files.c.id == file_id)).scalar()


def test_version_control_deletes_only_archived_old_versions(settings: config.Settings) -> None:
    v1, p1 = filed(settings, OFFLINE)
    v2, p2 = filed(settings, OFFLINE)
    v3, p3 = filed(settings, OFFLINE)
    archive(v1, "verified")
    archive(v2, "copied")  # at the endpoint but not verified: not safe yet
    removals = cleanup.version_control(settings, get_catalog())
    assert [(r.file_id, r.outcome) for r in removals] == [(v1, "deleted")]
    assert not p1.exists() and Path(str(p1) + ".dqminfo").exists()
    assert p2.exists() and p3.exists()
    assert (file_state(v1), file_state(v2), file_state(v3)) == ("removed", "zipped", "received")
    with get_catalog().read() as conn:
        rows = conn.execute(select(audit).where(audit.c.action == "delete")).mappings().all()
    assert len(rows) == 1 and rows[0]["rule"] == "version-control" and rows[0]["path"] == str(p1)
    assert cleanup.version_control(settings, get_catalog()) == []  # idempotent
    archive_state = "verified"
    with get_catalog().begin() as conn:
        conn.execute(update(archives).where(archives.c.path == f"z/{v2}.zip").values(state=archive_state))
    assert [r.file_id for r in cleanup.version_control(settings, get_catalog())] == [v2]
    assert p3.exists()  # the newest always stays, archived or not


def test_version_control_dry_run(settings: config.Settings) -> None:
    v1, p1 = filed(settings, OFFLINE)
    filed(settings, OFFLINE)
    archive(v1, "verified")
    removals = cleanup.version_control(settings, get_catalog(), dry_run=True)
    assert [r.outcome for r in removals] == ["dry-run"]
    assert p1.exists() and file_state(v1) == "zipped"


def test_guard_refuses_even_if_asked(settings: config.Settings) -> None:
    v1, p1 = filed(settings, OFFLINE)
    out = cleanup._remove(
        get_catalog(),
        settings,
        v1,
        str(p1.relative_to(settings.repository)),
        "test",
        "x",
        1,
        "0",
        dry_run=False,
    )
    assert out.outcome.startswith("refused") and p1.exists() and file_state(v1) == "received"


def test_quota_control(tmp_path: Path) -> None:
    size = None
    probe = make_settings(tmp_path / "probe")
    config.reset(probe)
    _, p = filed(probe, "DQM_V0001_Ecal_R000300000.root")
    size = p.stat().st_size
    from t0dqm.catalog.db import reset_catalogs

    reset_catalogs()
    # quota of 2.5 files: four files are over it; target 95 % of 2.5 = 2.375 files -> two must go
    current = make_settings(tmp_path / "root", quota__online_data=str(int(size * 2.5)))
    config.reset(current)
    try:
        now = time.time()
        ids = []
        for i in range(4):  # oldest first
            file_id, _ = filed(current, f"DQM_V0001_Ecal_R00030000{i + 1}.root", mtime=now - (10 - i) * 3600)
            ids.append(file_id)
        cat = get_catalog()
        archive(ids[1], "verified")  # the oldest (ids[0]) is not archived
        report = cleanup.quota_control(current, cat)
        plan = report.plans["online_data"]
        assert plan.over_quota and [d.file.file_id for d in plan.deletions] == [ids[1]]
        assert [f.file_id for f in plan.blocked] == [ids[0], ids[2], ids[3]]
        assert [(r.file_id, r.outcome) for r in report.removals] == [(ids[1], "deleted")]
        assert file_state(ids[0]) == "received"  # not archived -> not deleted
        assert file_state(ids[1]) == "removed"
        (alarm,) = active_alarms(cat)
        assert alarm["key"] == "quota:online_data" and "not archived" in alarm["message"]
        # once the oldest is archived too, the quota is met and the alarm clears
        archive(ids[0], "on_tape")
        report = cleanup.quota_control(current, cat)
        assert [r.file_id for r in report.removals] == [ids[0]]
        assert active_alarms(cat) == []
        assert [file_state(i) for i in ids] == ["removed", "removed", "received", "received"]
        # under quota: nothing happens
        assert cleanup.quota_control(current, cat).removals == []
    finally:
        reset_catalogs()
        config.reset(None)


def test_alarm_helpers(settings: config.Settings) -> None:
    cat = get_catalog()
    raise_alarm(cat, "k", "first")
    raise_alarm(cat, "k", "second", severity="critical")
    with cat.read() as conn:
        row = conn.execute(select(alarms).where(alarms.c.key == "k")).mappings().one()
    assert (row["count"], row["message"], row["severity"], row["active"]) == (2, "second", "critical", True)
    assert clear_alarm(cat, "k") and not clear_alarm(cat, "k")
    raise_alarm(cat, "k", "again")
    (row,) = active_alarms(cat)
    assert row["count"] == 1 and row["message"] == "again"
