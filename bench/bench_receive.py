"""Benchmark: DQM receive + import throughput and upload -> indexed latency, through a real Redis and
real Celery worker subprocesses.

    .venv/bin/python bench/bench_receive.py --files 2000 --rate 50

Phase 1 (burst): ``--files`` simulated uploads are dropped at once; throughput = files / (last indexed -
first upload). Phase 2 (steady): ``--steady`` uploads at ``--rate`` files/s; latency = indexed time (the
catalog's audit row) - upload time, p50 / p99. The bench plays beat: it sends ``receive.scan`` every
``--scan-interval`` seconds. Zip messages wait in the archive queue (no archive worker).

CPU: user+system seconds of every process of each worker (from /proc, by session), of redis-server and of
the bench itself (the uploader), per phase, divided by the phase's files. The machine may be shared: the
load average before and after each phase is printed with it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _templates(folder: Path, n_hists: int) -> dict[bool, Path]:
    """One strict (merged online) and one loose content file; uploads copy them under many names."""
    from t0dqm.dev import simulate

    folder.mkdir(parents=True, exist_ok=True)
    strict = folder / "strict.root"
    loose = folder / "loose.root"
    simulate.write_dqm_file(strict, 300001, simulate.SUBSYSTEMS[:6], n_hists=n_hists, strict=True)
    simulate.write_dqm_file(loose, 300001, simulate.SUBSYSTEMS[:4], n_hists=n_hists, strict=True)
    return {True: strict, False: loose}


def _sources(folder: Path, names: list[str], templates: dict[bool, Path]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name in names:
        target = folder / name
        strict = name.count("_") == 2 and "__" not in name  # DQM_V0001_R<run>.root: merged online
        shutil.copyfile(templates[strict], target)
        out.append(target)
    return out


def _percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def _indexed_times(catalog_url: str) -> dict[str, float]:
    """Upload path (relative to the dropbox) -> time its file was marked indexed."""
    from sqlalchemy import create_engine, text

    engine = create_engine(catalog_url)
    with engine.connect() as conn:
        received = {
            r[0]: r[1][5:]
            for r in conn.execute(text("SELECT entity_id, detail FROM audit WHERE action = 'receive'"))
        }
        indexed = {
            r[0]: r[1]
            for r in conn.execute(
                text("SELECT entity_id, at FROM audit WHERE action = 'index' AND to_state = 'indexed'")
            )
        }
    engine.dispose()
    return {received[i]: at for i, at in indexed.items() if i in received}


_TICK = os.sysconf("SC_CLK_TCK")


def _session_cpu(session: int) -> float:
    """User + system CPU seconds of the live processes of a session (a worker and its pool children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # fields[0] is field 3 (state); session is field 6
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def _pid_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def _cpu(meters: dict[str, object]) -> dict[str, float]:
    return {name: meter() for name, meter in meters.items()}  # type: ignore[operator]


def _run_phase(
    label: str,
    sources: list[Path],
    rate: float | None,
    dropbox: Path,
    catalog_url: str,
    scan_interval: float,
    timeout: float,
    meters: dict[str, object],
) -> dict[str, float]:
    from t0dqm.celery import app
    from t0dqm.formats import dropbox as dbx

    load_before = os.getloadavg()[0]
    cpu_before = _cpu(meters)
    uploaded: dict[str, float] = {}
    start = time.time()
    next_scan = 0.0
    interval = 1.0 / rate if rate else 0.0
    for i, src in enumerate(sources):
        if rate:
            delay = start + i * interval - time.time()
            if delay > 0:
                time.sleep(delay)
        path = dbx.upload(src, dropbox)
        uploaded[str(path.relative_to(dropbox))] = time.time()
        if time.time() >= next_scan:
            app.send_task("t0dqm.tasks.receive.scan")
            next_scan = time.time() + scan_interval
    deadline = time.time() + timeout
    while True:
        done = _indexed_times(catalog_url)
        got = {k: v for k, v in done.items() if k in uploaded}
        if len(got) >= len(uploaded) or time.time() > deadline:
            break
        if time.time() >= next_scan:
            app.send_task("t0dqm.tasks.receive.scan")
            next_scan = time.time() + scan_interval
        time.sleep(0.2)
    latencies = [got[k] - uploaded[k] for k in got]
    first, last = min(uploaded.values()), max(got.values()) if got else time.time()
    cpu_after = _cpu(meters)
    cpu = {name: 1000 * (cpu_after[name] - cpu_before[name]) / max(1, len(uploaded)) for name in meters}
    return {
        "phase": label,
        "files": len(uploaded),
        "indexed": len(got),
        "cpu": cpu,
        "load": (load_before, os.getloadavg()[0]),
        "seconds": last - first,
        "files_per_s": len(got) / (last - first) if got else 0.0,
        "p50": _percentile(latencies, 50),
        "p99": _percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
        "mean": statistics.fmean(latencies) if latencies else float("nan"),
    }


def _redis_pid(url: str) -> int:
    import redis as redislib

    try:
        return int(redislib.Redis.from_url(url).info("server")["process_id"])
    except Exception:  # noqa: BLE001 - CPU accounting only
        return -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000, help="burst phase uploads")
    parser.add_argument("--steady", type=int, default=1000, help="steady phase uploads")
    parser.add_argument("--rate", type=float, default=50.0, help="steady phase upload rate (files/s)")
    parser.add_argument("--hists", type=int, default=200, help="histograms per file")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=os.cpu_count() or 2,
        help="prefork processes of the receive+index worker",
    )
    parser.add_argument("--scan-interval", type=float, default=0.5)
    parser.add_argument("--per-task", type=int, default=25, help="uploads per receive_batch message")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the tmp root")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="t0dqm-bench-receive-"))
    from t0dqm.dev import services

    redis = services.start_redis(tmp / "redis", persistent=False)
    redis_pid = _redis_pid(redis.url)
    env = dict(
        os.environ,
        T0DQM_ROOT=str(tmp / "root"),
        T0DQM_FLAVOUR="dev",
        T0DQM_BROKER_URL=redis.url,
        T0DQM_RECEIVE__BATCH="5000",
        T0DQM_RECEIVE__PER_TASK=str(args.per_task),
        PYTHONPATH=str(REPO),
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("T0DQM_")})
    from t0dqm import celery as t0celery
    from t0dqm import config
    from t0dqm.catalog.db import get_catalog

    settings = config.load()
    t0celery.reload(settings)
    get_catalog(settings.catalog_url)  # schema before the workers start
    celery = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "t0dqm",
        "worker",
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    prefix = settings.queue_prefix
    logs = tmp / "logs"
    logs.mkdir()
    workers = [
        subprocess.Popen(
            [*celery, "-Q", f"{prefix}receive,{prefix}index", "-c", str(args.concurrency), "-n", "recv@%h"],
            env=env,
            cwd=REPO,
            stdout=open(logs / "recv.log", "w"),  # noqa: SIM115 - the worker's log, open while it runs
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
        subprocess.Popen(
            [*celery, "-Q", f"{prefix}index-merge,{prefix}ops", "-c", "1", "-n", "merge@%h"],
            env=env,
            cwd=REPO,
            stdout=open(logs / "merge.log", "w"),  # noqa: SIM115 - the worker's log, open while it runs
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ),
    ]
    try:
        from t0dqm.dev import simulate

        t0celery.app.control.ping(timeout=1.0)
        time.sleep(3.0)  # workers boot
        templates = _templates(tmp / "templates", args.hists)
        names = simulate.make_names(args.files + args.steady, seed=5)
        random.Random(1).shuffle(names)
        sources = _sources(tmp / "producer", names, templates)
        meters: dict[str, object] = {
            "receive worker": lambda: _session_cpu(workers[0].pid),
            "merge worker": lambda: _session_cpu(workers[1].pid),
            "redis": lambda: _pid_cpu(redis_pid),
            "bench (uploads)": lambda: _pid_cpu(os.getpid()),
        }
        results = [
            _run_phase(
                "burst",
                sources[: args.files],
                None,
                settings.dropbox,
                settings.catalog_url,
                args.scan_interval,
                args.timeout,
                meters,
            ),
            _run_phase(
                f"steady {args.rate:g}/s",
                sources[args.files :],
                args.rate,
                settings.dropbox,
                settings.catalog_url,
                args.scan_interval,
                args.timeout,
                meters,
            ),
        ]
        import redis as redislib

        metrics = {
            k.decode(): float(v)
            for k, v in redislib.Redis.from_url(redis.url)
            .hgetall(f"{t0celery.app.conf.t0dqm_prefix}metrics:tasks")
            .items()
        }
    finally:
        for w in workers:
            try:
                os.killpg(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for w in workers:
            try:
                w.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(w.pid, signal.SIGKILL)
        redis.stop()
    size = templates[False].stat().st_size
    print(
        f"\nreceive + import, {args.hists} histograms/file (~{size // 1024} KiB), {os.cpu_count()} CPUs, "
        f"worker -c {args.concurrency} + merge -c 1, scan every {args.scan_interval:g} s, "
        f"{args.per_task} uploads per receive_batch"
    )
    print(
        f"{'phase':<16}{'files':>7}{'indexed':>9}{'seconds':>9}{'files/s':>9}{'p50 s':>8}{'p99 s':>8}{'max s':>8}"
    )
    for r in results:
        print(
            f"{r['phase']:<16}{r['files']:>7}{r['indexed']:>9}{r['seconds']:>9.1f}{r['files_per_s']:>9.1f}"
            f"{r['p50']:>8.2f}{r['p99']:>8.2f}{r['max']:>8.2f}"
        )
    print("\nCPU ms per file (user + system), and the 1-minute load average before -> after the phase:")
    names = list(results[0]["cpu"])
    print(f"{'phase':<16}" + "".join(f"{n:>18}" for n in names) + f"{'workers':>10}{'load':>14}")
    for r in results:
        workers_ms = r["cpu"]["receive worker"] + r["cpu"]["merge worker"]
        print(
            f"{r['phase']:<16}" + "".join(f"{r['cpu'][n]:>18.1f}" for n in names) + f"{workers_ms:>10.1f}"
            f"{r['load'][0]:>7.2f}->{r['load'][1]:<5.2f}"
        )
    print("\ntask time in workers (sum over all calls):")
    for key in sorted(k for k in metrics if k.endswith(":seconds")):
        task = key[: -len(":seconds")]
        calls = metrics.get(f"{task}:ok", 0) + metrics.get(f"{task}:error", 0)
        print(
            f"  {task:<40}{calls:>7.0f} calls {metrics[key]:>8.1f} s  {1000 * metrics[key] / max(calls, 1):>7.1f} ms/call"
        )
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
