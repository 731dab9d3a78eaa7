"""`t0dqm classify`: JSON lines in input order, exit status 0 iff every name is ok."""

from __future__ import annotations

import calendar
import json
import os

from click.testing import CliRunner

from t0dqm.cli import cli

KEYS = [
    "name",
    "ok",
    "class",
    "run",
    "version",
    "dataset",
    "subsystem",
    "era",
    "primds",
    "procds",
    "tier",
    "release",
    "path",
    "zippat",
]
OFFLINE = "DQM_V0001_R000316000__ZeroBias__Run2018A-17Sep2018-v1__DQMIO.root"
SIMULATED = "DQM_V0001_R000000001__MinBias__RunIISummer20UL18-v1__DQMIO.root"


def run(*args):
    result = CliRunner().invoke(cli, ["classify", *args])
    lines = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    return result, lines


def test_all_ok_exit_zero():
    result, lines = run("DQM_V0001_Ecal_R000123456.root", OFFLINE)
    assert result.exit_code == 0, result.output
    assert [d["name"] for d in lines] == ["DQM_V0001_Ecal_R000123456.root", OFFLINE]
    for d in lines:
        assert list(d) == KEYS
        assert d["ok"] is True
    online, offline = lines
    assert online["class"] == "online_data" and online["subsystem"] == "Ecal"
    assert online["era"] is None and online["primds"] is None and online["release"] is None
    assert online["dataset"] == "/Global/Online/ALL"
    assert online["path"] == "OnlineData/00012xxxx/0001234xx/DQM_V0001_Ecal_R000123456.root"
    assert online["zippat"] == "OnlineData/00012xxxx/DQM_Online_R0001234xx_S%04d.zip"
    assert offline["class"] == "offline_data" and offline["era"] == "Run2018" and offline["tier"] == "DQMIO"


def test_mixed_keeps_order_and_exits_one():
    names = ["bad.root", "DQM_V0001_R000123456.root", "DQM_V0002_R000123456.root"]
    result, lines = run(*names)
    assert result.exit_code == 1
    assert [d["name"] for d in lines] == names
    assert lines[0] == {
        "name": "bad.root",
        "ok": False,
        "error": "file name matches no known naming convention",
    }
    assert lines[1]["ok"] is True and lines[1]["subsystem"] is None
    assert lines[2]["ok"] is False and "version" in lines[2]["error"]
    assert set(lines[2]) == {"name", "ok", "error"}


def test_mtime_option_and_file_mtime(tmp_path):
    when = calendar.timegm((2023, 5, 2, 0, 0, 0))
    result, lines = run("--mtime", str(when), SIMULATED)
    assert result.exit_code == 0
    assert lines[0]["zippat"] == "MonteCarlo/RunIISummer20/DQM_MC_RunIISummer20_MinBias_202305_S%04d.zip"
    path = tmp_path / SIMULATED
    path.write_bytes(b"x")
    later = calendar.timegm((2022, 11, 30, 0, 0, 0))
    os.utime(path, (later, later))
    result, lines = run(str(path))
    assert result.exit_code == 0
    assert lines[0]["name"] == str(path)
    assert lines[0]["zippat"].endswith("_202211_S%04d.zip")
    assert lines[0]["path"] == "MonteCarlo/RunIISummer20/" + SIMULATED


def test_requires_a_name():
    result = CliRunner().invoke(cli, ["classify"])
    assert result.exit_code != 0
