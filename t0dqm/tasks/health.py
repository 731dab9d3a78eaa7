"""Tasks: health (aliveCheck's successor) and alarm notification.

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
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from celery import Celery
from sqlalchemy import func, select

from t0dqm import config
from t0dqm.catalog import counts, queries, states
from t0dqm.catalog.db import Catalog, alarms, archives, files, leases, quarantine
from t0dqm.celery import BASE_QUEUES, app, queue_name
from t0dqm.formats import dropbox
from t0dqm.policies import health as policy
from t0dqm.tasks.base import LeaseBusy, T0Task, metrics_client

log = logging.getLogger("t0dqm.tasks.health")

CANARY_TASK = "t0dqm.tasks.ops.noop"
BEAT_LEASE = "heartbeat:beat"
POLL = 0.05


def health_settings(settings: config.Settings) -> dict[str, Any]:
    """The ``health`` table with defaults (policy.DEFAULTS)."""
    return {**policy.DEFAULTS, **dict(settings.data.get("health", {}) or {})}


def producer_hosts(settings: config.Settings) -> list[str]:
    return sorted({str(p["host"]) for p in settings.data.get("producers", []) or []})


# -- canaries --------------------------------------------------------------------------------------

@dataclass
class CanaryOutcome:
    status: str
    waited: float = 0.0


def _canary_key(celery_app: Celery) -> str:
    return f"{celery_app.conf.t0dqm_prefix}health:canary"


def canaries(celery_app: Celery, queues: Sequence[str], timeout: float, *, self_queue: str | None = None,
             now: float | None = None) -> dict[str, CanaryOutcome]:
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
                outstanding[q.decode()] = json.loads(raw)
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
            queue=q, expires=expires, ignore_result=False, retry=False)
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


# -- catalog facts ---------------------------------------------------------------------------------

def _since_items(conn: Any, step: str, query: Any, count_query: Any, limit: int) -> tuple[list[policy.WaitingItem], int]:
    rows = conn.execute(query.limit(limit)).all()
    total = int(conn.execute(count_query).scalar() or 0)
    return [policy.WaitingItem(step, str(r[0]), float(r[1])) for r in rows], total


def waiting_items(catalog: Catalog, settings: config.Settings, limits: policy.Limits, now: float,
                  max_items: int) -> tuple[list[policy.WaitingItem], dict[str, int]]:
    """Items waiting longer than their step's limit (oldest first, at most max_items per step)."""
    items: list[policy.WaitingItem] = []
    totals: dict[str, int] = {}
    lim = limits.latency
    with catalog.read() as conn:
        index_states = [states.INDEX_PENDING, states.INDEX_PARTIAL]
        cond = (files.c.index_state.in_(index_states), files.c.state != states.REMOVED,
                files.c.created_at < now - lim["index"])
        got, totals["index"] = _since_items(
            conn, "index", select(files.c.path, files.c.created_at).where(*cond).order_by(files.c.created_at),
            select(func.count()).select_from(files).where(*cond), max_items)
        items += got
        cond = (files.c.state == states.RECEIVED, files.c.zippat.is_not(None), queries.not_member(),
                files.c.created_at < now - lim["zip"])
        got, totals["zip"] = _since_items(
            conn, "zip", select(files.c.path, files.c.created_at).where(*cond).order_by(files.c.created_at),
            select(func.count()).select_from(files).where(*cond), max_items)
        items += got
        for step, state, column in (("stage", states.FROZEN, archives.c.frozen_at),
                                    ("verify", states.COPIED, archives.c.copied_at)):
            cond = (archives.c.state == state, column.is_not(None), column < now - lim[step])
            got, totals[step] = _since_items(
                conn, step, select(archives.c.path, column).where(*cond).order_by(column),
                select(func.count()).select_from(archives).where(*cond), max_items)
            items += got
    receive = []
    for cand in dropbox.scan(settings.dropbox):
        try:
            since = os.stat(cand.origin).st_mtime
        except FileNotFoundError:
            continue
        if since < now - lim["receive"]:
            receive.append(policy.WaitingItem("receive", str(cand.path.relative_to(settings.dropbox)), since))
    receive.sort(key=lambda i: i.since)
    totals["receive"] = len(receive)
    items += receive[:max_items]
    return items, totals


def catalog_facts(catalog: Catalog, settings: config.Settings) -> dict[str, Any]:
    """Beat heartbeat, collector activity per producer host, quarantined count, active health alarms."""
    hosts = producer_hosts(settings)
    with catalog.read() as conn:
        beat = conn.execute(select(leases.c.heartbeat_at).where(leases.c.name == BEAT_LEASE)).scalar()
        collectors: dict[str, float | None] = {}
        for host in hosts:
            last = conn.execute(select(func.max(leases.c.heartbeat_at)).where(
                (leases.c.name == f"heartbeat:collect:{host}") | leases.c.name.like(f"collect:{host}:%"))).scalar()
            collectors[host] = float(last) if last is not None else None
        quarantined = conn.execute(select(func.count()).select_from(quarantine)
                                   .where(quarantine.c.resolved_at.is_(None))).scalar_one()
        active = [r[0] for r in conn.execute(select(alarms.c.key).where(
            alarms.c.active.is_(True), alarms.c.key.like(f"{policy.PREFIX}%")))]
    return {"beat_heartbeat_at": float(beat) if beat is not None else None, "collectors": collectors,
            "quarantined": int(quarantined), "active_keys": active}


# -- the check -------------------------------------------------------------------------------------

