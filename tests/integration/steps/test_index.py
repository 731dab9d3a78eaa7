"""Index: import real simulated files into partial indexes, merge, failures kept and retried, run deletion."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.alarms import active_alarms
from t0dqm.catalog.db import files, get_catalog
from t0dqm.cli import cli
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.steps import index as dqmindex
from t0dqm.steps.receive import receive_one
from tests.conftest import make_settings

ONLINE = "DQM_V0001_Ecal_R000300001.root"
MERGED = "DQM_V0001_R000300001.root"
OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"


def filed(settings: config.Settings, name: str, n_hists: int = 30) -> int:
    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    run, subsystems, strict = simulate.content_for(name)
    simulate.write_dqm_file(src / name, run, subsystems, n_hists=n_hists, strict=strict, lumi=77)
    out = receive_one(dropbox.upload(src / name, settings.dropbox))
    assert out.status == "filed", out
    return out.file_id


def state(file_id: int) -> tuple[str, str | None]:
    with get_catalog().read() as conn:
        row = conn.execute(select(files.c.index_state, files.c.reason).where(files.c.id == file_id)).first()
    return row.index_state, row.reason


def test_import_and_merge(settings: config.Settings) -> None:
    ids = [filed(settings, n) for n in (ONLINE, MERGED, OFFLINE)]
    cat = get_catalog()
    for file_id in ids:
        assert dqmindex.import_one(file_id, settings, cat) == "partial"
        assert dqmindex.partial_path(settings, file_id).exists()
        assert dqmindex.import_one(file_id, settings, cat) == "partial"  # idempotent
    counts = dqmindex.merge_all(settings, cat)
    assert counts["indexed"] == 3 and counts["failed"] == 0
    assert [state(i)[0] for i in ids] == ["indexed"] * 3
    assert list(dqmindex.partial_dir(settings).iterdir()) == []
    idx = dqmindex.Index(settings)
    samples = idx.samples(run=300001)
    assert {s["subsystem"] for s in samples} == {"Ecal", None}
    assert all(s["lumis"] == 77 for s in samples)
    mes = idx.monitor_elements(300001, "/Global/Online/ALL")
    values = {m["path"]: m["value"] for m in mes if m["value"] is not None}
    assert values["Ecal/EventInfo/iRun"] == 300001
    assert any(p.endswith("EventInfo/reportSummary") and v == pytest.approx(0.97) for p, v in values.items())
    assert len([m for m in mes if m["kind"].startswith("TH")]) >= 30
    # importing again after the merge does nothing
    assert dqmindex.import_one(ids[0], settings, cat) == "indexed"
    assert dqmindex.merge_all(settings, cat)["indexed"] == 0


def test_merge_failure_is_kept_and_retried(settings: config.Settings) -> None:
    ids = [filed(settings, n) for n in (ONLINE, OFFLINE)]
    cat = get_catalog()
    for file_id in ids:
        dqmindex.import_one(file_id, settings, cat)
    bad = ids[1]

    def flaky(conn, partial: Path, file_id: int) -> bool:
        if file_id == bad:
            raise OSError("disk full")
        return dqmindex.merge_partial(conn, partial, file_id)

    counts = dqmindex.merge_all(settings, cat, merge_one=flaky)
    assert (counts["indexed"], counts["failed"]) == (1, 1)
    st, reason = state(bad)
    assert st == "failed" and "disk full" in reason
    assert dqmindex.partial_path(settings, bad).exists()  # kept for the retry
    assert [a["key"] for a in active_alarms(cat)] == [dqmindex.MERGE_ALARM]
    assert dqmindex.Index(settings).samples(run=300002) == []  # nothing half-merged
    # reconcile / further merges do not retry it on their own ...
    assert dqmindex.merge_all(settings, cat)["indexed"] == 0 and state(bad)[0] == "failed"
    # ... the operator does, once the fix is in
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": "dev"}
    result = CliRunner().invoke(cli, ["index", "retry-failed", "--sync"], env=env)
    assert result.exit_code == 0, result.output
    assert state(bad) == ("indexed", None)
    assert len(dqmindex.Index(settings).samples(run=300002)) == 1
    assert active_alarms(cat) == []  # cleared by the merge that went through


def test_crash_between_index_commit_and_catalog_update(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    file_id = filed(settings, OFFLINE)
    cat = get_catalog()
    dqmindex.import_one(file_id, settings, cat)
    real = dqmindex.set_index_state

    def crash(catalog, ids, expected, new, *a, **k):
        if new == "indexed":
            raise KeyboardInterrupt
        return real(catalog, ids, expected, new, *a, **k)

    monkeypatch.setattr(dqmindex, "set_index_state", crash)
    with pytest.raises(KeyboardInterrupt):
        dqmindex.merge_all(settings, cat)
    monkeypatch.undo()
    assert dqmindex.merge_all(settings, cat)["indexed"] == 1
    assert len(dqmindex.Index(settings).samples()) == 1  # not merged twice


def test_unreadable_file_fails_import(settings: config.Settings) -> None:
    file_id = filed(settings, ONLINE)
    row_path = settings.repository / get_catalog().get("file", file_id)["path"]
    with open(row_path, "r+b") as fh:
        fh.truncate(200)
    assert dqmindex.import_one(file_id, settings, get_catalog()) == "failed"
    assert "truncated" in state(file_id)[1]


def test_offline_flavour_skips_superseded_versions(tmp_path: Path) -> None:
    current = make_settings(tmp_path / "root", flavour="offline")
    config.reset(current)
    try:
        first = filed(current, OFFLINE)
        second = filed(current, OFFLINE)
        cat = get_catalog()
        assert dqmindex.import_one(first, current, cat) == "skipped"
        assert state(first) == ("skipped", "superseded by V0002")
        assert dqmindex.import_one(second, current, cat) == "partial"
    finally:
        from t0dqm.catalog.db import reset_catalogs

        reset_catalogs()
        config.reset(None)


def test_dev_flavour_indexes_every_version(settings: config.Settings) -> None:
    first, second = filed(settings, OFFLINE), filed(settings, OFFLINE)
    cat = get_catalog()
    assert [dqmindex.import_one(i, settings, cat) for i in (first, second)] == ["partial", "partial"]


def test_merge_order_by_class_priority(settings: config.Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    relval = "DQM_V0001_R000000001__RelValZMM_14__CMSSW_13_0_10-mcRun3_realistic_v1__DQMIO.root"
    ids = {n: filed(settings, n, n_hists=5) for n in (relval, OFFLINE, ONLINE)}
    cat = get_catalog()
    for i in ids.values():
        dqmindex.import_one(i, settings, cat)
    order: list[int] = []

    def record(conn, partial, file_id):
        order.append(file_id)
        return dqmindex.merge_partial(conn, partial, file_id)

    dqmindex.merge_all(settings, cat, merge_one=record)
    assert order == [ids[ONLINE], ids[OFFLINE], ids[relval]]


def test_merge_is_single_writer(settings: config.Settings) -> None:
    cat = get_catalog()
    with dqmindex.merge_lease(settings, cat), pytest.raises(dqmindex.MergeBusy):
        dqmindex.merge_all(settings, cat)


def test_cli_ls_and_show(settings: config.Settings) -> None:
    file_id = filed(settings, OFFLINE)
    dqmindex.import_one(file_id, settings, get_catalog())
    dqmindex.merge_all(settings, get_catalog())
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": "dev"}
    runner = CliRunner()
    out = runner.invoke(cli, ["index", "ls", "--run", "300002"], env=env)
    assert out.exit_code == 0 and "/ZeroBias/Run2024A-PromptReco-v1/DQMIO" in out.output
    assert runner.invoke(cli, ["index", "ls", "--run", "1"], env=env).output == ""
    out = runner.invoke(cli, ["index", "show", "300002", "/ZeroBias/Run2024A-PromptReco-v1/DQMIO"], env=env)
    assert out.exit_code == 0 and "EventInfo/iRun = 300002" in out.output
    assert runner.invoke(cli, ["index", "show", "1", "/A/B/C"], env=env).exit_code != 0


def test_delete_runs(settings: config.Settings) -> None:
    cat = get_catalog()
    names = [f"DQM_V0001_Ecal_R{run:09d}.root" for run in (300001, 300002, 300003)]
    ids = [filed(settings, n, n_hists=5) for n in names]
    for i in ids:
        dqmindex.import_one(i, settings, cat)
    dqmindex.merge_all(settings, cat)
    idx = dqmindex.Index(settings)
    conn = dqmindex.connect(idx.path)
    day = 86400
    now = time.time()
    # run type OTHER (no ProvInfo): 300001 ended 3 years ago, 300002 ten days ago, 300003 newest
    conn.execute("UPDATE samples SET start_time = ? WHERE run = 300001", (now - 3 * 365 * day,))
    conn.execute("UPDATE samples SET start_time = ? WHERE run = 300002", (now - 10 * day,))
    conn.execute("UPDATE samples SET start_time = ? WHERE run = 300003", (now - 5 * 365 * day,))
    conn.close()
    planned = dqmindex.delete_runs(settings, cat, dry_run=True)
    assert [(d.run, d.rule) for d in planned] == [(300001, "max-age")]
    assert len(idx.samples()) == 3  # dry run changes nothing
    done = dqmindex.delete_runs(settings, cat, dry_run=False)
    assert [d.run for d in done] == [300001]
    assert sorted(s["run"] for s in idx.samples()) == [300002, 300003]
    assert idx.monitor_elements(300001, "/Global/Online/ALL") == []


# -- partial indexes written by receive (one per batch) ---------------------------------------------------


def batch_filed(settings: config.Settings, names: list[str]) -> list[int]:
    from t0dqm.steps.receive import Receiver

    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    uploads = []
    for name in names:
        run, subsystems, strict = simulate.content_for(name)
        simulate.write_dqm_file(src / name, run, subsystems, n_hists=20, strict=strict, lumi=77)
        uploads.append(dropbox.upload(src / name, settings.dropbox))
    outcomes = Receiver(settings, get_catalog()).receive_many(uploads, index=True)
    assert [(o.status, o.index_state) for o in outcomes] == [("filed", "partial")] * len(names), outcomes
    return [o.file_id for o in outcomes]


def test_batch_partial_with_a_failed_sample_is_kept_and_retried(settings: config.Settings) -> None:
    ids = batch_filed(settings, [ONLINE, OFFLINE])
    cat = get_catalog()
    (partial,) = dqmindex.partial_dir(settings).iterdir()
    assert dqmindex.has_partial(settings, ids[1]) and not dqmindex.partial_path(settings, ids[1]).exists()
    assert dqmindex.import_one(ids[1], settings, cat) == "partial"  # already in the batch's partial
    bad = ids[1]

    def flaky(conn, partial: Path, file_id: int) -> bool:
        if file_id == bad:
            raise OSError("disk full")
        return dqmindex.merge_partial(conn, partial, file_id)

    counts = dqmindex.merge_all(settings, cat, merge_one=flaky)
    assert (counts["indexed"], counts["failed"]) == (1, 1)
    assert partial.exists()  # still holds the failed sample
    assert dqmindex.reset_failed(settings, cat) == [(bad, "partial")]
    assert dqmindex.merge_all(settings, cat)["indexed"] == 1
    assert not partial.exists() and [state(i)[0] for i in ids] == ["indexed", "indexed"]
    assert sorted(s["file_id"] for s in dqmindex.Index(settings).samples()) == sorted(ids)


def test_stale_partial_is_never_merged(settings: config.Settings) -> None:
    """A partial whose sample's catalog row has another path (an id reused after a crash) is dropped."""
    ids = batch_filed(settings, [ONLINE])
    cat = get_catalog()
    (partial,) = dqmindex.partial_dir(settings).iterdir()
    stale = partial.with_name(f"{dqmindex.BATCH_PREFIX}0-stale.sqlite")
    conn = dqmindex.connect(stale, fast=True)
    conn.execute(
        "INSERT INTO samples (file_id, run, dataset, version, cls, path, imported_at) "
        "VALUES (?, 1, '/A/B/C', 1, 'online_data', 'Other/path.root', 0)",
        (ids[0],),
    )
    conn.close()
    counts = dqmindex.merge_all(settings, cat)
    assert counts["indexed"] == 1 and not stale.exists() and not partial.exists()
    (sample,) = dqmindex.Index(settings).samples()
    assert sample["path"] != "Other/path.root"


