"""Step: health (aliveCheck's successor). The facts from the catalog and the dropbox, and applying a decision.

The facts the catalog holds (beat heartbeat, collectors, quarantine, items waiting past their step's
limit) are gathered here; :mod:`t0dqm.policies.health` decides which alarms to raise and clear, and
:func:`decide` applies that. The broker facts (a canary round trip through each queue, the workers
listening, the depths) are probes of the broker, so they stay in :mod:`t0dqm.tasks.health`, which
passes them in.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from t0dqm import config
from t0dqm.catalog import queries, states
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog
from t0dqm.formats import dropbox
from t0dqm.notify import dispatch_pending
from t0dqm.policies import health as policy

CHECK_TASK = "t0dqm.tasks.health.check"
NOTIFY_TASK = "t0dqm.tasks.health.notify"
BEAT_LEASE = "heartbeat:beat"
CHECK_LEASE = "health:check"


def producer_hosts(settings: config.Settings) -> list[str]:
    return sorted({str(p["host"]) for p in settings.producers})


def limits(settings: config.Settings) -> policy.Limits:
    """The per-step latency limits of the health check."""
    return policy.limits_from(
        settings.health,  # type: ignore[arg-type]  # a Mapping: Mapping.register(config.Table)
        settings.alarms.latency_seconds,
        settings.archive.verify_delay,
    )


# -- catalog facts ---------------------------------------------------------------------------------


def _items(step: str, rows: list[tuple[str, float]]) -> list[policy.WaitingItem]:
    return [policy.WaitingItem(step, label, since) for label, since in rows]


def waiting_items(
    catalog: Catalog, settings: config.Settings, limits: policy.Limits, now: float, max_items: int
) -> tuple[list[policy.WaitingItem], dict[str, int]]:
    """Items waiting longer than their step's limit (oldest first, at most max_items per step)."""
    items: list[policy.WaitingItem] = []
    totals: dict[str, int] = {}
    lim = limits.latency
    with catalog.read() as conn:
        got, totals["index"] = queries.waiting_index(conn, now - lim["index"], max_items)
        items += _items("index", got)
        got, totals["zip"] = queries.waiting_zip(conn, now - lim["zip"], max_items)
        items += _items("zip", got)
        for step, state, column in (
            ("stage", states.FROZEN, "frozen_at"),
            ("verify", states.COPIED, "copied_at"),
        ):
            got, totals[step] = queries.waiting_archives(conn, state, column, now - lim[step], max_items)
            items += _items(step, got)
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
        beat = queries.lease_heartbeat(conn, BEAT_LEASE)
        collectors: dict[str, float | None] = {
            host: queries.collector_heartbeat(conn, host) for host in hosts
        }
        quarantined = queries.quarantined_count(conn)
        active = queries.active_alarm_keys(conn, policy.PREFIX)
    return {
        "beat_heartbeat_at": beat,
        "collectors": collectors,
        "quarantined": quarantined,
        "active_keys": active,
    }


def facts(
    settings: config.Settings,
    catalog: Catalog,
    queues: tuple[policy.QueueFacts, ...],
    broker_error: str | None,
    now: float,
) -> tuple[policy.HealthFacts, policy.Limits]:
    """Every fact the policy needs: the broker's (probed by the caller) and the catalog's."""
    cfg = settings.health
    lim = limits(settings)
    known = catalog_facts(catalog, settings)
    waiting, totals = waiting_items(catalog, settings, lim, now, int(cfg.max_items))
    found = policy.HealthFacts(
        now=now,
        queues=queues,
        broker_error=broker_error,
        beat_heartbeat_at=known["beat_heartbeat_at"],
        collectors=known["collectors"],
        waiting=tuple(waiting),
        waiting_totals=totals,
        quarantined=known["quarantined"],
        active_keys=tuple(known["active_keys"]),
    )
    return found, lim


# -- the decision ----------------------------------------------------------------------------------


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


def apply(catalog: Catalog, decision: policy.HealthDecision) -> None:
    for spec in decision.raise_:
        raise_alarm(catalog, spec.key, spec.message, severity=spec.severity)
    for key in decision.clear:
        clear_alarm(catalog, key)


def decide(catalog: Catalog, found: policy.HealthFacts, lim: policy.Limits) -> CheckReport:
    """Ask the policy, raise and clear its alarms; the report (without notifications and time)."""
    decision = policy.decide(found, lim)
    apply(catalog, decision)
    return CheckReport(
        healthy=decision.healthy,
        raised=[asdict(a) for a in decision.raise_],
        cleared=list(decision.clear),
        broker_error=found.broker_error,
        queues={
            q.name: {
                "canary": q.canary,
                "waited": round(q.canary_waited, 3),
                "consumers": None if q.consumers is None else list(q.consumers),
                "depth": q.depth,
            }
            for q in found.queues
        },
    )


def notify(settings: config.Settings, catalog: Catalog) -> int:
    """Send due alarm notifications (rate-limited per alarm key)."""
    return dispatch_pending(catalog, settings)


def summary_lines(report: CheckReport, queues: list[str] | None = None) -> list[str]:
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
