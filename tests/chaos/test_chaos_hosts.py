"""The CI version of `t0dqm chaos --hosts 3`: 80 files through the whole chain with the workers on three
simulated hosts (UTS namespaces, as root), one PostgreSQL catalog and one Redis with a password, while
the archive host is SIGKILLed whole and replaced by a host with another name, the beat leader and the
index-merge worker are killed, plus a few single-host faults. The invariants and the bounds that do not
depend on timing must hold: nothing lost, nothing deleted before verification, every file indexed once
and in one verified archive, the dead host's work taken over, and no queue holding more per-item messages than
its pending items plus 50 at any sample."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.chaos.helpers import run_chaos


@pytest.mark.timeout(1200)
def test_chaos_three_hosts(tmp_path: Path, pg_url: str) -> None:
    result, out = run_chaos(
        tmp_path,
        [
            "--files",
            "80",
            "--seed",
            "5",
            "--hosts",
            "3",
            "--catalog-url",
            pg_url,
            "--kills",
            "4",
            "--redis-restarts",
            "1",
            "--xrootd-outage",
            "5",
            "--corruptions",
            "1",
            "--broken",
            "3",
            "--host-kills",
            "1",
            "--beat-kills",
            "1",
            "--merge-kills",
            "1",
            "--replace-delay",
            "3",
            "--beat-restart-delay",
            "30",
            "--merge-restart-delay",
            "20",
            "--timeout",
            "700",
        ],
        timeout=1000,
    )
    assert result["ok"] and result["quiescent"], out[-8000:]
    assert result["lost"] == 0 and result["deletions before verification"] == 0
    assert result["files indexed exactly once"] == result["files in"] == 81  # 80 + the duplicate
    assert result["files in exactly one verified archive"] == 81
    assert result["quarantined with reason"] == 3
    assert result["per-item messages <= pending + 50 at every sample"], json.dumps(result["queues"], indent=1)
    assert result["queue samples"] > 0
    faults = result["faults"]
    assert faults["beat-leader-kill"] == 1 and faults["merge-worker-kill"] == 1
    assert faults["redis-restart-empty"] == 1 and faults["xrootd-outage"] == 1
    assert sum(v for k, v in faults.items() if k.startswith("kill")) == 4
    assert result["messages per file"]["task runs"]["all tasks"] > 0
    if os.geteuid() == 0:  # simulated hosts need root; without it the run says so and uses one host
        assert result["simulated hosts (UTS namespaces)"] is True
        assert faults["host-kill"] == 1
        kill = next(v for k, v in result.items() if k.startswith("host-kill"))
        assert kill["replacement"] == "hostD" and "hostD" in result["hosts"]
        assert kill["never taken over"] == 0
        assert "(killed)" in result["hosts"]["hostB"]
    else:
        assert "need root" in out
