"""Benchmark: queue depth through a consumer outage, with and without the one-message-per-(step, item) markers.

    .venv/bin/python bench/bench_outage.py --files 250 --outage 600

A private Redis and a SQLite catalog. ``--files`` simulated files are received; the first half is zipped
into archives that are frozen (waiting for the tape stage), the second half waits for import and zip. Then
every consumer but ``ops`` is down for ``--outage`` simulated seconds: the bench plays beat on that clock,
sending the periodic tasks through celery.beat.Scheduler.apply_async and running ``reconcile`` and
``tape.verify_due`` (the ops host is up) when they are due. Everything is stale at once
(reconcile.stale_seconds = 0): the worst case. Two beat timings: production defaults and the chaos run's.

"before": the markers off (every send goes out, as before issue 10); "after": as shipped. Reports the
pending (step, item) pairs, the largest total queue depth seen, and the messages sent.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TIMINGS = {  # seconds between beat ticks: reconcile, tape-verify, zip-freeze, index-merge, receive-scan
    "production": {"reconcile": 60, "verify": 900, "freeze": 900, "merge": 10, "scan": 5},
    "chaos": {"reconcile": 5, "verify": 3, "freeze": 3, "merge": 2, "scan": 1},
}
QUEUES = ("receive", "index", "index-merge", "archive", "tape", "ops")


def setup(root: Path, broker: str, files: int) -> Any:
    from sqlalchemy import select

    from t0dqm import celery as t0celery
    from t0dqm import config
    from t0dqm.catalog import states
    from t0dqm.catalog.db import archives, get_catalog
    from t0dqm.dev import simulate
    from t0dqm.formats import dropbox
    from t0dqm.steps.receive import Receiver

    env = {
        "T0DQM_ROOT": str(root),
        "T0DQM_FLAVOUR": "dev",
        "T0DQM_BROKER_URL": broker,
        "T0DQM_RECONCILE__STALE_SECONDS": "0",
    }
    settings = config.load(None, environ=env)
    config.reset(settings)
    t0celery.reload(settings)
    for module in t0celery.TASK_MODULES:
        importlib.import_module(module)
    from t0dqm.tasks import archive

    simulate.simulate(root / "producer", files, seed=3, n_hists=3, dropbox=settings.dropbox)
    catalog = get_catalog(settings.catalog_url)
    outcomes = Receiver(settings, catalog).receive_many([c.path for c in dropbox.scan(settings.dropbox)])
    ids = [o.file_id for o in outcomes if o.status == "filed"]
    for file_id in ids[: len(ids) // 2]:
        archive.zip_file(file_id)
    with catalog.read() as conn:
        open_ids = [r[0] for r in conn.execute(select(archives.c.id).where(archives.c.state == states.OPEN))]
    archive.freeze(archive_ids=open_ids)
    return settings


def pending(settings: Any) -> int:
    """(step, item) pairs reconcile would resume now."""
    import time

    from t0dqm.catalog.db import get_catalog
    from t0dqm.steps.reconcile import RECOVERERS

    with get_catalog(settings.catalog_url).read() as conn:
        return sum(len(list(fn(conn, settings, time.time()))) for fn in RECOVERERS.values())


def outage(settings: Any, client: Any, seconds: int, timing: dict[str, int]) -> dict[str, Any]:
    from celery.beat import ScheduleEntry, Scheduler
    from celery.schedules import schedule

    from t0dqm.celery import app, queue_name
    from t0dqm.tasks.reconcile import reconcile
    from t0dqm.tasks.tape import verify_due

    scheduler = Scheduler(app, lazy=True)
    beat = {
        key: ScheduleEntry(name=key, task=task, schedule=schedule(float(timing[key])), app=app)
        for key, task in (
            ("freeze", "t0dqm.tasks.archive.freeze"),
            ("merge", "t0dqm.tasks.index.merge"),
            ("scan", "t0dqm.tasks.receive.scan"),
        )
    }
    names = [queue_name(q, settings) for q in QUEUES]
    peak = 0
    for t in range(seconds):
        for key, entry in beat.items():
            if t % timing[key] == 0:
                scheduler.apply_async(entry, advance=False)
        if t % timing["reconcile"] == 0:
            reconcile()
        if t % timing["verify"] == 0:
            verify_due()
        peak = max(peak, sum(int(client.llen(q)) for q in names))
    return {"peak": peak, "final": {q: int(client.llen(queue_name(q, settings))) for q in QUEUES}}


def run(files: int, seconds: int, timing_name: str, markers: bool, workdir: Path) -> dict[str, Any]:
    import redis

    from t0dqm.catalog.db import reset_catalogs
    from t0dqm.dev import services
    from t0dqm.tasks import queued

    server = services.start_redis(workdir / "redis", persistent=False)
    root = workdir / f"root-{timing_name}-{markers}"
    original = queued.reserve
    try:
        settings = setup(root, server.url, files)
        client = redis.Redis.from_url(server.url)
        for q in QUEUES:  # what setup itself chained (zip -> freeze -> stage) is not part of the outage
            from t0dqm.celery import queue_name

            client.delete(queue_name(q, settings))
        client.delete(
            *(list(client.scan_iter(match="*queued:*")) + list(client.scan_iter(match="*metrics:*")) or ["-"])
        )
        if not markers:
            queued.reserve = lambda _client, keys, _ttls: [True] * len(keys)  # every send goes out
        waiting = pending(settings)
        result = outage(settings, client, seconds, TIMINGS[timing_name])
        result.update(pending=waiting, sent=_sent(client))
        return result
    finally:
        queued.reserve = original
        reset_catalogs()
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _sent(client: Any) -> int:
    total = 0
    for key in client.scan_iter(match="*metrics:messages"):
        total += sum(int(v) for f, v in client.hgetall(key).items() if f.endswith(b":sent"))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=250)
    parser.add_argument("--outage", type=int, default=600, help="simulated seconds without consumers")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="t0dqm-bench-outage-"))
    os.environ.pop("T0DQM_CONFIG", None)
    try:
        print(f"{args.files} files; {args.outage} s outage of every consumer but ops; all stale at once")
        print(
            "| beat timing | markers | pending (step, item) | peak queue depth | depth at the end (index / archive "
            "/ tape / receive / index-merge) | messages sent |"
        )
        print("|---|---|---|---|---|---|")
        for timing in TIMINGS:
            for markers in (False, True):
                r = run(args.files, args.outage, timing, markers, workdir)
                f = r["final"]
                print(
                    f"| {timing} | {'after (on)' if markers else 'before (off)'} | {r['pending']} | {r['peak']} | "
                    f"{f['index']} / {f['archive']} / {f['tape']} / {f['receive']} / {f['index-merge']} | "
                    f"{r['sent']} |",
                    flush=True,
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
