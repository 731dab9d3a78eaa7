"""Tasks: online sync (visDQMOnlineSyncDaemon) and the partial mirror (visDQMAfsSync), queue ``sync``."""

from __future__ import annotations

from typing import Any

from t0dqm.celery import app
from t0dqm.steps import sync
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.sync.online_sync", **long_limits())
def online_sync(self: T0Task) -> dict[str, Any] | None:
    """Mirror the online GUI's listing into the repository (one runner at a time)."""
    try:
        with self.lease("online-sync", self.settings["tasks"]["long_time_limit"]):
            report = sync.online_sync_from_settings(self.settings)
    except LeaseBusy:
        return None
    if report is None:
        return None
    self.log("online-sync", downloaded=len(report.downloaded), up_to_date=report.up_to_date,
             skipped_archived=len(report.skipped_archived), errors=len(report.errors), bytes=report.bytes)
    return report.as_dict()


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.sync.partial_mirror", **long_limits())
def partial_mirror(self: T0Task) -> dict[str, Any] | None:
    """Bring the size-limited mirror up to date (one runner at a time)."""
    try:
        with self.lease("partial-mirror", self.settings["tasks"]["long_time_limit"]):
            report = sync.partial_mirror_from_settings(self.settings, catalog=self.catalog)
    except LeaseBusy:
        return None
    if report is None:
        return None
    self.log("partial-mirror", copied=len(report.copied), deleted=len(report.deleted), errors=len(report.errors))
    return report.as_dict()
