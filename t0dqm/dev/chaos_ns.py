"""Simulated hosts on one machine for `t0dqm chaos --hosts N` (Linux, root).

A host is a UTS namespace (its own hostname) with its own PID namespace and /proc: its processes see only
each other, so nothing can tell a process of another host is dead from /proc or a pid, exactly as on
separate machines; liveness then has to come from the catalog. The host's first process (pid 1, a tiny
reaper) is started by ``unshare --uts --pid --fork --mount-proc``; each worker or beat of the host
enters its namespaces with ``nsenter``. Killing pid 1 makes the kernel SIGKILL every process of the
host at once: a host crash.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time

# pid 1 of a simulated host: set the hostname, say so, then reap orphans until killed.
INIT = """\
import os, socket, sys, time
socket.sethostname(sys.argv[1])
print("ready", flush=True)
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)
"""


def _pdeathsig_kill() -> None:
    """preexec_fn: SIGKILL when the chaos driver dies (unshare blocks SIGTERM while it waits), and its
    --kill-child then takes the whole host down."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def available() -> bool:
    """True when we may create simulated hosts here (root, unshare and nsenter, namespaces allowed)."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("nsenter")):
        return False
    try:
        probe = subprocess.run(
            [
                "unshare",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--",
                "sh",
                "-c",
                "hostname t0dqm-probe && hostname && echo $$",
            ],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0 and probe.stdout.split() == ["t0dqm-probe", "1"]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (not ``pid`` itself)."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children(child)
    return out


def inner_pid(pid: int) -> int | None:
    """The pid of a process as its own (innermost) PID namespace numbers it."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        return None
    return None


class SimulatedHost:
    """The namespaces of one simulated host, held by its pid 1."""

    def __init__(self, name: str, timeout: float = 20.0) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [
                "unshare",
                "--uts",
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
                sys.executable,
                "-c",
                INIT,
                name,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            # PR_SET_PDEATHSIG has no Popen option; the hook only calls prctl and setsid
            preexec_fn=_pdeathsig_kill,  # noqa: PLW1509 - prctl, setsid only
        )
        assert self.proc.stdout
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        self.proc.stdout.close()
        init = children(self.proc.pid)
        if line.strip() != b"ready" or len(init) != 1:
            self.kill()
            raise RuntimeError(f"simulated host {name} did not start")
        self.init_pid = init[0]

    def command(self, args: list[str], cwd: str) -> list[str]:
        """``args`` run inside this host (its hostname, pids and /proc), from ``cwd``."""
        return [
            "nsenter",
            "-t",
            str(self.init_pid),
            "--uts",
            "--pid",
            "--mount",
            "--",
            "sh",
            "-c",
            'cd "$0" && exec "$@"',
            cwd,
            *args,
        ]

    def kill(self) -> None:
        """SIGKILL pid 1: the kernel kills every process of the host."""
        for pid in (getattr(self, "init_pid", None), self.proc.pid):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
