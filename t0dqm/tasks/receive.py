"""Tasks: receive (visDQMReceiveDaemon) and create-info (visDQMCreateInfoDaemon).

``receive_file(path)`` / ``receive_batch(paths)`` file uploads; ``scan`` (beat) sends the waiting uploads
to ``receive_batch``; ``create_info`` (beat) gives repository files without a .dqminfo one. The work,
claims and crash safety are in :mod:`t0dqm.steps.receive`; here are the Celery wrappers and the Redis
markers that keep the scan from sending an upload twice.
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import receive as steps_receive
from t0dqm.steps.next import Outcome
from t0dqm.steps.receive import BATCH_TASK, CREATE_INFO_TASK, FILE_TASK, SCAN_TASK
from t0dqm.tasks.base import RETRYABLE, T0Task, long_limits, metrics_client

__all__ = ["create_info", "receive_batch", "receive_file", "scan"]


def _receive(task: T0Task, paths: list[str]) -> steps_receive.BatchOutcome:
    """Receive a batch (see steps.receive.receive_batch); the scan may send the uploads done with again.
    On a retryable error the next steps are sent first, then the task retries the batch."""
    out = steps_receive.receive_batch(task.context, paths)
    _forget(task, [o.path for o in out.outcomes if o.status not in ("error", "busy")])
    _forget(task, [o.path for o in out.outcomes if o.status == "busy"], after=steps_receive.BUSY_RESCAN)
    retry = [e for e in out.errors if isinstance(e, RETRYABLE)]
    if retry:  # the task's autoretry runs the batch again; what was filed returns "gone" at once
        task.send_next(out)
        raise retry[0]
    return out


@app.task(base=T0Task, bind=True, name=FILE_TASK, soft_time_limit=300, time_limit=360)
def receive_file(self: T0Task, path: str) -> Outcome:
    """File one upload (path absolute or relative to the dropbox), then send merge/import and zip."""
    out = _receive(self, [path])
    out.result = out.result[0]
    return out


@app.task(base=T0Task, bind=True, name=BATCH_TASK, soft_time_limit=600, time_limit=660)
def receive_batch(self: T0Task, paths: list[str]) -> Outcome:
    """File a batch of uploads (one catalog transaction, one partial index), then send merge and zip.
    Uploads not reached within BATCH_BUDGET seconds are left for the next scan."""
    return _receive(self, list(paths))


def _queued_key(task: T0Task, path: str) -> str:
    return f"{task.app.conf.t0dqm_prefix}receive:queued:{path}"


def _dedupe(task: T0Task, paths: list[str], seconds: int, limit: int) -> tuple[list[str], bool]:
    """The first ``limit`` of ``paths`` not sent in the last ``seconds``, now marked as sent (Redis SET NX
    EX; all of them without Redis), and whether more unsent paths remain."""
    client = metrics_client(task.app)
    if client is None:
        return paths[:limit], len(paths) > limit
    try:
        pipe = client.pipeline(transaction=False)
        for path in paths:
            pipe.exists(_queued_key(task, path))
        fresh = [p for p, queued in zip(paths, pipe.execute(), strict=True) if not queued]
        pipe = client.pipeline(transaction=False)
        for path in fresh[:limit]:
            pipe.set(_queued_key(task, path), "1", nx=True, ex=seconds)
        sent = [p for p, ok in zip(fresh[:limit], pipe.execute(), strict=True) if ok]
        return sent, len(fresh) > limit
    except Exception:  # noqa: BLE001 - dedupe is an optimisation only
        return paths[:limit], len(paths) > limit


def _forget(task: T0Task, paths: list[str], after: int = 0) -> None:
    """The scan may send ``paths`` again (``after`` seconds: at once, or once a live claim was found)."""
    client = metrics_client(task.app)
    if client is None or not paths:
        return
    try:
        if not after:
            client.delete(*[_queued_key(task, p) for p in paths])
            return
        pipe = client.pipeline(transaction=False)
        for path in paths:
            pipe.set(_queued_key(task, path), "1", ex=after)
        pipe.execute()
    except Exception:  # noqa: BLE001, S110 - dedupe is an optimisation only
        pass


@app.task(base=T0Task, bind=True, name=SCAN_TASK, soft_time_limit=60, time_limit=90)
def scan(self: T0Task) -> Outcome:
    """Beat: list complete uploads and send them to receive_batch, ``receive.per_task`` per message, at
    most ``receive.batch`` per scan; when more are waiting, a rescan is chained at once."""
    return steps_receive.scan(
        self.context, lambda paths, seconds, limit: _dedupe(self, paths, seconds, limit)
    )


@app.task(base=T0Task, bind=True, name=CREATE_INFO_TASK, **long_limits())
def create_info(self: T0Task) -> Outcome:
    """Beat: repository OnlineData files without .dqminfo get one and go to zip (not to the index)."""
    return steps_receive.create_info(self.context)
