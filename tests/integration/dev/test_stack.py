"""`t0dqm up` on the embedded defaults: worker answers ping, Flower lists it, Ctrl-C leaves nothing."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from t0dqm.dev import services


def test_up_ping_flower_and_clean_stop(tmp_path: Path) -> None:
    port = services.free_port()
    env = {**os.environ, "T0DQM_ROOT": str(tmp_path), "T0DQM_FLOWER__PORT": str(port)}
    env.pop("T0DQM_BROKER_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "t0dqm", "up"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "t0dqm up exited early:\n" + "".join(lines)
            lines.append(line)
            if line.startswith("ready"):
                break
        info = {line.split()[0]: line.split(None, 1)[1].strip() for line in lines if line.strip()}
        broker = info["broker"].split()[0]
        assert broker.startswith("redis://127.0.0.1:")
        state = json.loads((tmp_path / "dev" / "stack.json").read_text())
        pids = list(state["children"].values())
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "t0dqm", "-b", broker, "inspect", "ping"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
        flower_url = info["flower"].split()[0]
        auth = info["flower"].split("basic auth ")[1].rstrip(")")
        request = urllib.request.Request(
            f"{flower_url}/api/workers?refresh=1",
            headers={"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()},
        )
        workers = {}
        for _ in range(120):  # Flower asks the workers (inspect) on refresh
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    workers = json.load(reply)
                if workers:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        logs = tmp_path / "dev" / "logs"
        assert any(name.startswith("worker1@") for name in workers), (
            workers,
            (logs / "flower.log").read_text()[-3000:],
            (logs / "worker1.log").read_text()[-3000:],
        )
        unauth = urllib.request.Request(f"{flower_url}/api/workers")
        try:
            urllib.request.urlopen(unauth, timeout=5)
            raise AssertionError("Flower answered without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    assert "stopped" in out
    # the pool processes get SIGKILL from `up`; wait (bounded) for the end state instead of a fixed sleep
    deadline = time.monotonic() + 30
    while True:
        running = [pid for pid in pids if _running(pid)]
        leftovers = subprocess.run(
            ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
        ).stdout.split()
        if not (running or leftovers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert running == [], f"processes {running} still running"
    assert leftovers == [], leftovers
    assert not (tmp_path / "dev" / "stack.json").exists()


def _running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = subprocess.run(
        ["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return bool(stat.strip()) and not stat.strip().startswith("Z")
