"""Tasks: version and quota control of repository ROOT files; thin wrappers over :mod:`t0dqm.steps.cleanup`."""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import cleanup
from t0dqm.tasks.base import T0Task, long_limits


@app.task(base=T0Task, bind=True, name=cleanup.VERSION_CONTROL_TASK, **long_limits())
def version_control_task(self: T0Task, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: keep the newest version; drop older ROOT files once their archive is verified."""
    return cleanup.run_version_control(self.context, dry_run)


@app.task(base=T0Task, bind=True, name=cleanup.QUOTA_CONTROL_TASK, **long_limits())
def quota_control_task(self: T0Task, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: per-class quota, oldest archived files first, down to 95 %; alarm when blocked."""
    return cleanup.run_quota_control(self.context, dry_run)
