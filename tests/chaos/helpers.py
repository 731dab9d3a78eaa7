"""Run `t0dqm chaos` as a user would and read its result file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_chaos(root: Path, args: list[str], timeout: float) -> tuple[dict[str, Any], str]:
    """(the JSON result, the output) of `t0dqm chaos --root ROOT ARGS`; it must exit 0. A hung run gets
    TERM, which makes chaos stop waiting, audit, report and stop its processes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("T0DQM_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t0dqm", "chaos", "--root", str(root), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-8000:]
    return json.loads((root / "chaos-result.json").read_text()), out
