"""Tasks: online sync (visDQMOnlineSyncDaemon) and the partial mirror (visDQMAfsSync), queue ``sync``.
The work is in :mod:`t0dqm.steps.sync`."""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import sync
from t0dqm.steps.next import Outcome
from t0dqm.steps.sync import ONLINE_SYNC_TASK, PARTIAL_MIRROR_TASK
from t0dqm.tasks.base import T0Task, long_limits

__all__ = ["online_sync", "partial_mirror"]


@app.task(base=T0Task, bind=True, name=ONLINE_SYNC_TASK, **long_limits())
def online_sync(self: T0Task) -> Outcome:
    """Mirror the online GUI's listing into the repository (one runner at a time)."""
    return sync.run_online_sync(self.context)


@app.task(base=T0Task, bind=True, name=PARTIAL_MIRROR_TASK, **long_limits())
def partial_mirror(self: T0Task) -> Outcome:
    """Bring the size-limited mirror up to date (one runner at a time)."""
    return sync.run_partial_mirror(self.context)