@dataclass
class CheckReport:
    healthy: bool
    raised: list[dict[str, str]] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    queues: dict[str, dict[str, Any]] = field(default_factory=dict)
    broker_error: str | None = None
    notified: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def gather_facts(settings: config.Settings, catalog: Catalog, celery_app: Celery, *,
                 self_queue: str | None = None, now: float | None = None) -> tuple[policy.HealthFacts, policy.Limits]:
    """Every fact the policy needs (broker, canaries, workers, depths, beat, collectors, waiting items)."""
    from t0dqm.status import queue_depths

    now = time.time() if now is None else now
    cfg = health_settings(settings)
    limits = policy.limits_from(cfg, settings["alarms"]["latency_seconds"], settings["archive"]["verify_delay"])
    bases = policy.queues_to_check(BASE_QUEUES, cfg, producer_hosts(settings))
    names = {base: queue_name(base, settings) for base in bases}
    broker_error: str | None = None
    depths: dict[str, int] = {}
    outcomes: dict[str, CanaryOutcome] = {}
    listening: dict[str, list[str]] | None = None
    try:
        depths = queue_depths(celery_app.conf.broker_url, list(names.values()))
        outcomes = canaries(celery_app, list(names.values()), float(cfg["canary_timeout"]), self_queue=self_queue,
                            now=now)
        listening = consumers(celery_app, float(cfg["inspect_timeout"]))
    except Exception as exc:  # noqa: BLE001 - the broker is down: that is the finding
        broker_error = f"{type(exc).__name__}: {exc}"
    queue_facts = []
    for full in names.values():
        outcome = outcomes.get(full, CanaryOutcome(policy.CANARY_UNKNOWN))
        who = None if listening is None else tuple(listening.get(full, ()))
        queue_facts.append(policy.QueueFacts(full, outcome.status, outcome.waited, who, depths.get(full)))
    known = catalog_facts(catalog, settings)
    waiting, totals = waiting_items(catalog, settings, limits, now, int(cfg["max_items"]))
    facts = policy.HealthFacts(now=now, queues=tuple(queue_facts), broker_error=broker_error,
                               beat_heartbeat_at=known["beat_heartbeat_at"], collectors=known["collectors"],
                               waiting=tuple(waiting), waiting_totals=totals, quarantined=known["quarantined"],
                               active_keys=tuple(known["active_keys"]))
    return facts, limits


def apply(catalog: Catalog, decision: policy.HealthDecision) -> None:
    from t0dqm.catalog.alarms import clear_alarm, raise_alarm

    for spec in decision.raise_:
        raise_alarm(catalog, spec.key, spec.message, severity=spec.severity)
    for key in decision.clear:
        clear_alarm(catalog, key)


def run_check(settings: config.Settings, catalog: Catalog, celery_app: Celery | None = None, *,
              self_queue: str | None = None, notify: bool = True) -> CheckReport:
    """Gather, decide, raise/clear, dispatch notifications. Works in a worker or in any process."""
    started = time.monotonic()
    celery_app = celery_app or app
    facts, limits = gather_facts(settings, catalog, celery_app, self_queue=self_queue)
    decision = policy.decide(facts, limits)
    apply(catalog, decision)
    report = CheckReport(healthy=decision.healthy, raised=[asdict(a) for a in decision.raise_],
                         cleared=list(decision.clear), broker_error=facts.broker_error,
                         queues={q.name: {"canary": q.canary, "waited": round(q.canary_waited, 3),
                                          "consumers": None if q.consumers is None else list(q.consumers),
                                          "depth": q.depth} for q in facts.queues})
    if notify:
        from t0dqm.notify import dispatch_pending

        report.notified = dispatch_pending(catalog, settings)
    report.seconds = round(time.monotonic() - started, 3)
    return report


def _delivered_from(task: T0Task) -> str | None:
    info = getattr(task.request, "delivery_info", None) or {}
    return info.get("routing_key") or None


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.health.check", soft_time_limit=120, time_limit=150)
def check(self: T0Task) -> dict[str, Any]:
    """Beat (5 min): canaries, workers, depths, beat heartbeat, collectors, latency -> alarms, notify.
    Skips (with a log line) while a previous check still runs; folds the running counts' deltas."""
    try:
        with self.lease("health:check", seconds=150):
            counts.compact(self.catalog)
            report = run_check(self.settings, self.catalog, self.app, self_queue=_delivered_from(self))
    except LeaseBusy:
        return {"skipped": True}
    if not report.healthy or report.cleared:
        self.log("health", level=logging.WARNING if not report.healthy else logging.INFO,
                 raised=[a["key"] for a in report.raised], cleared=report.cleared)
    return report.as_dict()


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.health.notify", soft_time_limit=240, time_limit=300)
def notify(self: T0Task) -> int:
    """Beat (1 min): send due alarm notifications (rate-limited per alarm key)."""
    from t0dqm.notify import dispatch_pending

    return dispatch_pending(self.catalog, self.settings)


def summary_lines(report: CheckReport, queues: Iterable[str] | None = None) -> list[str]:
    """Human-readable lines for the CLI."""
    lines = [f"health   {'OK' if report.healthy else 'UNHEALTHY'} ({report.seconds:.1f} s)"]
    if report.broker_error:
        lines.append(f"broker   {report.broker_error}")
    for name in queues or sorted(report.queues):
        q = report.queues[name]
        who = "?" if q["consumers"] is None else (", ".join(q["consumers"]) or "-")
        lines.append(f"  {name:<24} canary={q['canary']:<10} depth={q['depth']!s:<6} workers={who}")
    for a in report.raised:
        lines.append(f"  RAISE [{a['severity']}] {a['key']}: {a['message']}")
    for key in report.cleared:
        lines.append(f"  clear {key}")
    return lines
