"""Tasks: index (visDQMImportDaemon, visDQMIndexMergeDaemon, visDQMDeleteDaemon).

Receive writes the partial index of each batch itself (the file is read once) and asks for a merge;
``import_file`` (queue index, parallel) does the same for one file when receive could not (a resumed
receive, recovery, reprocessing). ``merge`` (queue index-merge, concurrency 1, plus the catalog lease
``index-merge:<flavour>``) folds every ready partial into the main index; ``delete_runs`` trims runs by the
run deletion rules. The work is in :mod:`t0dqm.steps.index`.
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import index as dqmindex
from t0dqm.steps.index import DELETE_RUNS_TASK, IMPORT_TASK, MERGE_DELAY, MERGE_TASK
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task, long_limits

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
