"""Receive: real simulated ROOT files through the dropbox into the repository and the catalog."""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog, quarantine
from t0dqm.dev import simulate
from t0dqm.formats import dropbox, rootcheck
from t0dqm.steps import receive
from t0dqm.steps.receive import Receiver, receive_one

ONLINE = "DQM_V0001_Ecal_R000300001.root"
MERGED = "DQM_V0001_R000300001.root"
OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"


def make(settings: config.Settings, name: str, **kw: object) -> Path:
    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    run, subsystems, strict = simulate.content_for(name)
    kw.setdefault("strict", strict)
    simulate.write_dqm_file(src / name, run, subsystems, n_hists=20, **kw)
    return src / name


def up(settings: config.Settings, name: str, **kw: object) -> Path:
    return dropbox.upload(make(settings, name, **kw), settings.dropbox)


def rows(table=files) -> list[dict]:
    with get_catalog().read() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def test_good_file_is_filed(settings: config.Settings) -> None:
    uploaded = up(settings, OFFLINE)
    out = receive_one(uploaded)
    assert out.status == "filed" and out.version == 1
    target = settings.repository / out.target
    assert target.exists() and not uploaded.exists()
    assert not list(uploaded.parent.iterdir())  # .origin / claim removed
    info = json.loads(Path(str(target) + ".dqminfo").read_text())
    for key in (
        "class",
        "version",
        "runnr",
        "dataset",
        "origin",
        "size",
        "md5sum",
        "adler32",
        "xpath",
        "time",
        "check",
        "era",
        "primds",
        "procds",
        "tier",
        "filepat",
        "zippat",
        "path",
    ):
        assert key in info, key
    assert info["class"] == "offline_data" and info["path"] == out.target
    assert info["adler32"] == __import__("t0dqm.storage", fromlist=["x"]).adler32_file(target)
    (row,) = rows()
    assert (row["state"], row["index_state"], row["path"], row["version"]) == (
        "received",
        "pending",
        out.target,
        1,
    )
    assert row["zippat"] == info["zippat"] and "%04d" in row["zippat"]
    assert row["md5"] == info["md5sum"] and row["size"] == target.stat().st_size
    assert receive_one(uploaded).status == "gone"  # idempotent


def test_strict_check_for_merged_online_files(settings: config.Settings) -> None:
    good = receive_one(up(settings, MERGED, strict=True))
    assert good.status == "filed"
    info = json.loads((settings.repository / (good.target + ".dqminfo")).read_text())
    assert info["check"].startswith("VERIFY: Good to go; R=300001")
    assert info["subsystem"] is None
    bad = receive_one(up(settings, MERGED, strict=False))
    assert bad.status == "quarantined" and "strict" in bad.reason and "reportSummaryMap" in bad.reason
    # a subsystem file needs only the loose check
    assert receive_one(up(settings, ONLINE, strict=False)).status == "filed"


def _quarantined(settings: config.Settings, uploaded: Path, expect: str) -> None:
    out = receive_one(uploaded)
    assert out.status == "quarantined", out
    assert expect in out.reason
    assert uploaded.exists() or "missing" in expect  # never deleted
    assert uploaded.with_name(uploaded.name + ".origin.bad").exists()
    assert expect in uploaded.with_name(uploaded.name + ".bad").read_text()
    assert not uploaded.with_name(uploaded.name + ".origin").exists()
    q = [r for r in rows(quarantine) if r["path"] == str(uploaded.relative_to(settings.dropbox))]
    assert len(q) == 1 and expect in q[0]["reason"] and q[0]["step"] == "receive"
    assert receive_one(uploaded).status == "gone"  # never retried
    assert all(c.path != uploaded for c in dropbox.scan(settings.dropbox))


@pytest.mark.parametrize("kind", simulate.BROKEN_KINDS)
def test_simulated_broken_files_are_quarantined(settings: config.Settings, kind: str) -> None:
    entry = simulate.write_broken(settings.root / "src", kind, random.Random(7))
    uploaded = dropbox.upload(entry["file"], settings.dropbox, declared_size=entry.get("declared_size"))
    expect = entry["reason"] or "bad name"
    _quarantined(settings, uploaded, expect)
    assert rows() == []


