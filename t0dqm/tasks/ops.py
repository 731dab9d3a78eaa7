"""Tasks: operations (reconcile, beat heartbeat, no-op probes used by health checks and benchmarks)."""

from __future__ import annotations

import time
from typing import Any

from t0dqm.celery import app
from t0dqm.tasks.base import T0Task
from t0dqm.tasks.recovery import RECOVERERS


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.ops.reconcile", soft_time_limit=240, time_limit=300)
def reconcile(self: T0Task) -> dict[str, int]:
    """Re-enqueue every step whose row is stale (lease expired or not moved for a while).

    Redis is only the conveyor: after a flush, a lost message or a killed worker, this is what finds
    the work again. It runs under a lease so two beats cannot double the traffic, and sends nothing for a
    (step, item) that already has a message waiting (t0dqm.tasks.queued): a queue whose consumer is down
    holds at most one message per pending item however often reconcile runs. A marker left by a lost
    message (older than reconcile.orphan_grace, its queue empty) is replaced and the step re-sent.
    """
    from t0dqm.tasks.base import LeaseBusy

    settings = self.settings
    now = time.time()
    try:
        with self.lease("reconcile", seconds=240):
            with self.catalog.read() as conn:
                resumes = {name: list(fn(conn, settings, now)) for name, fn in RECOVERERS.items()}
    except LeaseBusy:
        return {}
    sent: dict[str, int] = {}
    stale = 0
    for name, found in resumes.items():
        stale += len(found)
        n = self.enqueue_many([(app.signature(r.task), r.args, {}) for r in found],
                              orphan_grace=float(settings["reconcile"]["orphan_grace"])) if found else 0
        if n:
            sent[name] = n
    if stale:
        self.log("reconcile", resumed=sent, stale=stale, already_queued=stale - sum(sent.values()))
    return sent


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.ops.beat_heartbeat", soft_time_limit=20, time_limit=30)
def beat_heartbeat(self: T0Task) -> float:
    """Proof that beat schedules and a worker consumes: health checks the lease's heartbeat time."""
    now = time.time()
    self.catalog.acquire_lease("heartbeat:beat", "beat", 3600)
    return now


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.ops.noop", soft_time_limit=10, time_limit=20)
def noop(self: T0Task, value: Any = None) -> Any:
    """Returns its argument: canary for health checks, unit of work for benchmarks."""
    return value


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.ops.step", soft_time_limit=10, time_limit=20)
def step(self: T0Task, value: int = 0) -> int:
    """One link of a benchmark chain: adds one."""
    return value + 1
