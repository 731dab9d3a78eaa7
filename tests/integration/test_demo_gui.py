"""`t0dqm demo --gui-url URL`: the demo's files are registered with the GUI (a loopback server that answers
as the new DQM GUI does) and the demo waits until the GUI has them all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.gui_server import fake_gui


def test_demo_registers_its_files_with_the_gui(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("T0DQM_")}
    with fake_gui() as gui:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "t0dqm",
                "demo",
                "--root",
                str(tmp_path),
                "--files",
                "6",
                "--broken",
                "1",
                "--timeout",
                "240",
                "--gui-url",
                gui.url,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            check=False,
        )
        registered = gui.files()
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    counts = {
        m[0].strip(): int(m[1]) for m in re.findall(r"^\s*(\S.*?)\s{2,}(\d+)$", run.stdout, re.MULTILINE)
    }
    n_good = counts["files in (good)"]
    assert counts["registered with the DQM GUI"] == n_good == len(registered) == 16
    assert all(Path(f).is_file() and str(tmp_path) in f for f in registered)
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftovers == []
