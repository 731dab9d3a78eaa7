"""Tasks: tape. Stage frozen zips, verify them, clean local zips, back the index up.

Thin wrappers over :mod:`t0dqm.steps.tape` (the stage/verify state machine); the base task sends the
next steps (a verify after a copy, a stage after a retry or a restage, the due ones of ``verify_due``).
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import tape as steps_tape
from t0dqm.steps.archive import STAGE_TASK
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=STAGE_TASK, **long_limits())
def stage(self: T0Task, archive_id: int) -> Outcome:
    """Copy a frozen zip to the archive endpoint, checked end to end against the recorded adler32."""
    return steps_tape.stage(self.context, archive_id)


@app.task(base=T0Task, bind=True, name=steps_tape.VERIFY_TASK, soft_time_limit=600, time_limit=660)
def verify(self: T0Task, archive_id: int) -> Outcome:
    """After the verify delay: size and adler32 at the endpoint, and the tape flag where reported."""
    return steps_tape.verify(self.context, archive_id)


@app.task(base=T0Task, bind=True, name=steps_tape.VERIFY_DUE_TASK, soft_time_limit=240, time_limit=300)
def verify_due(self: T0Task) -> Outcome:
    """Beat: send the stages and verifications that are due, and refresh the summarised alarm."""
    return steps_tape.verify_due(self.context)


@app.task(base=T0Task, bind=True, name=steps_tape.CLEAN_ZIPS_TASK, **long_limits())
def clean_zips(self: T0Task) -> dict[str, int]:
    """Remove local zips whose archive is safe at the endpoint; the archive becomes ``cleaned``."""
    return steps_tape.clean_zips(self.context)


@app.task(base=T0Task, bind=True, name=steps_tape.BACKUP_INDEX_TASK, **long_limits())
def backup_index(self: T0Task, day: str | None = None) -> dict[str, int]:
    """Copy each index file to <endpoint>/index-backup/<YYYYMMDD>/; keep the last days."""
    return steps_tape.backup_index(self.context, day)
