"""Task: Storage Manager (P5) cleanup (t0dqm.steps.sm).

Age mode twice a day, occupancy mode every 15 min when ``storage_manager.enabled``: the Storage Manager
policies on the P5 listing; unchecked files deleted by the age rule raise an alarm. The task keeps its
name ``t0dqm.tasks.streamer.sm_cleanup`` (and so its queue).
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import sm
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=sm.SM_TASK, autoretry_for=(), **long_limits())
def sm_cleanup(
    self: T0Task,
    mode: str = "occupancy",
    dry_run: bool | None = None,
    now: float | None = None,
    occupancy: float | None = None,
    force: bool = False,
) -> Outcome:
    """See :func:`t0dqm.steps.sm.cleanup`."""
    return sm.cleanup(self.context, mode=mode, dry_run=dry_run, now=now, occupancy=occupancy, force=force)
