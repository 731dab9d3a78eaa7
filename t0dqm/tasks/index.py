"""Tasks: index (visDQMImportDaemon, visDQMIndexMergeDaemon, visDQMDeleteDaemon).

Receive writes the partial index of each batch itself (the file is read once) and asks for a merge;
``import_file`` (queue index, parallel) does the same for one file when receive could not (a resumed
receive, recovery, reprocessing). ``merge`` (queue index-merge, concurrency 1, plus the catalog lease
``index-merge:<flavour>``) folds every ready partial into the main index; ``delete_runs`` trims runs by the
run deletion rules. The work is in :mod:`t0dqm.steps.index`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from t0dqm.catalog.db import files
from t0dqm.catalog.files import Connection
from t0dqm.catalog.states import INDEX_PARTIAL, INDEX_PENDING
from t0dqm.celery import app
from t0dqm.steps import index as dqmindex
from t0dqm.steps.index import DELETE_RUNS_TASK, IMPORT_TASK, MERGE_DELAY, MERGE_TASK
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits
from t0dqm.tasks.recovery import Resume, recoverer, stale_ids

__all__ = ["IMPORT_TASK", "MERGE_DELAY", "MERGE_TASK", "delete_runs", "import_file", "merge"]


@app.task(base=T0Task, bind=True, name=IMPORT_TASK, soft_time_limit=300, time_limit=360)
def import_file(self: T0Task, file_id: int) -> Outcome:
    """Read the file's monitor elements into a partial index, then ask for a merge."""
    return dqmindex.import_file(self.context, file_id)


@app.task(base=T0Task, bind=True, name=MERGE_TASK, **long_limits())
def merge(self: T0Task) -> Outcome:
    """Single writer: merge every ready partial index into the main index."""
    return dqmindex.merge(self.context)


@app.task(base=T0Task, bind=True, name=DELETE_RUNS_TASK, **long_limits())
def delete_runs(self: T0Task, dry_run: bool | None = None) -> Outcome:
    """Remove runs from the index by run type, lumis and age (configuration run_deletion)."""
    return dqmindex.trim_runs(self.context, dry_run=dry_run)


@recoverer("index-import")
def _recover_imports(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    stale = stale_ids(conn, files, "index_state", [INDEX_PENDING], now, settings["reconcile"]["stale_seconds"])
    return [Resume(IMPORT_TASK, (file_id,)) for file_id in dqmindex.by_priority(conn, stale)]


@recoverer("index-merge")
def _recover_merge(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    """Stale partial files: a merge; those whose partial index is gone (lost, unreadable): import again."""
    stale = stale_ids(conn, files, "index_state", [INDEX_PARTIAL], now, settings["reconcile"]["stale_seconds"])
    if not stale:
        return []
    held = {fid for contents in dqmindex.list_partials(settings).values() for fid, _ in contents}
    lost = [file_id for file_id in stale if file_id not in held]
    out = [Resume(MERGE_TASK)] if len(lost) < len(stale) else []
    return out + [Resume(IMPORT_TASK, (file_id,)) for file_id in dqmindex.by_priority(conn, lost)]
