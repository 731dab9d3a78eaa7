"""Task: Tier-0 disk retention (t0dqm.steps.retention), daily 06:00 when ``retention.enabled``.

Tier-0 disk outputs registered in ``t0_outputs`` go once at least ``retention.min_days`` old, at all their
endpoints and not needed. The task keeps its name ``t0dqm.tasks.streamer.retention_cleanup`` (and so its
queue).
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import retention
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=retention.RETENTION_TASK, autoretry_for=(), **long_limits())
def retention_cleanup(
    self: T0Task, dry_run: bool | None = None, now: float | None = None, force: bool = False
) -> Outcome:
    """Apply Tier-0 disk retention to the catalog's t0_outputs; returns the plan and what was done."""
    return retention.cleanup(self.context, dry_run=dry_run, now=now, force=force)
