"""Task: Tier-0 streamer cleanup (t0dqm.steps.streamer), daily 05:00 when ``streamer.enabled``.

Reads the EOS dump, calls the pure policy, deletes through the guarded deleter (an audit row per file) and
records the deleted units in the catalog. A refused dump deletes nothing. The Storage Manager and retention
tasks, once in this module, are in t0dqm.tasks.sm and t0dqm.tasks.retention (their names are unchanged).
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import streamer
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=streamer.STREAMER_TASK, autoretry_for=(), **long_limits())
def streamer_cleanup(
    self: T0Task, dry_run: bool | None = None, now: float | None = None, force: bool = False
) -> Outcome:
    """Plan and apply the streamer cleanup; returns the plan and what was done."""
    return streamer.cleanup(self.context, dry_run=dry_run, now=now, force=force)
