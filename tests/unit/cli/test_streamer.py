"""CLI: t0dqm streamer plan|clean."""

from __future__ import annotations

import json

from click.testing import CliRunner

from t0dqm.cli import cli
from tests.unit.formats.eosdump_helpers import DAY, NOW, line, unit_lines, write_dump


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_streamer_plan_json(tmp_path):
    lines = (
        unit_lines("Data", "B", 300002, [100], NOW - 400 * DAY)
        + unit_lines("Data", "A", 300002, [100], NOW - 400 * DAY)
        + unit_lines("Minidaq", "A", 300001, [100], NOW - DAY)
        + unit_lines("Data", "A", 300003, [100], NOW - 400 * DAY)
        + unit_lines("TransferTest", "T", 300009, [7, 8], NOW - 8 * DAY)
    )
    dump = write_dump(tmp_path / "d.gz", lines)
    skip = tmp_path / "skip.txt"
    skip.write_text("300003\n")
    r = run(
        "streamer",
        "plan",
        "--dump",
        str(dump),
        "--quota",
        "150",
        "--skip-runs",
        str(skip),
        "--now",
        str(NOW),
        "--max-dump-age",
        "1e12",
        "--json",
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert list(out) == ["total_bytes", "quota_bytes", "after_bytes", "delete"]
    assert out["total_bytes"] == 400 and out["quota_bytes"] == 150 and out["after_bytes"] == 200
    assert [(d["label"], d["stream"], d["run"], d["rule"]) for d in out["delete"]] == [
        ("TransferTest", "T", 300009, "transfertest-age"),
        ("Data", "A", 300002, "age"),
        ("Data", "B", 300002, "age"),
    ]
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
    r = run(
        "streamer",
        "clean",
        "--dump",
        str(dump),
        "--quota",
        "0",
        "--now",
        str(NOW),
        "--max-dump-age",
        "1e12",
        "--json",
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delete"][0]["rule"] == "age"
    assert f.exists()
