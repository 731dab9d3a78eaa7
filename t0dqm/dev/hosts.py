"""Run a command as if on another host (tests, benchmarks, chaos): its own UTS namespace and hostname
when we are root (``unshare --uts --fork``), else only the configured identity host (``T0DQM_HOST``)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any


def can_rename() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def host_argv(hostname: str, argv: list[str], own_pids: bool = False) -> list[str]:
    """``argv`` run with hostname ``hostname`` (needs root; see can_rename). ``own_pids``: also its own
    pid namespace, as on another machine (this host's /proc cannot see it; killing the returned
    process kills it too)."""
    pids = ["--pid", "--mount-proc", "--kill-child=SIGKILL"] if own_pids else []
    return [
        "unshare",
        "--uts",
        *pids,
        "--fork",
        "sh",
        "-c",
        f'hostname "{hostname}" && exec "$@"',
        "sh",
        *argv,
    ]


def on_host(
    hostname: str, argv: list[str], env: dict[str, str], own_pids: bool = False, **kwargs: Any
) -> subprocess.Popen[str]:
    """Start ``argv`` on host ``hostname`` (renamed UTS namespace when root, T0DQM_HOST otherwise)."""
    if can_rename():
        argv = host_argv(hostname, argv, own_pids)
        env = {k: v for k, v in env.items() if k != "T0DQM_HOST"}
    else:
        env = dict(env, T0DQM_HOST=hostname)
    return subprocess.Popen(argv, env=env, text=True, **kwargs)
