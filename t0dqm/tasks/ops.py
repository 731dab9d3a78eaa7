"""Tasks: operations (beat heartbeat, no-op probes used by health checks and benchmarks).

Reconcile, named ``t0dqm.tasks.ops.reconcile`` (queue ops), lives in :mod:`t0dqm.tasks.reconcile`.
"""

from __future__ import annotations

import time
from typing import Any

from t0dqm.celery import app
from t0dqm.tasks.base import T0Task


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
