"""A real `celery -A t0dqm worker` subprocess for tests (started and stopped by its own pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def t0dqm_env(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("T0DQM_")}
    env.update(T0DQM_ROOT=str(root), T0DQM_FLAVOUR="dev", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@contextmanager
def worker(root: Path, queues: str, log: Path, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run a worker consuming ``queues`` with the T0DQM_* ``env``; SIGTERM (then SIGKILL) on exit."""
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "t0dqm",
                "worker",
                "-Q",
                queues,
                "-c",
                "2",
                "-P",
                "prefork",
                "-n",
                f"corpus{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "--loglevel",
                "INFO",
            ],
            cwd=REPO,
            env=t0dqm_env(root, **env),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of ``proc`` (started with start_new_session), SIGKILL what is left."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # pool children left behind
    except ProcessLookupError:
        pass


def point_app(settings: object) -> None:
    """Re-point the t0dqm app at ``settings`` (broker, backend, SSL); see t0dqm.celery.reload."""
    from t0dqm import celery as t0celery

    t0celery.reload(settings)  # type: ignore[arg-type]
