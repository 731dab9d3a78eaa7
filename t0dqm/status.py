"""The operator's picture: workers, queue depths, items per state, alarms. Used by `t0dqm status`,
the health checks and the Prometheus exporter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from t0dqm import config
from t0dqm.catalog import alarms
from t0dqm.catalog import counts as running_counts
from t0dqm.catalog import status as views
from t0dqm.catalog.db import Catalog
from t0dqm.catalog.gui import counts as gui_counts
from t0dqm.tasks.queued import queue_depths


@dataclass
class Snapshot:
    broker_url: str
    workers: dict[str, list[str]] = field(default_factory=dict)  # worker -> queues consumed
    broker_error: str | None = None
    queues: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    index: dict[str, int] = field(default_factory=dict)
    archives: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    gui: dict[str, int] = field(default_factory=dict)  # DQM GUI registration (t0dqm.catalog.gui.counts)
    gui_url: str = ""
    t0_outputs: dict[str, int] = field(default_factory=dict)  # Tier-0 disk outputs per state
    t0_rules: dict[str, int] = field(default_factory=dict)  # their Rucio rules per state
    active_alarms: list[dict[str, Any]] = field(default_factory=list)
    # messages sent / skipped (already queued) / received per step, and received per file
    messages: dict[str, Any] = field(default_factory=dict)


def _nonzero(by_state: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in by_state.items() if v}


def catalog_counts(catalog: Catalog) -> dict[str, Any]:
    with catalog.read() as conn:
        totals = running_counts.totals(conn)  # running counts: no scan of files or archives (issue 14)
        return {
            "files": _nonzero(running_counts.by(totals, "state", "file")),
            "index": _nonzero(running_counts.by(totals, "index_state", "file")),
            "archives": _nonzero(running_counts.by(totals, "state", "archive")),
            "t0_outputs": views.t0_output_states(conn),
            "t0_rules": views.t0_rule_states(conn),
            "quarantined": views.unresolved_quarantined(conn),
            "gui": gui_counts(conn),
            "active_alarms": alarms.active_newest_first(conn),
        }


def snapshot(settings: config.Settings, catalog: Catalog, *, with_workers: bool = True) -> Snapshot:
    from t0dqm.celery import all_queues, app

    snap = Snapshot(broker_url=app.conf.broker_url or "")
    try:
        snap.queues = queue_depths(snap.broker_url, all_queues(settings))
        if with_workers:
            replies = app.control.inspect(timeout=1.0).active_queues() or {}
            snap.workers = {name: sorted(q["name"] for q in qs) for name, qs in replies.items()}
    except (redis.RedisError, OSError) as exc:
        snap.broker_error = str(exc)
    counts = catalog_counts(catalog)
    snap.files, snap.index, snap.archives = counts["files"], counts["index"], counts["archives"]
    snap.quarantined, snap.active_alarms = counts["quarantined"], counts["active_alarms"]
    snap.gui, snap.gui_url = counts["gui"], settings.gui.register_url
    snap.t0_outputs, snap.t0_rules = counts["t0_outputs"], counts["t0_rules"]
    if snap.broker_error is None:
        snap.messages = messages(snap.broker_url, app.conf.t0dqm_prefix, sum(snap.files.values()))
    return snap


def messages(broker_url: str, prefix: str, files: int, timeout: float = 2.0) -> dict[str, Any]:
    """Messages per step and per file (see t0dqm.tasks.queued.message_counts); {} when Redis fails."""
    from t0dqm.celery import redis_client
    from t0dqm.tasks.queued import message_counts

    client = redis_client(broker_url, timeout)
    try:
        return message_counts(client, prefix, files)
    except (redis.RedisError, OSError):
        return {}
    finally:
        client.close()


def render(snap: Snapshot) -> str:
    lines = [
        f"broker   {snap.broker_url or '(not set)'}"
        + (f"  (unreachable: {snap.broker_error})" if snap.broker_error else "")
    ]
    lines.append(f"workers  {len(snap.workers)}")
    for name, queues in sorted(snap.workers.items()):
        lines.append(f"  {name}: {', '.join(queues)}")
    lines.append("queues   " + "  ".join(f"{q}={n}" for q, n in snap.queues.items()))
    for title, counts in (("files", snap.files), ("index", snap.index), ("archives", snap.archives)):
        lines.append(f"{title:<8} " + ("  ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "-"))
    for title, counts in (("t0 outputs", snap.t0_outputs), ("t0 rules", snap.t0_rules)):
        if counts:
            lines.append(f"{title} " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    lines.append(f"quarantined {snap.quarantined}")
    if snap.gui_url or any(snap.gui.values()):
        lines.append(
            f"gui      {snap.gui_url or 'off'}  " + "  ".join(f"{k}={v}" for k, v in snap.gui.items())
        )
    if snap.messages.get("per_file") is not None:
        lines.append(
            f"messages {snap.messages['received']} received for the chain steps, "
            f"{snap.messages['per_file']} per file"
        )
    lines.append(f"alarms   {len(snap.active_alarms)} active")
    for alarm in snap.active_alarms[:10]:
        lines.append(f"  [{alarm['severity']}] {alarm['key']}: {alarm['message']} (x{alarm['count']})")
    return "\n".join(lines)
