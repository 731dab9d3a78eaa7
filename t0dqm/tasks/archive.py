"""Tasks: archive. Append received files to their zip (``zip_file``) and freeze zips (``freeze``).

Thin wrappers over :mod:`t0dqm.steps.archive`; the base task sends the freeze and stage that follow.
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import archive as steps_archive
from t0dqm.steps.next import LeaseBusy, Outcome
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=steps_archive.ZIP_TASK, soft_time_limit=600, time_limit=660)
def zip_file(self: T0Task, file_id: int) -> Outcome:
    """Append one received file to its zip; returns what happened. Retries while the zip's lease is taken."""
    try:
        return steps_archive.zip_file(self.context, file_id)
    except LeaseBusy:
        raise self.retry(countdown=5) from None


@app.task(base=T0Task, bind=True, name=steps_archive.FREEZE_TASK, **long_limits())
def freeze(self: T0Task, pattern: str | None = None, archive_ids: list[int] | None = None) -> Outcome:
    """Freeze what the policy says, plus ``archive_ids`` if given (an operator's explicit request)."""
    return steps_archive.freeze(self.context, pattern, archive_ids)
