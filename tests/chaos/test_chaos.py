"""The CI version of `t0dqm chaos`: about 100 files through the whole chain with a few faults of each
kind (worker SIGKILLs, Redis restarted empty, XRootD outage, corrupted copies, a duplicate upload,
catalog disk full when root); every invariant must hold."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.chaos.helpers import run_chaos


@pytest.mark.timeout(1500)
def test_chaos_short(tmp_path: Path) -> None:
    result, _ = run_chaos(
        tmp_path,
        [
            "--files",
            "100",
            "--seed",
            "3",
            "--kills",
            "8",
            "--redis-restarts",
            "2",
            "--xrootd-outage",
            "10",
            "--corruptions",
            "3",
            "--broken",
            "6",
            "--timeout",
            "900",
        ],
        timeout=1200,
    )
    assert result["ok"] and result["quiescent"]
    assert result["lost"] == 0 and result["deletions before verification"] == 0
    assert result["files indexed exactly once"] == result["files in"] == 101  # 100 + the duplicate
    assert result["files in exactly one verified archive"] == 101
    assert result["quarantined with reason"] == 6
    faults = result["faults"]
    kills = sum(v for k, v in faults.items() if k.startswith("kill"))
    assert kills == 8
    assert faults["redis-restart-empty"] == 2 and faults["xrootd-outage"] == 1
    assert faults["duplicate-upload"] == 1 and faults.get("corrupt-copy", 0) >= 1
    if os.geteuid() == 0:
        assert faults["catalog-disk-full"] == 2