def test_md5_mismatch(settings: config.Settings) -> None:
    uploaded = up(settings, ONLINE)
    origin = uploaded.with_name(ONLINE + ".origin")
    o = dropbox.read_origin(origin)
    origin.write_text(dropbox.format_origin("0" * 32, o.size, o.source))
    _quarantined(settings, uploaded, "md5 mismatch")


def test_malformed_origin(settings: config.Settings) -> None:
    uploaded = up(settings, ONLINE)
    uploaded.with_name(ONLINE + ".origin").write_text("crc32:1234 12 somewhere\n")
    _quarantined(settings, uploaded, "malformed .origin")


def test_not_a_regular_file(settings: config.Settings) -> None:
    folder = settings.dropbox / "0000"
    folder.mkdir(parents=True)
    (folder / ONLINE).mkdir()
    dropbox.write_atomic(folder / (ONLINE + ".origin"), b"md5:" + b"0" * 32 + b" 10 x\n")
    _quarantined(settings, folder / ONLINE, "not a regular file")


def test_missing_file(settings: config.Settings) -> None:
    uploaded = up(settings, ONLINE)
    uploaded.unlink()
    _quarantined(settings, uploaded, "file missing")


def test_unsafe_path(settings: config.Settings) -> None:
    src = make(settings, ONLINE)
    folder = settings.dropbox / "odd dir"
    folder.mkdir(parents=True)
    (folder / ONLINE).write_bytes(src.read_bytes())
    simulate.write_origin(folder / ONLINE)
    _quarantined(settings, folder / ONLINE, "unsafe characters")


