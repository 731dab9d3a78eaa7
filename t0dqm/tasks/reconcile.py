"""Task: reconcile (queue ops; its name ``t0dqm.tasks.ops.reconcile`` is kept, so is its route).

A thin wrapper over :mod:`t0dqm.steps.reconcile`: it sends each recoverer's steps through the base
task (at most one message per waiting (step, item); a marker left by a lost message, older than
``reconcile.orphan_grace`` with its queue empty, is replaced and the step re-sent) and returns how many
it sent per recoverer.
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import reconcile as steps_reconcile
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task


@app.task(base=T0Task, bind=True, name=steps_reconcile.RECONCILE_TASK, soft_time_limit=240, time_limit=300)
def reconcile(self: T0Task) -> dict[str, int]:
    """Re-enqueue every step whose row is stale (lease expired or not moved for a while)."""
    ctx = self.context
    found = steps_reconcile.stale_steps(ctx)
    if found is None:
        return {}
    grace = steps_reconcile.orphan_grace(ctx)
    sent: dict[str, int] = {}
    stale = 0
    for name, steps in found.items():
        stale += len(steps)
        n = self.send_next(Outcome(next=steps, orphan_grace=grace)) if steps else 0
        if n:
            sent[name] = n
    if stale:
        self.log("reconcile", resumed=sent, stale=stale, already_queued=stale - sum(sent.values()))
    return sent
