"""The base task every t0dqm task uses: catalog access, retries, leases, logging context, metrics.

A task is a thin wrapper over its step (``t0dqm.steps``): the step loads its row, returns at once if its
work is done, does its side effect safely and commits the state change, then returns an ``Outcome``. The
base task sends the outcome's next steps after the step has returned (``T0Task.__call__``), so the next
step is only ever sent after the commit.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_received
from sqlalchemy.exc import OperationalError

from t0dqm import config
from t0dqm.catalog.db import Catalog, get_catalog, worker_identity
from t0dqm.steps.next import Context, LeaseBusy, Next, Outcome
from t0dqm.storage import StorageError
from t0dqm.tasks import queued

logger = logging.getLogger("t0dqm.tasks")

RETRYABLE = (
    StorageError,
    OperationalError,
    redis.ConnectionError,
    redis.TimeoutError,
    TimeoutError,
    ConnectionError,
)


def long_limits() -> dict[str, float]:
    """Time limits for tasks that move whole archives or scan whole areas."""
    tasks = config.get().tasks
    return {"soft_time_limit": tasks.long_soft_time_limit, "time_limit": tasks.long_time_limit}


__all__ = ["RETRYABLE", "LeaseBusy", "T0Task", "long_limits", "metrics_client", "send_once"]


_redis_clients: dict[str, redis.Redis] = {}


def metrics_client(app: Any) -> redis.Redis | None:
    url = app.conf.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    client = _redis_clients.get(url)
    if client is None:
        from t0dqm.celery import redis_client

        client = redis_client(url)
        _redis_clients[url] = client
    return client


class T0Task(Task):
    """Base class: bind=True tasks get ``self.catalog``, ``self.settings``, ``self.log`` and leases."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    autoretry_for = RETRYABLE
    retry_backoff = 2
    retry_jitter = True
    typing = True

    @property
    def max_retries(self) -> int:  # type: ignore[override]
        """Autoretry attempts (configuration ``tasks.max_retries``; a task's ``max_retries=`` option wins)."""
        return int(config.get().tasks.max_retries)

    @property
    def retry_backoff_max(self) -> int:
        """Cap of the autoretry back-off in seconds (configuration ``tasks.retry_backoff_max``; Celery reads it
        when it builds the task)."""
        return int(config.get().tasks.retry_backoff_max)

    @property
    def settings(self) -> config.Settings:
        return config.get()

    @property
    def catalog(self) -> Catalog:
        return get_catalog(self.settings.catalog_url)

    @property
    def context(self) -> Context:
        """What the task's step may use: settings, catalog, log and leases (no broker)."""
        return Context(
            settings=self.settings,
            catalog=self.catalog,
            log=self.log,
            lease=self.lease,
            task_id=getattr(self.request, "id", None),
        )

    def log(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        """One structured log line: JSON with the task's name and id."""
        record = {
            "event": event,
            "task": self.name,
            "task_id": getattr(self.request, "id", None),
            "host": socket.gethostname(),
            **fields,
        }
        logger.log(level, json.dumps(record, default=str, sort_keys=True))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        outcome = "ok"
        if getattr(self.request, "eta", None):
            self._forget_marker(args, kwargs)
        try:
            result = super().__call__(*args, **kwargs)
            if isinstance(result, Outcome):
                self.send_next(result)
                return result.result
            return result
        except SoftTimeLimitExceeded:
            outcome = "timeout"
            self.log("soft-time-limit", logging.WARNING, args=args)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._record_metric(outcome, time.monotonic() - started)

    def _forget_marker(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """A message with a countdown starts: its (step, item) marker goes (see t0dqm.tasks.queued)."""
        client = metrics_client(self.app)
        if client is None:
            return
        try:
            client.delete(queued.item_key(self.app.conf.t0dqm_prefix, self.name, args, kwargs))
        except redis.RedisError:  # it expires
            pass

    def _record_metric(self, outcome: str, seconds: float) -> None:
        client = metrics_client(self.app)
        if client is None:
            return
        key = f"{self.app.conf.t0dqm_prefix}metrics:tasks"
        try:
            pipe = client.pipeline(transaction=False)
            pipe.hincrby(key, f"{self.name}:{outcome}", 1)
            pipe.hincrbyfloat(key, f"{self.name}:seconds", seconds)
            pipe.execute()
        except redis.RedisError:  # metrics are best effort; the catalog has the truth
            pass

    @contextmanager
    def lease(self, name: str, seconds: float | None = None) -> Iterator[str]:
        """Hold a named catalog lease for the block (single writer); raise LeaseBusy if taken."""
        owner = f"{worker_identity()}:{getattr(self.request, 'id', '')}"
        seconds = seconds or self.settings.reconcile.lease_seconds
        if not self.catalog.acquire_lease(name, owner, seconds):
            # a periodic run that overlaps the previous one skips instead of piling up
            self.log("skipped", reason="lease held by a previous run", lease=name)
            raise LeaseBusy(name)
        try:
            yield owner
        finally:
            self.catalog.release_lease(name, owner)

    def apply_async(self, args: Any = None, kwargs: Any = None, *a: Any, **options: Any) -> Any:
        """As Celery's; a message from beat is not sent while the previous one for the same task and
        arguments still waits in its queue (a consumer down for an hour must not find 720 scans)."""
        client = metrics_client(self.app) if (options.get("headers") or {}).get("celery_beat_task") else None
        if client is None:
            return super().apply_async(args, kwargs, *a, **options)
        prefix = self.app.conf.t0dqm_prefix
        key = queued.item_key(prefix, self.name, args or (), kwargs)
        try:
            if not queued.reserve(client, [key], [queued.BEAT_TTL])[0]:
                queued.count(client, prefix, {(self.name, "deduped"): 1})
                return None
        except redis.RedisError:  # send anyway: the broker is the judge
            return super().apply_async(args, kwargs, *a, **options)
        try:
            result = super().apply_async(args, kwargs, *a, **options)
        except Exception:
            queued.count(client, prefix, {}, forget=[key])
            raise
        try:
            queued.count(client, prefix, {(self.name, "sent"): 1})
        except redis.RedisError:  # counters are best effort
            pass
        return result

    def send_next(self, outcome: Outcome) -> int:
        """Send a step's next steps (its transactions have committed: it has returned)."""
        if not outcome.next:
            return 0
        return self.enqueue_many(
            [(signature(self.app, n), n.args, dict(n.kwargs)) for n in outcome.next],
            orphan_grace=outcome.orphan_grace,
        )

    def enqueue(self, task: Any, *args: Any, **kwargs: Any) -> None:
        """Send the next step; call only after the state change is committed. At most one message per
        (step, item) waits in a queue (see t0dqm.tasks.queued). A lost message is found again by
        reconcile, so a broker error here is logged, not raised."""
        self.enqueue_many([(task, args, kwargs)])

    def enqueue_many(
        self, items: Sequence[tuple[Any, Sequence[Any], dict[str, Any]]], orphan_grace: float | None = None
    ) -> int:
        """Send (signature, args, kwargs) steps at most once per waiting (step, item): see send_once."""
        return send_once(self.app, self.settings, items, orphan_grace=orphan_grace, log=self.log)


Items = Sequence[tuple[Any, Sequence[Any], dict[str, Any]]]


def signature(app: Any, step: Next) -> Any:
    """The Celery signature of a next step (no arguments: send_once passes them)."""
    options: dict[str, Any] = {}
    if step.countdown is not None:
        options["countdown"] = step.countdown
    if step.queue is not None:
        options["queue"] = step.queue
    return app.signature(step.task, **options)


def _log(event: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(
        level,
        json.dumps({"event": event, "host": socket.gethostname(), **fields}, default=str, sort_keys=True),
    )


def send_once(
    app: Any,
    settings: config.Settings,
    items: Items,
    *,
    orphan_grace: float | None = None,
    strict: bool = False,
    log: Any = _log,
) -> int:
    """Send (signature, args, kwargs) steps, skipping those whose (step, item) already has a queued
    message; the markers are set in one round trip. With ``orphan_grace`` (reconcile, verify_due), a
    marker older than that whose queue is empty guards a lost message: it is replaced and the step sent
    again (see t0dqm.tasks.queued). A send that fails is logged (reconcile finds the item again), or
    raised with ``strict`` (an operator's command). Returns the number sent."""
    client = metrics_client(app)
    prefix = app.conf.t0dqm_prefix
    names = [getattr(task, "name", str(task)) for task, _args, _kwargs in items]
    keys = [
        queued.item_key(prefix, name, args, kwargs)
        for name, (_task, args, kwargs) in zip(names, items, strict=True)
    ]
    ttl = int(settings.reconcile.queued_ttl)
    countdowns = [_countdown(task) for task, _args, _kwargs in items]
    ttls = [ttl if c is None else int(c) + queued.ETA_GRACE for c in countdowns]
    now = time.time()
    free = [True] * len(items)
    orphaned: set[int] = set()
    if client is not None:
        try:
            free = queued.reserve(client, keys, ttls, [queued.stamp(now, c is not None) for c in countdowns])
            if orphan_grace is not None:
                orphaned = _reclaim(client, settings, items, names, keys, ttls, free, now, orphan_grace)
        except redis.RedisError as exc:  # the send below will say whether the broker is there
            log("enqueue-reserve-failed", logging.WARNING, error=str(exc))
    free = [go or i in orphaned for i, go in enumerate(free)]
    counts: dict[tuple[str, str], int] = {}
    unsent: list[str] = []
    failure: Exception | None = None
    for i, ((task, args, kwargs), name, key, go) in enumerate(zip(items, names, keys, free, strict=True)):
        if i in orphaned:
            counts[(name, "orphaned")] = counts.get((name, "orphaned"), 0) + 1
        if not go:
            counts[(name, "deduped")] = counts.get((name, "deduped"), 0) + 1
            continue
        try:
            task.apply_async(
                args=tuple(args),
                kwargs=kwargs,
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
            counts[(name, "sent")] = counts.get((name, "sent"), 0) + 1
        except Exception as exc:  # noqa: BLE001 - reconcile will re-enqueue from the catalog
            unsent.append(key)  # free the marker: nothing is queued for this item
            log("enqueue-failed", logging.WARNING, next=name, error=str(exc))
            failure = failure or exc
    if client is not None:
        try:
            queued.count(client, prefix, counts, forget=unsent)
        except redis.RedisError:  # counters are best effort; a marker left expires
            pass
    if strict and failure is not None:
        raise failure
    return sum(n for (_task, kind), n in counts.items() if kind == "sent")


def _reclaim(
    client: redis.Redis,
    settings: config.Settings,
    items: Items,
    names: Sequence[str],
    keys: Sequence[str],
    ttls: Sequence[int],
    free: Sequence[bool],
    now: float,
    grace: float,
) -> set[int]:
    """Indices of the taken markers found orphaned (and replaced): their steps are sent again."""
    from t0dqm.celery import route_for_task

    taken = [i for i, go in enumerate(free) if not go]
    if not taken:
        return set()
    queues = [
        (getattr(items[i][0], "options", None) or {}).get("queue") or route_for_task(names[i], settings)
        for i in taken
    ]
    found = queued.reclaim_orphans(
        client, [keys[i] for i in taken], queues, [ttls[i] for i in taken], now, grace
    )
    return {i for i, orphan in zip(taken, found, strict=True) if orphan}


def _countdown(task: Any) -> float | None:
    options = getattr(task, "options", None) or {}
    return None if options.get("countdown") is None else float(options["countdown"])


@task_received.connect
def _message_received(request: Any = None, **_: Any) -> None:
    """A worker took a message off its queue: its (step, item) marker goes (a message with a countdown
    keeps it until its task starts, see T0Task.__call__) and the receipt is counted."""
    task = getattr(request, "task", None)
    if not isinstance(task, T0Task):
        return
    client = metrics_client(task.app)
    if client is None:
        return
    prefix = task.app.conf.t0dqm_prefix
    forget = [] if request.eta else [queued.item_key(prefix, request.name, request.args, request.kwargs)]
    try:
        queued.count(client, prefix, {(request.name, "received"): 1}, forget=forget)
    except redis.RedisError:  # the marker expires (reconcile.queued_ttl)
        pass