def test_root_check_timeout(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.conftest import make_settings

    current = make_settings(settings.root, timeouts__root_check="1")
    config.reset(current)
    hold = threading.Event()  # the check never finishes before the timeout, however loaded the host
    monkeypatch.setattr(rootcheck, "inspect", lambda *a, **k: hold.wait(60))
    try:
        _quarantined(current, up(current, ONLINE), "timed out after 1 s")
    finally:
        hold.set()


def test_bad_file_does_not_stop_the_next(settings: config.Settings) -> None:
    bad = simulate.write_broken(settings.root / "src", "bad_magic", random.Random(1))
    dropbox.upload(bad["file"], settings.dropbox)
    up(settings, OFFLINE)
    outcomes = [receive_one(c.path).status for c in dropbox.scan(settings.dropbox)]
    assert sorted(outcomes) == ["filed", "quarantined"]


def test_version_bump(settings: config.Settings) -> None:
    first = receive_one(up(settings, OFFLINE))
    second = receive_one(up(settings, OFFLINE))
    assert (first.version, second.version) == (1, 2)
    assert second.target == first.target.replace("DQM_V0001", "DQM_V0002")
    # a version whose ROOT file was deleted (its .dqminfo stays) is never reused
    (settings.repository / second.target).unlink()
    third = receive_one(up(settings, OFFLINE))
    assert third.version == 3
    # a catalog row alone also blocks a version
    Path(str(settings.repository / third.target) + ".dqminfo").unlink()
    (settings.repository / third.target).unlink()
    assert receive_one(up(settings, OFFLINE)).version == 4
    assert sorted(r["version"] for r in rows()) == [1, 2, 3, 4]


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so nothing catches it."""


@pytest.mark.parametrize(
    "where", ["_reserve", "_link", "_record_many"]
)  # _record_many: row, claim still there
def test_killed_mid_receive_is_recovered(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    uploaded = up(settings, OFFLINE)
    receiver = Receiver(settings, get_catalog())
    original = getattr(Receiver, where)

    def dies_after(self, *a, **k):
        original(self, *a, **k)
        raise Killed()

    monkeypatch.setattr(Receiver, where, dies_after)
    with pytest.raises(Killed):
        receiver.receive(uploaded)
    monkeypatch.undo()
    # the claim is left behind with its lock free: the scanner lists it again
    (cand,) = dropbox.scan(settings.dropbox)
    assert cand.claimed and cand.path == uploaded
    out = receive_one(cand.path)
    assert out.status == "filed" and out.version == 1, out
    assert len(rows()) == 1
    assert sorted(p.name for p in (settings.repository / out.target).parent.iterdir()) == [
        OFFLINE,
        OFFLINE + ".dqminfo",
    ]
    assert dropbox.scan(settings.dropbox) == [] and not list(uploaded.parent.iterdir())
    # the next upload of the same name gets the next version, not a duplicate of this one
    assert receive_one(up(settings, OFFLINE)).version == 2


def test_claim_is_a_catalog_lease_not_a_flock(settings: config.Settings) -> None:
    """A receiver on another host holds the upload's lease: busy here, whatever the file system's locks say;
    once its lease is no longer live the claim is taken over and the upload filed once."""
    from sqlalchemy import update

    from t0dqm.catalog.db import leases

    uploaded = up(settings, OFFLINE)
    rel = str(uploaded.relative_to(settings.dropbox))
    cat = get_catalog()
    name = receive.claim_lease_name(settings, rel)
    assert cat.acquire_lease(name, "hostB:4242:1:receive", receive.CLAIM_SECONDS)
    assert receive.take_claim(uploaded) == uploaded.with_name(uploaded.name + dropbox.CLAIMED)
    (cand,) = dropbox.scan(settings.dropbox)  # listed: only the catalog knows whether hostB lives
    assert cand.claimed
    assert receive_one(cand.path).status == "busy"
    assert rows() == []
    with cat.begin() as conn:  # hostB's lease runs out (or its heartbeat stops: Catalog.acquire_lease)
        conn.execute(update(leases).where(leases.c.name == name).values(expires_at=time.time() - 1))
    out = receive_one(cand.path)
    assert out.status == "filed" and out.version == 1
    assert len(rows()) == 1 and dropbox.scan(settings.dropbox) == []
    with cat.read() as conn:
        assert conn.execute(select(leases).where(leases.c.name == name)).first() is None  # released


def _receive_in_process(root: str, path: str, barrier, out) -> None:
    from tests.conftest import make_settings

    config.reset(make_settings(Path(root)))
    barrier.wait()
    out.put(receive_one(path).status)


def test_two_concurrent_receivers_file_once(settings: config.Settings) -> None:
    ctx = mp.get_context("spawn")
    uploads = [up(settings, OFFLINE) for _ in range(4)]
    get_catalog()  # schema first
    for uploaded in uploads:
        barrier, out = ctx.Barrier(3), ctx.Queue()
        procs = [
            ctx.Process(target=_receive_in_process, args=(str(settings.root), str(uploaded), barrier, out))
            for _ in range(3)
        ]
        for p in procs:
            p.start()
        statuses = sorted(out.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(30)
        assert statuses.count("filed") == 1 and set(statuses) <= {"filed", "busy", "gone"}, statuses
    assert sorted(r["version"] for r in rows()) == [1, 2, 3, 4]
    assert len({r["path"] for r in rows()}) == 4


def _batch_in_process(root: str, catalog_url: str, paths: list[str], barrier, out) -> None:
    from tests.conftest import make_settings

    current = make_settings(Path(root), catalog_url=catalog_url)
    config.reset(current)
    barrier.wait()
    out.put([o.status for o in Receiver(current, get_catalog(current.catalog_url)).receive_many(paths)])


def test_concurrent_batches_on_postgresql_file_each_upload_once(tmp_path: Path, pg_url: str) -> None:
    """Three receivers (as on three hosts) take the same batch at once with the catalog on PostgreSQL: the
    upload leases let exactly one file each upload; the others find it busy or gone."""
    from tests.conftest import make_settings

    current = make_settings(tmp_path / "root", catalog_url=pg_url)
    config.reset(current)
    try:
        from t0dqm.catalog.db import Catalog

        Catalog(pg_url).upgrade()  # `t0dqm db upgrade`
        paths = [str(up(current, name)) for name in _names(6)]
        ctx = mp.get_context("spawn")
        barrier, out = ctx.Barrier(3), ctx.Queue()
        procs = [
            ctx.Process(target=_batch_in_process, args=(str(current.root), pg_url, paths, barrier, out))
            for _ in range(3)
        ]
        for p in procs:
            p.start()
        results = [out.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(30)
        for i in range(len(paths)):
            statuses = sorted(r[i] for r in results)
            assert statuses.count("filed") == 1 and set(statuses) <= {"filed", "busy", "gone"}, statuses
        with get_catalog(pg_url).read() as conn:
            assert len(conn.execute(select(files.c.path)).all()) == 6
        assert dropbox.scan(current.dropbox) == []
    finally:
        config.reset(None)


def test_create_info(settings: config.Settings) -> None:
    folder = settings.repository / "OnlineData" / "00030xxxx" / "0003000xx"
    folder.mkdir(parents=True)
    src = make(settings, MERGED)
    (folder / "DQM_V0001_R000300001.root").write_bytes(src.read_bytes())
    (folder / "DQM_V0003_Pixel_R000300002.root").write_bytes(src.read_bytes())
    (folder / "notes.txt").write_text("x")
    filed = receive_one(up(settings, ONLINE))  # has its .dqminfo: untouched
    ids = Receiver(settings, get_catalog()).create_info()
    assert len(ids) == 2
    merged = json.loads((folder / "DQM_V0001_R000300001.root.dqminfo").read_text())
    assert merged["subsystem"] == "Merged File" and merged["class"] == "online_data"
    assert (
        json.loads((folder / "DQM_V0003_Pixel_R000300002.root.dqminfo").read_text())["subsystem"] == "Pixel"
    )
    by_id = {r["id"]: r for r in rows()}
    assert {by_id[i]["index_state"] for i in ids} == {"skipped"}
    assert by_id[filed.file_id]["index_state"] == "pending"
    assert {by_id[i]["version"] for i in ids} == {1, 3}
    assert Receiver(settings, get_catalog()).create_info() == []  # idempotent


def test_receive_cli_once(settings: config.Settings) -> None:
    from click.testing import CliRunner

    from t0dqm.cli import cli

    src = make(settings, OFFLINE)
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": "dev"}
    runner = CliRunner()
    result = runner.invoke(cli, ["upload", str(src)], env=env)
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["receive", "--once"], env=env)
    assert result.exit_code == 0, result.output
    assert "filed" in result.output
    assert [r["state"] for r in rows()] == ["received"]
    assert receive is not None


def test_import_legacy(settings: config.Settings) -> None:
    from click.testing import CliRunner

    from t0dqm.cli import cli

    folder = settings.repository / "OfflineData" / "Run2024" / "ZeroBias" / "0003000xx"
    folder.mkdir(parents=True)
    name = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
    (folder / name).write_bytes(make(settings, OFFLINE).read_bytes())
    size = (folder / name).stat().st_size
    legacy_text = (
        "{'class': 'offline_data', 'version': 1, 'runnr': 300002L, "
        "'dataset': '/ZeroBias/Run2024A-PromptReco-v1/DQMIO', 'size': " + str(size) + ", "
        "'md5sum': 'abc', 'time': 1700000000, 'zippat': 'OfflineData/x_S%04d.zip'}\n"
    )
    (folder / (name + ".dqminfo")).write_text(legacy_text)
    gone = name.replace("V0001", "V0002")
    (folder / (gone + ".dqminfo")).write_text(legacy_text.replace("'version': 1", "'version': 2"))
    (folder / ("DQM_V0003_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root.dqminfo")).write_text(
        "__import__('os').system('touch /tmp/pwned')"
    )
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": "dev"}
    result = CliRunner().invoke(cli, ["import-legacy", str(settings.repository)], env=env)
    assert result.exit_code == 1  # the malicious file is refused, the others imported
    assert '"imported": 2' in result.output
    by_version = {r["version"]: r for r in rows()}
    assert by_version[1]["state"] == "received" and by_version[1]["index_state"] == "pending"
    assert by_version[2]["state"] == "removed" and by_version[2]["index_state"] == "skipped"
    assert by_version[1]["run"] == 300002 and by_version[1]["mtime"] == 1700000000
    result = CliRunner().invoke(cli, ["import-legacy", str(settings.repository)], env=env)
    assert '"known": 2' in result.output  # idempotent
    # receive probes past legacy .dqminfo files: the next upload of this name is V0004
    assert receive_one(up(settings, OFFLINE)).version == 4


# -- batches ------------------------------------------------------------------------------------------


def _names(n: int) -> list[str]:
    return [f"DQM_V0001_R{300010 + i:09d}__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root" for i in range(n)]


def test_batch_with_bad_files_in_the_middle(settings: config.Settings) -> None:
    from t0dqm.steps import index as dqmindex

    names = _names(3)
    good = [up(settings, name) for name in names]
    bad_magic = simulate.write_broken(settings.root / "src", "bad_magic", random.Random(2))
    bad1 = dropbox.upload(bad_magic["file"], settings.dropbox)
    bad2 = up(settings, MERGED, strict=False)  # a merged online file must pass the strict check
    batch = [good[0], bad1, good[1], bad2, good[2]]
    outcomes = Receiver(settings, get_catalog()).receive_many(batch, index=True)
    assert [o.status for o in outcomes] == ["filed", "quarantined", "filed", "quarantined", "filed"]
    assert "bad magic" in outcomes[1].reason and "reportSummaryMap" in outcomes[3].reason
    assert {o.index_state for o in outcomes if o.status == "filed"} == {"partial"}
    for bad in (bad1, bad2):
        assert bad.exists() and bad.with_name(bad.name + ".origin.bad").exists()
    assert sorted(r["name"] for r in rows()) == sorted(names)
    assert {r["index_state"] for r in rows()} == {"partial"}
    (partial,) = dqmindex.partial_dir(settings).iterdir()  # one partial index for the batch
    assert partial.name.startswith(dqmindex.BATCH_PREFIX)
    assert sorted(fid for fid, _ in dqmindex.partial_contents(partial)) == sorted(
        o.file_id for o in outcomes if o.file_id
    )
    assert dqmindex.merge_all(settings, get_catalog())["indexed"] == 3
    assert not partial.exists()
    samples = dqmindex.Index(settings).samples()
    assert sorted(s["file_id"] for s in samples) == sorted(o.file_id for o in outcomes if o.file_id)
    # the elements the receive check read are the ones an import reads
    row = next(r for r in rows() if r["name"] == names[0])
    shown = {m["path"] for m in dqmindex.Index(settings).monitor_elements(row["run"], row["dataset"])}
    assert shown == {m.path for m in rootcheck.read_monitor_elements(settings.repository / row["path"])}


def test_batch_unexpected_error_leaves_only_that_upload(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploads = [up(settings, name) for name in _names(3)]
    original = Receiver._link

    def flaky(self, p, target, dqinfo):
        if p == uploads[1]:
            raise RuntimeError("disk trouble")
        return original(self, p, target, dqinfo)

    monkeypatch.setattr(Receiver, "_link", flaky)
    receiver = Receiver(settings, get_catalog())
    outcomes = receiver.receive_many(uploads)
    assert [o.status for o in outcomes] == ["filed", "error", "filed"]
    assert "disk trouble" in outcomes[1].reason and isinstance(receiver.errors[0], RuntimeError)
    monkeypatch.undo()
    (cand,) = dropbox.scan(settings.dropbox)  # its claim is free again: the next scan retries it
    assert cand.path == uploads[1] and cand.claimed
    assert receive_one(cand.path).status == "filed"
    assert len(rows()) == 3


def test_batch_out_of_time_defers_the_rest(settings: config.Settings) -> None:
    uploads = [up(settings, name) for name in _names(2)]
    outcomes = Receiver(settings, get_catalog()).receive_many(uploads, budget=0.0)
    assert [o.status for o in outcomes] == ["deferred", "deferred"]
    assert len(dropbox.scan(settings.dropbox)) == 2 and rows() == []


@pytest.mark.parametrize("where", ["_link", "_record_many", "index", "mark"])
def test_batch_killed_midway_and_rerun(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A batch killed at any point and run again (by a redelivered message or the next scan, then
    reconcile's import for what stayed pending): every upload filed exactly once and indexed once."""
    from t0dqm.steps import index as dqmindex

    names = _names(5)
    uploads = [up(settings, name) for name in names]
    cat = get_catalog()
    if where == "_link":  # the third upload linked, the batch's rows not written
        original = Receiver._link
        calls = []

        def dies(self, *a, **k):
            original(self, *a, **k)
            calls.append(1)
            if len(calls) == 3:
                raise Killed()

        monkeypatch.setattr(Receiver, "_link", dies)
    elif where == "_record_many":  # rows committed, claims still there
        original_record = Receiver._record_many

        def dies_after(self, *a, **k):
            original_record(self, *a, **k)
            raise Killed()

        monkeypatch.setattr(Receiver, "_record_many", dies_after)
    elif where == "index":  # claims removed, partial index written, rows still pending
        original_mark = dqmindex.set_index_state

        def dies(catalog, ids, expected, new, *a, **k):
            if new == "partial":
                raise Killed()
            return original_mark(catalog, ids, expected, new, *a, **k)

        monkeypatch.setattr(dqmindex, "set_index_state", dies)
    else:  # "mark": rows marked partial, the task dies before enqueueing the merge
        original_index = Receiver._index

        def dies_after_index(self, *a, **k):
            original_index(self, *a, **k)
            raise Killed()

        monkeypatch.setattr(Receiver, "_index", dies_after_index)
    with pytest.raises(Killed):
        Receiver(settings, cat).receive_many(uploads, index=True)
    monkeypatch.undo()
    # run again: what was left claimed is resumed at its reserved version
    outcomes = Receiver(settings, cat).receive_many(uploads, index=True)
    assert {o.status for o in outcomes} <= {"filed", "gone"}
    # reconcile: whatever stayed pending is imported, then merged
    for row in rows():
        if row["index_state"] == "pending":
            assert dqmindex.import_one(row["id"], settings, cat) == "partial"
    dqmindex.merge_all(settings, cat)
    got = rows()
    assert sorted(r["name"] for r in got) == sorted(names)  # each once
    assert {r["version"] for r in got} == {1} and {r["index_state"] for r in got} == {"indexed"}
    for r in got:
        folder = (settings.repository / r["path"]).parent
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(r["name"][:25])) == [
            r["name"],
            r["name"] + ".dqminfo",
        ]
    samples = dqmindex.Index(settings).samples()
    assert sorted(s["file_id"] for s in samples) == sorted(r["id"] for r in got)  # indexed once each
    assert dropbox.scan(settings.dropbox) == []
    assert all(not list(p.parent.iterdir()) for p in uploads)
    assert list(dqmindex.partial_dir(settings).glob("*.sqlite")) == []


def test_batch_partial_index_failure_leaves_files_pending(
    settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from t0dqm.steps import index as dqmindex

    uploads = [up(settings, name) for name in _names(2)]

    def full(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(dqmindex, "write_batch_partial", full)
    outcomes = Receiver(settings, get_catalog()).receive_many(uploads, index=True)
    assert [(o.status, o.index_state) for o in outcomes] == [("filed", "pending")] * 2  # import_file's turn
    assert {r["index_state"] for r in rows()} == {"pending"} and dropbox.scan(settings.dropbox) == []
