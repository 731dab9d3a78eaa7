"""Who holds a claim: an identity per process, unique across hosts and restarts (principle 6).

A process identity is ``host:pid:token``: the configured ``host`` (else the hostname), the pid, and a
random token drawn once per process (again after fork), so two hosts with the same name, or a pid
reused after a restart, never share one. Claims and leases are held by ``identity:thread[:more]``.

Liveness is decided by the process's heartbeat row in the catalog (t0dqm.heartbeat), never by the
hostname. The one shortcut: a holder that ran on this very kernel and pid namespace (same boot id and
namespace inode, recorded in its heartbeat as its *locator*) is dead as soon as its pid is gone or
belongs to a process started at another time; that is a fact, whatever the hosts are called.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import string
import threading
from pathlib import Path

_TOKEN_LETTERS = string.ascii_lowercase
_TOKEN_LEN = 10
_IDENTITY = re.compile(rf"^([^:]+):(\d+):([a-z]{{{_TOKEN_LEN}}})(?::|$)")

_lock = threading.Lock()
_current: tuple[int, str] | None = None  # (pid, identity)


def host_name() -> str:
    """The host part: config key ``host`` when set, else the hostname (':' would break parsing)."""
    try:
        from t0dqm import config

        configured = config.get().model.host or ""
    except Exception:  # noqa: BLE001 - identity must not depend on a readable configuration
        configured = ""
    return (configured or socket.gethostname()).replace(":", "_")


def process_identity() -> str:
    """This process's identity, ``host:pid:token``; a new one after fork."""
    global _current
    pid = os.getpid()
    with _lock:
        if _current is None or _current[0] != pid:
            token = "".join(secrets.choice(_TOKEN_LETTERS) for _ in range(_TOKEN_LEN))
            _current = (pid, f"{host_name()}:{pid}:{token}")
        return _current[1]


def worker_identity() -> str:
    """The owner string of claims taken by this thread."""
    return f"{process_identity()}:{threading.get_ident()}"


def holder_process(owner: str | None) -> str | None:
    """The process identity inside a claim or lease owner; None for owners without one (legacy
    ``host:pid:thread`` owners, fixed names such as ``beat``): those only expire."""
    if not owner:
        return None
    match = _IDENTITY.match(owner)
    return f"{match.group(1)}:{match.group(2)}:{match.group(3)}" if match else None


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[-1].split()
    except OSError:
        return None
    if not fields or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def locator(pid: int | None = None) -> str:
    """``boot_id/pid-namespace/pid/start-time`` of a process on this machine ('' if unknown)."""
    pid = pid or os.getpid()
    boot, ns, start = _read("/proc/sys/kernel/random/boot_id"), _pid_namespace(), _start_time(pid)
    if not (boot and ns and start):
        return ""
    return f"{boot}/{ns}/{pid}/{start}"


def gone_from_this_machine(where: str | None) -> bool:
    """True only when ``where`` (a locator) names this kernel and pid namespace and that process no
    longer runs; False whenever it cannot be known (another machine, a container, no /proc)."""
    if not where:
        return False
    parts = where.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    boot, ns, pid, start = parts
    if boot != _read("/proc/sys/kernel/random/boot_id") or ns != _pid_namespace() or not boot or not ns:
        return False
    return _start_time(int(pid)) != start
