"""Tasks: index (visDQMImportDaemon, visDQMIndexMergeDaemon, visDQMDeleteDaemon).

Receive writes the partial index of each batch itself (the file is read once) and asks for a merge;
``import_file`` (queue index, parallel) does the same for one file when receive could not (a resumed
receive, recovery, reprocessing). ``merge`` (queue index-merge, concurrency 1, plus the catalog lease
``index-merge:<flavour>``) folds every ready partial into the main index; ``delete_runs`` trims runs by the
run deletion rules. See :mod:`t0dqm.steps.index`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import files
from t0dqm.catalog.states import INDEX_PARTIAL, INDEX_PENDING
from t0dqm.celery import app
from t0dqm.formats import naming
from t0dqm.steps import index as dqmindex
from t0dqm.tasks.base import T0Task, long_limits
from t0dqm.tasks.recovery import Resume, recoverer, stale_ids

MERGE_TASK = "t0dqm.tasks.index.merge"
IMPORT_TASK = "t0dqm.tasks.index.import_file"
MERGE_DELAY = 0.5  # seconds


def request_merge(task: T0Task) -> None:
    """Enqueue one merge unless one is already waiting (its marker goes when it starts listing partials,
    see t0dqm.tasks.queued); a short countdown lets one merge pick up the partials of many imports."""
    task.enqueue(app.signature(MERGE_TASK, countdown=MERGE_DELAY))


@app.task(base=T0Task, bind=True, name=IMPORT_TASK, soft_time_limit=300, time_limit=360)
def import_file(self: T0Task, file_id: int) -> str:
    """Read the file's monitor elements into a partial index, then ask for a merge."""
    state = dqmindex.import_one(int(file_id), self.settings, self.catalog)
    if state == INDEX_PARTIAL:
        request_merge(self)
    elif state not in ("indexed",):
        self.log("import", file_id=file_id, index_state=state)
    return state


@app.task(base=T0Task, bind=True, name=MERGE_TASK, **long_limits())
def merge(self: T0Task) -> dict[str, int]:
    """Single writer: merge every ready partial index into the main index."""
    try:
        counts = dqmindex.merge_all(self.settings, self.catalog,
                                    max_seconds=max(60.0, self.settings["tasks"]["long_soft_time_limit"] - 60))
    except dqmindex.MergeBusy:
        return {}
    if counts["indexed"] or counts["failed"]:
        self.log("merge", **counts)
    return counts


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.index.delete_runs", **long_limits())
def delete_runs(self: T0Task, dry_run: bool | None = None) -> list[dict[str, Any]]:
    """Remove runs from the index by run type, lumis and age (configuration run_deletion)."""
    try:
        decisions = dqmindex.delete_runs(self.settings, self.catalog, dry_run=dry_run)
    except dqmindex.MergeBusy:
        return []
    if decisions:
        self.log("delete-runs", runs=len(decisions), dry_run=dry_run)
    return [d.__dict__ for d in decisions]


def _by_priority(conn: Connection, ids: Iterable[int]) -> list[int]:
    ids = list(ids)
    if not ids:
        return []
    rows = conn.execute(select(files.c.id, files.c.cls, files.c.run).where(files.c.id.in_(ids))).all()
    return [r.id for r in sorted(rows, key=lambda r: (naming.class_priority(r.cls), r.run, r.id))]


@recoverer("index-import")
def _recover_imports(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    stale = stale_ids(conn, files, "index_state", [INDEX_PENDING], now, settings["reconcile"]["stale_seconds"])
    return [Resume(IMPORT_TASK, (file_id,)) for file_id in _by_priority(conn, stale)]


@recoverer("index-merge")
def _recover_merge(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    """Stale partial files: a merge; those whose partial index is gone (lost, unreadable): import again."""
    stale = stale_ids(conn, files, "index_state", [INDEX_PARTIAL], now, settings["reconcile"]["stale_seconds"])
    if not stale:
        return []
    held = {fid for contents in dqmindex.list_partials(settings).values() for fid, _ in contents}
    lost = [file_id for file_id in stale if file_id not in held]
    out = [Resume(MERGE_TASK)] if len(lost) < len(stale) else []
    return out + [Resume(IMPORT_TASK, (file_id,)) for file_id in _by_priority(conn, lost)]