def test_lost_partial_is_imported_again_by_reconcile(settings: config.Settings) -> None:
    from t0dqm.steps.index import IMPORT_TASK, MERGE_TASK, _recover_merge

    ids = batch_filed(settings, [ONLINE, OFFLINE])
    cat = get_catalog()
    later = time.time() + settings["reconcile"]["stale_seconds"] + 1
    with cat.read() as conn:
        assert [r.task for r in _recover_merge(conn, settings, later)] == [MERGE_TASK]
    for partial in dqmindex.partial_dir(settings).iterdir():
        partial.unlink()
    with cat.read() as conn:
        resumes = list(_recover_merge(conn, settings, later))
    assert sorted(r.args[0] for r in resumes) == sorted(ids) and {r.task for r in resumes} == {IMPORT_TASK}
    for file_id in ids:
        assert dqmindex.import_one(file_id, settings, cat) == "partial"
    assert dqmindex.merge_all(settings, cat)["indexed"] == 2


def test_index_is_written_with_a_rollback_journal_and_only_read_by_readers(settings: config.Settings) -> None:
    """Shared storage: no WAL (it needs shared memory between processes of one host); readers open the
    index read-only and never create or convert it."""
    import sqlite3

    path = dqmindex.index_path(settings)
    assert dqmindex.Index(settings).samples() == [] and not path.exists()  # a reader creates nothing
    path.parent.mkdir(parents=True)
    legacy = sqlite3.connect(path)  # an index an older t0dqm left in WAL mode
    legacy.execute("PRAGMA journal_mode=WAL")
    legacy.executescript(dqmindex.SCHEMA)
    legacy.close()
    cat = get_catalog()
    file_id = filed(settings, ONLINE)
    dqmindex.import_one(file_id, settings, cat)
    assert dqmindex.merge_all(settings, cat)["indexed"] == 1
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    check.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.sqlite"]  # no -wal, -shm, -journal
    before = path.stat().st_mtime_ns
    (sample,) = dqmindex.Index(settings).samples()
    assert sample["file_id"] == file_id and path.stat().st_mtime_ns == before
    reader = dqmindex.connect_reader(path)
    assert reader is not None
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.execute("DELETE FROM samples")
    reader.close()


