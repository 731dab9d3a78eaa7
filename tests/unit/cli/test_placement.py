"""CLI: t0dqm t0 size-check|dataset."""

from __future__ import annotations

import json

from click.testing import CliRunner

from t0dqm.cli import cli
from t0dqm.policies.size_limits import GiB


def run(*args):
    return CliRunner().invoke(cli, list(args))


def test_size_check():
    r = run("t0", "size-check", "--kind", "streamer", str(80 * GiB + 1))
    assert json.loads(r.stdout) == {"kind": "streamer", "bytes": 80 * GiB + 1, "verdict": "refuse"}
    r = run("t0", "size-check", "--kind", "raw", str(24 * GiB))
    assert json.loads(r.stdout)["verdict"] == "soft"


def test_dataset_cli():
    r = run(
        "t0",
        "dataset",
        "build",
        "express",
        "--pd",
        "StreamExpress",
        "--era",
        "Run2022D",
        "--version",
        "2",
        "--tier",
        "DQM",
    )
    assert r.exit_code == 0 and r.stdout.strip() == "/StreamExpress/Run2022D-Express-v2/DQM"
    r = run("t0", "dataset", "parse", "/Muon/Run2022D-TkAlZMuMu-PromptReco-v2/ALCARECO")
    assert json.loads(r.stdout) == {
        "kind": "promptreco",
        "pd": "Muon",
        "era": "Run2022D",
        "version": 2,
        "tier": "ALCARECO",
        "alca": "TkAlZMuMu",
    }
    r = run("t0", "dataset", "parse", "/Muon/Run2022D-v1/AOD")
    assert r.exit_code == 1
    r = run("t0", "dataset", "build", "repack", "--pd", "M", "--era", "E", "--version", "1", "--tier", "AOD")
    assert r.exit_code == 1
