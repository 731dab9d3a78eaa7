"""Tasks: health (aliveCheck's successor) and alarm notification; the broker probes of the check.

``check`` (beat, 5 min, queue ops) gathers facts, asks :mod:`t0dqm.policies.health` which alarms to
raise and clear, applies that, then dispatches due notifications. ``notify`` (beat, 1 min) only
dispatches. :func:`run_check` does the same work without a worker (``t0dqm health check`` from cron):
a check running on the ops worker cannot see that worker stopped, the external one can.

Proof of consumption: a canary ``t0dqm.tasks.ops.noop`` is sent to EACH queue with an explicit
``queue=`` and the check polls the results for ``health.canary_timeout`` seconds (it never blocks on
``get()`` inside a worker). An unanswered canary is remembered in Redis (``<prefix>health:canary``)
so the next check knows how long the queue has not consumed anything, and whether it consumed the
previous canary since (a busy queue that moves is not a dead one). The queue the check itself was
delivered from is consumed by definition.

The canaries, the worker inspection and the queue depths are probes of the broker (they send to
queues), so they stay here, with :func:`run_check` that feeds them to the step; the catalog facts and
applying the decision are :mod:`t0dqm.steps.health`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from celery import Celery

from t0dqm import config
from t0dqm.catalog import counts
from t0dqm.catalog.db import Catalog
from t0dqm.celery import BASE_QUEUES, app, queue_name
from t0dqm.policies import health as policy
from t0dqm.steps import health as steps_health
from t0dqm.steps.health import CheckReport, producer_hosts, summary_lines
from t0dqm.tasks.base import LeaseBusy, T0Task, metrics_client

log = logging.getLogger("t0dqm.tasks.health")

CANARY_TASK = "t0dqm.tasks.ops.noop"
POLL = 0.05

__all__ = [
    "CheckReport",
    "canaries",
    "check",
    "consumers",
    "gather_facts",
    "notify",
    "run_check",
    "summary_lines",
]


# -- canaries --------------------------------------------------------------------------------------


@dataclass
class CanaryOutcome:
    status: str
    waited: float = 0.0


def _canary_key(celery_app: Celery) -> str:
    return f"{celery_app.conf.t0dqm_prefix}health:canary"


def canaries(
    celery_app: Celery,
    queues: Sequence[str],
    timeout: float,
    *,
    self_queue: str | None = None,
    now: float | None = None,
) -> dict[str, CanaryOutcome]:
    """Round trip a canary through each (full) queue name; see the module docstring.

    Raises the broker's error when canaries cannot be sent at all.
    """
    now = time.time() if now is None else now
    client = metrics_client(celery_app)
    key = _canary_key(celery_app)
    outstanding: dict[str, dict[str, Any]] = {}
    if client is not None:
        for q, raw in (client.hgetall(key) or {}).items():
            try:
                outstanding[q.decode()] = json.loads(raw)  # type: ignore[union-attr]  # no decode_responses
            except ValueError:
                continue
    out: dict[str, CanaryOutcome] = {}
    sent: dict[str, Any] = {}
    previous_done: set[str] = set()
    expires = max(timeout * 2, 3600.0)
    for q in queues:
        if q == self_queue:
            out[q] = CanaryOutcome(policy.CANARY_SELF)
            continue
        old = outstanding.get(q)
        if old and celery_app.AsyncResult(old["id"]).ready():
            previous_done.add(q)
        token = f"canary:{q}:{uuid.uuid4().hex[:8]}"
        sent[q] = celery_app.signature(CANARY_TASK, args=(token,)).apply_async(
            queue=q, expires=expires, ignore_result=False, retry=False
        )
    deadline = time.monotonic() + timeout
    waiting = dict(sent)
    while waiting and time.monotonic() < deadline:
        for q in [q for q, r in waiting.items() if r.ready()]:
            del waiting[q]
        if waiting:
            time.sleep(POLL)
    for q, result in sent.items():
        old = outstanding.get(q)
        if q not in waiting:
            out[q] = CanaryOutcome(policy.CANARY_OK)
            if client is not None:
                client.hdel(key, q)
        elif q in previous_done or old is None:
            # moving (consumed the previous canary) or first miss: the fresh canary is now the one to watch
            if client is not None:
                client.hset(key, q, json.dumps({"id": result.id, "sent_at": now}))
            if q in previous_done:
                out[q] = CanaryOutcome(policy.CANARY_PROGRESS)
            else:
                out[q] = CanaryOutcome(policy.CANARY_UNANSWERED, time.time() - now)
        else:
            out[q] = CanaryOutcome(policy.CANARY_UNANSWERED, time.time() - float(old.get("sent_at", now)))
    return out


def consumers(celery_app: Celery, timeout: float) -> dict[str, list[str]] | None:
    """Queue -> workers listing it (active_queues); None when the inspection itself failed."""
    try:
        replies = celery_app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - unknown, not "nobody"
        log.warning("inspect active_queues failed: %s", exc)
        return None
    out: dict[str, list[str]] = {}
    for worker, qs in replies.items():
        for q in qs or []:
            out.setdefault(q.get("name", ""), []).append(worker)
    return {q: sorted(ws) for q, ws in out.items()}


# -- the check -------------------------------------------------------------------------------------


def gather_facts(
    settings: config.Settings,
    catalog: Catalog,
    celery_app: Celery,
    *,
    self_queue: str | None = None,
    now: float | None = None,
) -> tuple[policy.HealthFacts, policy.Limits]:
    """Every fact the policy needs (broker, canaries, workers, depths, beat, collectors, waiting items)."""
    from t0dqm.tasks.queued import queue_depths

    now = time.time() if now is None else now
    cfg = settings.health
    # config.Health is a Mapping at run time (Mapping.register(config.Table)), not to mypy
    bases = policy.queues_to_check(BASE_QUEUES, cfg, producer_hosts(settings))  # type: ignore[arg-type]
    names = {base: queue_name(base, settings) for base in bases}
    broker_error: str | None = None
    depths: dict[str, int] = {}
    outcomes: dict[str, CanaryOutcome] = {}
    listening: dict[str, list[str]] | None = None
    try:
        depths = queue_depths(celery_app.conf.broker_url, list(names.values()))
        outcomes = canaries(
            celery_app, list(names.values()), float(cfg.canary_timeout), self_queue=self_queue, now=now
        )
        listening = consumers(celery_app, float(cfg.inspect_timeout))
    except Exception as exc:  # noqa: BLE001 - the broker is down: that is the finding
        broker_error = f"{type(exc).__name__}: {exc}"
    queue_facts = []
    for full in names.values():
        outcome = outcomes.get(full, CanaryOutcome(policy.CANARY_UNKNOWN))
        who = None if listening is None else tuple(listening.get(full, ()))
        queue_facts.append(policy.QueueFacts(full, outcome.status, outcome.waited, who, depths.get(full)))
    return steps_health.facts(settings, catalog, tuple(queue_facts), broker_error, now)


def run_check(
    settings: config.Settings,
    catalog: Catalog,
    celery_app: Celery | None = None,
    *,
    self_queue: str | None = None,
    notify: bool = True,
) -> CheckReport:
    """Gather, decide, raise/clear, dispatch notifications. Works in a worker or in any process."""
    started = time.monotonic()
    celery_app = celery_app or app
    facts, limits = gather_facts(settings, catalog, celery_app, self_queue=self_queue)
    report = steps_health.decide(catalog, facts, limits)
    if notify:
        report.notified = steps_health.notify(settings, catalog)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _delivered_from(task: T0Task) -> str | None:
    info = getattr(task.request, "delivery_info", None) or {}
    return info.get("routing_key") or None


@app.task(base=T0Task, bind=True, name=steps_health.CHECK_TASK, soft_time_limit=120, time_limit=150)
def check(self: T0Task) -> dict[str, Any]:
    """Beat (5 min): canaries, workers, depths, beat heartbeat, collectors, latency -> alarms, notify.
    Skips (with a log line) while a previous check still runs; folds the running counts' deltas."""
    try:
        with self.lease(steps_health.CHECK_LEASE, seconds=150):
            counts.compact(self.catalog)
            report = run_check(self.settings, self.catalog, self.app, self_queue=_delivered_from(self))
    except LeaseBusy:
        return {"skipped": True}
    if not report.healthy or report.cleared:
        self.log(
            "health",
            level=logging.WARNING if not report.healthy else logging.INFO,
            raised=[a["key"] for a in report.raised],
            cleared=report.cleared,
        )
    return report.as_dict()


@app.task(base=T0Task, bind=True, name=steps_health.NOTIFY_TASK, soft_time_limit=240, time_limit=300)
def notify(self: T0Task) -> int:
    """Beat (1 min): send due alarm notifications (rate-limited per alarm key)."""
    return steps_health.notify(self.settings, self.catalog)