RECEIVE_ELSEWHERE = """
import sys
from t0dqm import config
from t0dqm.catalog.db import get_catalog
from t0dqm.steps.receive import Receiver
settings = config.get()
out = Receiver(settings, get_catalog(settings.catalog_url)).receive_many(sys.argv[1:], index=True)
print(" ".join(o.status + ":" + str(o.index_state) for o in out))
"""


def test_partial_written_by_another_process_is_merged_here(settings: config.Settings) -> None:
    """Receive on one host writes the batch's partial index into the shared work folder; the merge-lease
    holder on another host merges it (opened read-only and immutable: no lock on the writer's file)."""
    import subprocess
    import sys

    from tests.integration.workerproc import REPO, t0dqm_env

    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    uploads = []
    for name in (ONLINE, OFFLINE):
        run, subsystems, strict = simulate.content_for(name)
        simulate.write_dqm_file(src / name, run, subsystems, n_hists=10, strict=strict)
        uploads.append(str(dropbox.upload(src / name, settings.dropbox)))
    run = subprocess.run(
        [sys.executable, "-c", RECEIVE_ELSEWHERE, *uploads],
        cwd=REPO,
        timeout=120,
        env=t0dqm_env(settings.root),
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["filed:partial", "filed:partial"]
    (partial,) = dqmindex.partial_dir(settings).iterdir()
    counts = dqmindex.merge_all(settings, get_catalog())
    assert counts["indexed"] == 2 and not partial.exists()
    assert len(dqmindex.Index(settings).samples()) == 2
