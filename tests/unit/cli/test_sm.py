"""CLI: t0dqm sm plan|occupancy."""

from __future__ import annotations

import json

from click.testing import CliRunner

from t0dqm.cli import cli

NOW = 1_700_000_000
DAY = 86400


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_sm_plan(tmp_path):
    listing = tmp_path / "l.jsonl"
    rows = [
        {
            "path": "/p/b",
            "run": 1,
            "size": 5,
            "mtime": NOW - 4 * DAY,
            "checked": True,
            "repacked": False,
            "tier0_off": False,
        },
        {
            "path": "/p/a",
            "run": 1,
            "size": 7,
            "mtime": NOW,
            "checked": True,
            "repacked": True,
            "tier0_off": False,
        },
        {
            "path": "/p/c",
            "run": 3,
            "size": 9,
            "mtime": NOW - 9 * DAY,
            "checked": False,
            "repacked": False,
            "tier0_off": False,
        },
    ]
    listing.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = run("sm", "plan", "--listing", str(listing), "--occupancy", "0.45", "--now", str(NOW), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {
        "delete": [
            {"path": "/p/a", "rule": "repacked", "unchecked": False},
            {"path": "/p/b", "rule": "occupancy", "unchecked": False},
        ],
        "bytes": 12,
    }
    r = run(
        "sm",
        "plan",
        "--listing",
        str(listing),
        "--occupancy",
        "0.45",
        "--mode",
        "age",
        "--now",
        str(NOW),
        "--json",
    )
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out == {"delete": [{"path": "/p/c", "rule": "run-age", "unchecked": True}], "bytes": 9}
    assert "ALARM" in r.stderr


def test_sm_occupancy_statvfs(tmp_path):
    r = run("sm", "occupancy", str(tmp_path))
    assert r.exit_code == 0 and 0.0 <= float(r.stdout) <= 1.0
