"""Streamer cleanup end to end: generated dump, real files (local and on a real XRootD server),
run_stream_done from a real HTTP server on loopback, dry-run and executed, audit == what disappeared."""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from t0dqm import config, storage
from t0dqm.catalog.db import audit, get_catalog, reset_catalogs
from t0dqm.cli import cli
from t0dqm.formats.streamer_names import file_path

NOW = 1_700_000_000
DAY = 86400
DONE_RUNS = {300002}


class DoneHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        q = parse_qs(urlparse(self.path).query)
        done = int(q["run"][0]) in DONE_RUNS
        body = json.dumps({"result": [done]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def done_url() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), DoneHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/t0wmadatasvc/prod/run_stream_done"
    srv.shutdown()
    srv.server_close()


# (label, stream, run, [(lumi, mtime)]); every file 1000 bytes.
UNITS = [
    ("Data", "A", 300001, [(1, NOW - 400 * DAY), (2, NOW - 400 * DAY)]),  # age
    ("Data", "A", 300002, [(1, NOW - DAY), (2, NOW - DAY)]),  # done
    ("Data", "B", 300003, [(1, NOW - DAY), (2, NOW - DAY)]),  # kept (quota reached)
    ("Data", "A", 300004, [(1, NOW - 400 * DAY), (2, NOW - 400 * DAY)]),  # skip list
    ("TransferTest", "T", 300005, [(1, NOW - 8 * DAY), (2, NOW - DAY)]),  # first file only
]
EXPECTED_GONE = {
    ("Data", "A", 300001, 1),
    ("Data", "A", 300001, 2),
    ("Data", "A", 300002, 1),
    ("Data", "A", 300002, 2),
    ("TransferTest", "T", 300005, 1),
}
QUOTA = 5000


def build(tmp_path: Path, put: object, base: str, extra_root: str, done_url: str) -> tuple[Path, dict]:
    """Write files through ``put(rel, data)``, the dump, the skip list and a config file."""
    lines = []
    targets = {}
    for label, stream, run, files in UNITS:
        for lumi, mtime in files:
            dump_path = file_path(label, stream, run, lumi, "dat", "/eos/cms")
            rel = file_path(label, stream, run, lumi, "dat", "")
            data = os.urandom(1000)
            put(rel, data)
            targets[(label, stream, run, lumi)] = rel
            lines.append(f"path={dump_path} size=1000 checksum=00000001 ctime={mtime}.5 mtime={mtime}.12")
    dump = tmp_path / "eos_files.txt.gz"
    dump.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    skip = tmp_path / "skip.txt"
    skip.write_text("300004\n")
    cfg = tmp_path / "t0dqm.toml"
    cfg.write_text(
        f'flavour = "dev"\nroot = "{tmp_path / "root"}"\n'
        f'[deletion]\nextra_roots = ["{extra_root}"]\n'
        f'[streamer]\nenabled = true\ndump = "{dump}"\ndone_url = "{done_url}"\nskip_runs_file = "{skip}"\n'
        f'quota_bytes = {QUOTA}\nmax_dump_age = 1000000000000\nbase = "{base}"\n'
    )
    return cfg, targets


def audit_rows(cfg: Path) -> list:
    settings = config.load(str(cfg))
    cat = get_catalog(settings.catalog_url)
    with cat.read() as conn:
        return list(conn.execute(select(audit.c.action, audit.c.path, audit.c.size, audit.c.rule)))


def run_scenario(tmp_path: Path, cfg: Path, targets: dict, exists: object, base: str) -> None:
    runner = CliRunner()
    common = ["--config", str(cfg), "streamer", "clean", "--now", str(NOW), "--json"]
    # plan only: nothing deleted, no audit
    r = runner.invoke(cli, common)
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert [(d["label"], d["run"], d["rule"]) for d in plan["delete"]] == [
        ("TransferTest", 300005, "transfertest-age"),
        ("Data", 300001, "age"),
        ("Data", 300002, "done"),
    ]
    assert plan["total_bytes"] == 9000 and plan["after_bytes"] == QUOTA
    assert all(exists(rel) for rel in targets.values())
    assert audit_rows(cfg) == []

    # the task in dry-run: audit rows say what would go, nothing goes
    from t0dqm.tasks.streamer import streamer_cleanup

    config.reset(config.load(str(cfg)))
    try:
        res = streamer_cleanup.apply(kwargs={"dry_run": True, "now": NOW}).get()
    finally:
        config.reset(None)
    assert res["execution"]["deleted_files"] == 5 and res["execution"]["dry_run"] is True
    assert all(exists(rel) for rel in targets.values())
    dry = audit_rows(cfg)
    assert {a.action for a in dry} == {"dry-run-delete"} and len(dry) == 5

    # executed
    r = runner.invoke(cli, [*common, "--execute"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["execution"]["deleted_files"] == 5 and out["execution"]["deleted_bytes"] == 5000
    gone = {key for key, rel in targets.items() if not exists(rel)}
    assert gone == EXPECTED_GONE
    deleted = [a for a in audit_rows(cfg) if a.action == "delete"]
    assert sorted(a.path for a in deleted) == sorted(
        storage.join(base, targets[k]) if "://" in base else os.path.realpath(base + targets[k])
        for k in EXPECTED_GONE
    )
    assert all(a.size == 1000 and a.rule.startswith("streamer:") for a in deleted)
    reset_catalogs()


def test_streamer_cleanup_local(tmp_path: Path, done_url: str) -> None:
    area = tmp_path / "area"

    def put(rel: str, data: bytes) -> None:
        p = Path(str(area) + rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)

    cfg, targets = build(tmp_path, put, str(area), str(area), done_url)
    run_scenario(tmp_path, cfg, targets, lambda rel: Path(str(area) + rel).exists(), str(area))


def test_streamer_cleanup_xrootd(tmp_path: Path, done_url: str, xrootd_dir: str) -> None:
    src = tmp_path / "src"
    src.mkdir()

    def put(rel: str, data: bytes) -> None:
        f = src / "f"
        f.write_bytes(data)
        storage.copy(str(f), xrootd_dir + rel, timeout=30)
        f.unlink()

    cfg, targets = build(tmp_path, put, xrootd_dir, xrootd_dir, done_url)
    run_scenario(
        tmp_path, cfg, targets, lambda rel: storage.stat(xrootd_dir + rel, 10) is not None, xrootd_dir
    )
