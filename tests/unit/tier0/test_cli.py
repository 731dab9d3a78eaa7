from __future__ import annotations

import json

from click.testing import CliRunner

from t0dqm.cli import cli
from t0dqm.policies.size_limits import GiB

from .helpers import DAY, NOW, line, unit_lines, write_dump


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_streamer_plan_json(tmp_path):
    lines = (unit_lines("Data", "B", 300002, [100], NOW - 400 * DAY)
             + unit_lines("Data", "A", 300002, [100], NOW - 400 * DAY)
             + unit_lines("Minidaq", "A", 300001, [100], NOW - DAY)
             + unit_lines("Data", "A", 300003, [100], NOW - 400 * DAY)
             + unit_lines("TransferTest", "T", 300009, [7, 8], NOW - 8 * DAY))
    dump = write_dump(tmp_path / "d.gz", lines)
    skip = tmp_path / "skip.txt"
    skip.write_text("300003\n")
    r = run("streamer", "plan", "--dump", str(dump), "--quota", "150", "--skip-runs", str(skip),
            "--now", str(NOW), "--max-dump-age", "1e12", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert list(out) == ["total_bytes", "quota_bytes", "after_bytes", "delete"]
    assert out["total_bytes"] == 400 and out["quota_bytes"] == 150 and out["after_bytes"] == 200
    assert [(d["label"], d["stream"], d["run"], d["rule"]) for d in out["delete"]] == [
        ("TransferTest", "T", 300009, "transfertest-age"), ("Data", "A", 300002, "age"),
        ("Data", "B", 300002, "age")]
    assert out["delete"][0]["files"] == 2 and out["delete"][0]["bytes"] == 15


def test_streamer_plan_refuses_truncated(tmp_path):
    dump = write_dump(tmp_path / "d.gz", unit_lines("Data", "A", 300001, [1] * 3000, NOW))
    dump.write_bytes(dump.read_bytes()[:-100])
    r = run("streamer", "plan", "--dump", str(dump), "--max-dump-age", "1e12", "--json")
    assert r.exit_code == 1
    assert "refused" in r.output


def test_streamer_clean_without_execute_deletes_nothing(tmp_path):
    f = tmp_path / "store/t0streamer/Data/A/000/300/001/run300001_ls0001_streamA_StorageManager.dat"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"x" * 10)
    dump = write_dump(tmp_path / "d.gz", [line(str(f), 10, NOW - 400 * DAY)])
    r = run("streamer", "clean", "--dump", str(dump), "--quota", "0", "--now", str(NOW),
            "--max-dump-age", "1e12", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delete"][0]["rule"] == "age"
    assert f.exists()


def test_sm_plan(tmp_path):
    listing = tmp_path / "l.jsonl"
    rows = [{"path": "/p/b", "run": 1, "size": 5, "mtime": NOW - 4 * DAY, "checked": True, "repacked": False,
             "tier0_off": False},
            {"path": "/p/a", "run": 1, "size": 7, "mtime": NOW, "checked": True, "repacked": True,
             "tier0_off": False},
            {"path": "/p/c", "run": 3, "size": 9, "mtime": NOW - 9 * DAY, "checked": False, "repacked": False,
             "tier0_off": False}]
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run("sm", "plan", "--listing", str(listing), "--occupancy", "0.45", "--now", str(NOW), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"delete": [{"path": "/p/a", "rule": "repacked", "unchecked": False},
                                               {"path": "/p/b", "rule": "occupancy", "unchecked": False}],
                                    "bytes": 12}
    r = run("sm", "plan", "--listing", str(listing), "--occupancy", "0.45", "--mode", "age", "--now", str(NOW),
            "--json")
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out == {"delete": [{"path": "/p/c", "rule": "run-age", "unchecked": True}], "bytes": 9}
    assert "ALARM" in r.stderr


def test_sm_occupancy_statvfs(tmp_path):
    r = run("sm", "occupancy", str(tmp_path))
    assert r.exit_code == 0 and 0.0 <= float(r.stdout) <= 1.0


def test_size_check():
    r = run("t0", "size-check", "--kind", "streamer", str(80 * GiB + 1))
    assert json.loads(r.stdout) == {"kind": "streamer", "bytes": 80 * GiB + 1, "verdict": "refuse"}
    r = run("t0", "size-check", "--kind", "raw", str(24 * GiB))
    assert json.loads(r.stdout)["verdict"] == "soft"


def test_dataset_cli():
    r = run("t0", "dataset", "build", "express", "--pd", "StreamExpress", "--era", "Run2022D", "--version", "2",
            "--tier", "DQM")
    assert r.exit_code == 0 and r.stdout.strip() == "/StreamExpress/Run2022D-Express-v2/DQM"
    r = run("t0", "dataset", "parse", "/Muon/Run2022D-TkAlZMuMu-PromptReco-v2/ALCARECO")
    assert json.loads(r.stdout) == {"kind": "promptreco", "pd": "Muon", "era": "Run2022D", "version": 2,
                                    "tier": "ALCARECO", "alca": "TkAlZMuMu"}
    r = run("t0", "dataset", "parse", "/Muon/Run2022D-v1/AOD")
    assert r.exit_code == 1
    r = run("t0", "dataset", "build", "repack", "--pd", "M", "--era", "E", "--version", "1", "--tier", "AOD")
    assert r.exit_code == 1
