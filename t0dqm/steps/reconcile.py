"""Step: reconcile. Find, per step, the catalog rows that are stale and the steps that resume them.

Redis is only the conveyor: after a flush, a lost message or a killed worker, this is what finds the
work again. Each step module registers a recoverer with :func:`recoverer` (a function of a connection,
the settings and the time that yields :class:`Resume` items naming a Celery task by its ``name=``
string); :func:`stale_steps` runs them all under the catalog lease ``reconcile`` so two beats cannot
double the traffic. A row is stale when its claim expired or its holder is dead (stale heartbeat, on
any host), or when it has sat unclaimed in a waiting state for longer than ``reconcile.stale_seconds``
(:mod:`t0dqm.catalog.recovery`). Re-sending is safe because every task is idempotent, and the base
task sends nothing for a (step, item) that already has a message waiting (``t0dqm.tasks.queued``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from t0dqm.steps.next import Context, LeaseBusy, Next

RECONCILE_TASK = "t0dqm.tasks.ops.reconcile"  # its name (and so its queue, ops) predates tasks/reconcile.py
LEASE = "reconcile"
LEASE_SECONDS = 240


@dataclass(frozen=True)
class Resume:
    task: str  # registered Celery task name
    args: tuple[Any, ...] = ()


Recoverer = Callable[[Any, Any, float], Iterable[Resume]]  # (Connection, settings, now)
RECOVERERS: dict[str, Recoverer] = {}


def recoverer(name: str) -> Callable[[Recoverer], Recoverer]:
    """Register a step's recoverer under ``name`` (the key of reconcile's result)."""

    def register(fn: Recoverer) -> Recoverer:
        RECOVERERS[name] = fn
        return fn

    return register


def stale_steps(ctx: Context, now: float | None = None) -> dict[str, list[Next]] | None:
    """Per recoverer, the steps to send again; None when a previous run still holds the lease."""
    now = time.time() if now is None else now
    try:
        with ctx.lease(LEASE, seconds=LEASE_SECONDS), ctx.catalog.read() as conn:
            resumes = {name: list(fn(conn, ctx.settings, now)) for name, fn in RECOVERERS.items()}
    except LeaseBusy:
        return None
    return {name: [Next(r.task, tuple(r.args)) for r in found] for name, found in resumes.items()}


def orphan_grace(ctx: Context) -> float:
    """A marker older than this whose queue is empty guards a lost message (reconcile.orphan_grace)."""
    return float(ctx.settings.reconcile.orphan_grace)
