"""`t0dqm demo`: the main job end to end on the embedded stack, producers on two hosts included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path


def test_demo_runs_the_chain_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("T0DQM_")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "t0dqm",
            "demo",
            "--root",
            str(tmp_path),
            "--files",
            "12",
            "--broken",
            "5",
            "--timeout",
            "240",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    counts = {
        m[0].strip(): int(m[1]) for m in re.findall(r"^\s*(\S.*?)\s{2,}(\d+)$", run.stdout, re.MULTILINE)
    }
    assert counts["files in (good)"] == 22 and counts["of which collected on producer hosts"] == 10
    assert counts["in a verified archive"] == 22 and counts["quarantined with reason"] == 5
    assert "OK: all work done, nothing lost" in run.stdout
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []
