"""The bad-input corpus (tests/corpus/cases.py) through every entry point.

Each case is materialised into tmp dirs, run through its entry point and checked against its exact
outcome (status plus error or quarantine reason). For every case a sentinel directory outside all roots
is snapshotted after the inputs exist and compared after the run: nothing outside the roots changes.
The receive cases also go through a real `celery -A t0dqm worker` process, which must survive them all.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog, quarantine
from t0dqm.cli import cli
from t0dqm.formats import dropbox, eosdump, legacy, naming
from t0dqm.servers import upload as upload_server
from t0dqm.steps import sync
from t0dqm.steps.receive import receive_one
from tests.corpus import build
from tests.corpus.cases import CASES, ENTRIES, Case, by_entry
from tests.integration.workerproc import point_app, worker


@dataclass
class Ctx:
    settings: config.Settings
    tmp: Path
    sentinel: Path

    @property
    def env(self) -> dict[str, str]:
        return {"T0DQM_ROOT": str(self.settings.root), "T0DQM_FLAVOUR": "dev", "T0DQM_CONFIG": ""}


def _rows(table: Any = files) -> list[dict[str, Any]]:
    with get_catalog().read() as conn:
        return [dict(r) for r in conn.execute(select(table)).mappings()]


def _inside(path: Path, top: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(top))


# -- runners, one per entry point -------------------------------------------------------------------------


def run_classify(case: Case, ctx: Ctx) -> None:
    name, exp = case.spec["name"], case.expect
    result = CliRunner().invoke(cli, ["classify", name], env=ctx.env)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if "error" in exp:
        with pytest.raises(naming.InvalidName) as err:
            naming.classify(name)
        assert exp["error"] in err.value.reason
        assert result.exit_code == 1 and out["ok"] is False and exp["error"] in out["error"], result.output
    else:
        assert naming.classify(name).class_ == exp["class"]
        assert result.exit_code == 0 and out["class"] == exp["class"]


def run_upload(case: Case, ctx: Ctx) -> None:
    name = case.spec["name"]
    src = ctx.tmp / "src" / name
    build.write_content(src, "good", name)
    result = CliRunner().invoke(
        cli, ["upload", str(src), "--dropbox", str(ctx.settings.dropbox)], env=ctx.env
    )
    assert result.exit_code == 1, result.output
    assert case.expect["error"] in result.stderr
    assert not [p for p in ctx.settings.dropbox.rglob("*") if p.is_file()]


def check_receive(case: Case, ctx: Ctx, upload: Path, out: dict[str, Any]) -> None:
    """The outcome of one receive case, whoever ran it (receive_one or a worker)."""
    exp, box = case.expect, ctx.settings.dropbox
    assert out["status"] == exp["status"], (case.id, out)
    if "reason" in exp:
        assert exp["reason"] in (out["reason"] or ""), (case.id, out)
    if "not_in_reason" in exp:
        assert exp["not_in_reason"] not in (out["reason"] or "")
    if out["status"] == "quarantined":
        p = box / out["path"]
        assert exp["reason"] in p.with_name(p.name + dropbox.BAD).read_text()
        assert os.path.lexists(p.with_name(p.name + dropbox.ORIGIN_BAD))
        with get_catalog().read() as conn:
            reasons = [
                r.reason
                for r in conn.execute(select(quarantine.c.reason).where(quarantine.c.path == out["path"]))
            ]
        assert len(reasons) == 1 and exp["reason"] in reasons[0]
        assert receive_one(upload, ctx.settings).status == "gone"  # never retried
    elif out["status"] == "filed":
        target = ctx.settings.repository / out["target"]
        info = json.loads(Path(str(target) + ".dqminfo").read_text())
        assert info["origin"] == build.fill(exp["origin"], ctx.sentinel)
        assert _inside(target, ctx.settings.repository) and not os.path.lexists(box / out["path"])
    else:
        assert [r for r in _rows(quarantine) if r["path"] == out["path"]] == []
    assert [c for c in dropbox.scan(box) if c.path == box / out["path"]] == []


def run_receive(case: Case, ctx: Ctx) -> None:
    upload = build.materialize_receive(case.spec, ctx.settings.dropbox, ctx.sentinel)
    snap = build.snapshot(ctx.sentinel)
    out = receive_one(upload, ctx.settings, get_catalog())
    check_receive(case, ctx, upload, out.__dict__)
    assert build.snapshot(ctx.sentinel) == snap


def run_legacy(case: Case, ctx: Ctx) -> None:
    outside = case.spec.get("where") == "sentinel"
    top = ctx.sentinel / "legacy" if outside else ctx.settings.repository
    info = top / "OnlineData" / "00030xxxx" / "0003001xx" / "DQM_V0001_R000300104.root.dqminfo"
    info.parent.mkdir(parents=True, exist_ok=True)
    info.write_bytes(build.fill(case.spec["text"], ctx.sentinel).encode("utf-8", "surrogateescape"))
    snap = build.snapshot(ctx.sentinel)
    if not outside:
        with pytest.raises(legacy.LegacyFormatError) as err:
            legacy.check_dqminfo(legacy.read_legacy_info(info), str(info))
        assert case.expect["error"] in str(err.value)
    result = CliRunner().invoke(cli, ["import-legacy", str(top)], env=ctx.env)
    assert result.exit_code == 1, result.output
    assert case.expect["error"] in result.stderr
    assert _rows() == []
    assert build.snapshot(ctx.sentinel) == snap


def run_eosdump(case: Case, ctx: Ctx) -> None:
    dump = build.write_dump(
        ctx.tmp / "eos_files.txt.gz",
        case.spec["lines"],
        case.spec.get("gzip", "gzip"),
        case.spec.get("age", 0.0),
    )
    if "error" in case.expect:
        with pytest.raises(eosdump.DumpError, match=re.escape(case.expect["error"])):
            eosdump.aggregate(dump)
        return
    summary = eosdump.aggregate(dump).as_dict()
    for key, value in case.expect["summary"].items():
        assert summary[key] == value, (key, summary)


def run_sync(case: Case, ctx: Ctx) -> None:
    dest = ctx.settings.repository / "OnlineData" / "original"
    exp = case.expect
    with (
        build.serve() as other,
        build.serve(
            lambda port: build.scenario(case.spec["server"], port, other.server_address[1])
        ) as server,
    ):
        base = f"http://127.0.0.1:{server.server_address[1]}/browse/"
        report = sync.online_sync(base, dest, connections=2, timeout=10)
    errors = "\n".join(report.errors)
    if "error" in exp:
        assert exp["error"] in errors, errors
    else:
        assert report.errors == []
    if "downloaded" in exp:
        assert sorted(report.downloaded) == sorted(exp["downloaded"])
    assert other.requests == []  # nothing was fetched from anywhere else
    assert all(path.startswith("/browse/") for _m, path in server.requests), server.requests
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()) if dest.exists() else []
    assert found == sorted(report.downloaded)  # no temp files left, nothing else written
    for rel in found:
        assert _inside(dest / rel, dest) and (dest / rel).read_bytes() == build.PAYLOAD


def run_upload_server(case: Case, ctx: Ctx) -> None:
    spec, exp, box = case.spec, case.expect, ctx.settings.dropbox
    src = ctx.tmp / "payload.root"
    build.write_content(src, spec.get("content", "good"), build.GOOD)
    srv = upload_server.make_server("127.0.0.1", 0, box, max_size=1 << 20)
    srv.start()
    try:
        status, headers = build.upload_request(srv.server_address[1], spec, src.read_bytes(), ctx.sentinel)
        assert status == exp["http"], headers
        if "detail" in exp:
            assert exp["detail"] in headers.get("dqm-status-detail", ""), headers
        if "message" in exp:
            assert exp["message"] in headers.get("dqm-status-message", ""), headers
        stored = sorted(p for p in box.glob("[0-9]*/*") if not p.name.endswith(dropbox.ORIGIN))
        if "stored_as" in exp:
            assert [p.name for p in stored] == [exp["stored_as"]] and stored[0].parent.parent == box
        else:
            assert stored == []
        assert not list((box / dropbox.UPLOADING).glob("*")) if (box / dropbox.UPLOADING).exists() else True
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.request("GET", "/still-alive")
        assert conn.getresponse().status == 404  # the server survived the request
        conn.close()
    finally:
        srv.stop()


# -- races: two processes at once ---------------------------------------------------------------------------


def _child_upload(root: str, src: str, barrier: Any, out: Any) -> None:
    from tests.conftest import make_settings

    settings = make_settings(Path(root))
    barrier.wait()
    out.put(str(dropbox.upload(src, settings.dropbox)))


def _child_http(port: int, src: str, barrier: Any, out: Any) -> None:
    data = Path(src).read_bytes()
    barrier.wait()
    out.put(build.upload_request(port, {}, data, Path("/nonexistent"))[0])


def _child_receive(root: str, paths: list[str], barrier: Any, out: Any) -> None:
    from tests.conftest import make_settings

    config.reset(make_settings(Path(root)))
    barrier.wait()
    out.put([receive_one(p).status for p in paths])


def _spawn(target: Any, args_list: list[tuple[Any, ...]]) -> list[Any]:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(len(args_list)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, out)) for args in args_list]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return results


def run_race(case: Case, ctx: Ctx) -> None:
    settings, kind = ctx.settings, case.spec["kind"]
    src = ctx.tmp / "src" / build.GOOD
    build.write_content(src, "good", build.GOOD)
    get_catalog()  # schema before the children start
    if kind == "dropbox_upload":
        paths = _spawn(_child_upload, [(str(settings.root), str(src))] * 2)
        assert len(set(paths)) == 2
    elif kind == "http_upload":
        srv = upload_server.make_server("127.0.0.1", 0, settings.dropbox)
        srv.start()
        try:
            assert _spawn(_child_http, [(srv.server_address[1], str(src))] * 2) == [200, 200]
        finally:
            srv.stop()
    elif kind == "receive_crossed":
        ups = [str(dropbox.upload(src, settings.dropbox)) for _ in range(2)]
        statuses = _spawn(_child_receive, [(str(settings.root), ups), (str(settings.root), ups[::-1])])
        flat = [s for one in statuses for s in one]
        assert flat.count("filed") == 2 and set(flat) <= {"filed", "busy", "gone"}, statuses
    for cand in dropbox.scan(settings.dropbox):
        assert receive_one(cand.path, settings).status == "filed"
    assert sorted(r["version"] for r in _rows()) == case.expect["filed_versions"]
    assert _rows(quarantine) == [] and dropbox.scan(settings.dropbox) == []


RUNNERS = {
    "classify": run_classify,
    "upload": run_upload,
    "receive": run_receive,
    "legacy": run_legacy,
    "eosdump": run_eosdump,
    "sync": run_sync,
    "upload_server": run_upload_server,
    "race": run_race,
}


def test_corpus_shape() -> None:
    assert len(CASES) >= 50 and len({c.id for c in CASES}) == len(CASES)
    assert set(ENTRIES) == set(RUNNERS)
    assert all(c.expect for c in CASES), "every case asserts an outcome"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, settings: config.Settings, tmp_path: Path) -> None:
    ctx = Ctx(settings, tmp_path, build.make_sentinel(tmp_path))
    before = build.snapshot(ctx.sentinel)
    RUNNERS[case.entry](case, ctx)
    after = build.snapshot(ctx.sentinel)
    assert not (ctx.sentinel / "pwned").exists()
    # runners that add inputs under the sentinel compare their own snapshot; the rest compare this one
    if case.entry not in ("receive", "legacy"):
        assert after == before


# -- the receive corpus through a real worker process ----------------------------------------------------


def test_receive_corpus_through_a_worker(redis_server: Any, tmp_path: Path) -> None:
    """Every receive case as a receive_file task in a `celery -A t0dqm worker` process: the same outcomes,
    and the worker is alive and answering afterwards."""
    import redis as redislib

    from t0dqm.catalog.db import reset_catalogs
    from t0dqm.tasks.ops import noop
    from t0dqm.tasks.receive import receive_file
    from tests.conftest import make_settings

    redislib.Redis.from_url(redis_server.url).flushall()
    cases = by_entry("receive")
    settings = make_settings(tmp_path / "root", broker_url=redis_server.url)
    point_app(settings)
    ctx = Ctx(settings, tmp_path, build.make_sentinel(tmp_path))
    uploads = {}
    for i, case in enumerate(cases):
        uploads[case.id] = build.materialize_receive(
            case.spec, settings.dropbox, ctx.sentinel, slot=f"{i:04d}"
        )
    get_catalog()
    snap = build.snapshot(ctx.sentinel)
    try:
        with worker(
            settings.root, "receive,ops", tmp_path / "worker.log", T0DQM_BROKER_URL=redis_server.url
        ) as proc:
            results = [receive_file.apply_async(args=(str(uploads[c.id]),)) for c in cases]
            outcomes = [r.get(timeout=120) for r in results]
            # the worker answered after every hostile case: it is alive now (no wait-and-see sleep)
            assert noop.apply_async(args=("alive",)).get(timeout=60) == "alive"
            assert proc.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
        for case, out in zip(cases, outcomes, strict=True):
            check_receive(case, ctx, uploads[case.id], out)
        assert build.snapshot(ctx.sentinel) == snap
        assert not (ctx.sentinel / "pwned").exists()
        with get_catalog().read() as conn:
            n_bad = conn.execute(select(func.count()).select_from(quarantine)).scalar()
        assert n_bad == sum(c.expect["status"] == "quarantined" for c in cases)
    finally:
        reset_catalogs()
        config.reset(None)
