"""The base task every t0dqm task uses: catalog access, retries, leases, logging context, metrics.

A task loads its row, returns at once if its step is done, does its side effect safely, commits the
state change, and only then enqueues the next step (``enqueue`` is called after the transaction).
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import OperationalError

from t0dqm import config
from t0dqm.catalog import Catalog, get_catalog, worker_identity
from t0dqm.storage import StorageError

logger = logging.getLogger("t0dqm.tasks")

RETRYABLE = (StorageError, OperationalError, redis.ConnectionError, redis.TimeoutError, TimeoutError,
             ConnectionError)


def long_limits() -> dict[str, int]:
    """Time limits for tasks that move whole archives or scan whole areas."""
    tasks = config.get()["tasks"]
    return {"soft_time_limit": tasks["long_soft_time_limit"], "time_limit": tasks["long_time_limit"]}


class LeaseBusy(RuntimeError):
    """Another worker holds the lease; the caller should give up quietly (the holder does the work)."""


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
    retry_backoff_max = 600
    retry_jitter = True
    max_retries = 6
    typing = True

    @property
    def settings(self) -> config.Settings:
        return config.get()

    @property
    def catalog(self) -> Catalog:
        return get_catalog(self.settings.catalog_url)

    def log(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        """One structured log line: JSON with the task's name and id."""
        record = {"event": event, "task": self.name, "task_id": getattr(self.request, "id", None),
                  "host": socket.gethostname(), **fields}
        logger.log(level, json.dumps(record, default=str, sort_keys=True))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        outcome = "ok"
        try:
            return super().__call__(*args, **kwargs)
        except SoftTimeLimitExceeded:
            outcome = "timeout"
            self.log("soft-time-limit", logging.WARNING, args=args)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            self._record_metric(outcome, time.monotonic() - started)

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
        seconds = seconds or self.settings["reconcile"]["lease_seconds"]
        if not self.catalog.acquire_lease(name, owner, seconds):
            # a periodic run that overlaps the previous one skips instead of piling up
            self.log("skipped", reason="lease held by a previous run", lease=name)
            raise LeaseBusy(name)
        try:
            yield owner
        finally:
            self.catalog.release_lease(name, owner)

    def enqueue(self, task: Any, *args: Any, **kwargs: Any) -> None:
        """Send the next step; call only after the state change is committed. A lost message is
        found again by reconcile, so a broker error here is logged, not raised."""
        try:
            task.apply_async(args=args, kwargs=kwargs, retry=True,
                             retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5})
        except Exception as exc:  # noqa: BLE001 - reconcile will re-enqueue from the catalog
            self.log("enqueue-failed", logging.WARNING, next=getattr(task, "name", str(task)), error=str(exc))
