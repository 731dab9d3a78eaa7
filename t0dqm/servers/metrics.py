"""Prometheus metrics: a custom collector that reads the catalog and Redis on every scrape.

Served by ``t0dqm metrics serve`` (default 127.0.0.1:9808, settings ``metrics``). Metric names:

- ``t0dqm_queue_depth{queue}``                       messages waiting per queue
- ``t0dqm_files{state}``, ``t0dqm_files_index{state}``, ``t0dqm_archives{state}``   items per state
- ``t0dqm_archived_bytes``                           sum of archive sizes in safe states
- ``t0dqm_quota_used_bytes{class}``, ``t0dqm_quota_bytes{class}``, ``t0dqm_quota_use_ratio{class}``
- ``t0dqm_alarms_active{severity}``                  active alarms by severity
- ``t0dqm_quarantined``                              unresolved quarantined uploads
- ``t0dqm_tasks_total{task,outcome}``, ``t0dqm_task_seconds_total{task}``  from T0Task's Redis hash
- ``t0dqm_beat_heartbeat_age_seconds``               seconds since the beat heartbeat (-1: never)
- ``t0dqm_oldest_waiting_seconds{step}``             age of the oldest item waiting at a step (0: none)
- ``t0dqm_broker_up``, ``t0dqm_catalog_up``, ``t0dqm_scrape_seconds``
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from t0dqm import config
from t0dqm.catalog import alarms, counts, heartbeats, states
from t0dqm.catalog import status as views
from t0dqm.catalog.db import Catalog
from t0dqm.formats import dropbox

log = logging.getLogger("t0dqm.servers.metrics")

PRESENT = (states.RECEIVED, states.ZIPPED)


def task_counters(client: redis.Redis, key: str) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """({(task, outcome): count}, {task: seconds}) from the hash T0Task._record_metric writes."""
    counts: dict[tuple[str, str], float] = {}
    seconds: dict[str, float] = {}
    for field, value in (client.hgetall(key) or {}).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        task, _, kind = name.rpartition(":")
        if not task:
            continue
        number = float(value)
        if kind == "seconds":
            seconds[task] = number
        else:
            counts[(task, kind)] = number
    return counts, seconds


def oldest_waiting(conn: Any, settings: config.Settings, now: float) -> dict[str, float]:
    """Age in seconds of the oldest item waiting at each step (0 when nothing waits)."""

    def age(value: Any) -> float:
        return max(0.0, now - float(value)) if value is not None else 0.0

    out = {step: age(since) for step, since in views.oldest_waiting_since(conn).items()}
    mtimes = []
    for cand in dropbox.scan(settings.dropbox):
        try:
            mtimes.append(os.stat(cand.origin).st_mtime)
        except FileNotFoundError:
            continue
    out["receive"] = age(min(mtimes)) if mtimes else 0.0
    return out


class T0Collector(Collector):
    """Reads everything at scrape time; an unreachable broker or catalog shows as ``*_up 0``."""

    def __init__(self, settings: config.Settings, catalog: Catalog, broker_url: str, prefix: str) -> None:
        self.settings, self.catalog, self.broker_url, self.prefix = settings, catalog, broker_url, prefix

    def describe(self) -> list[Metric]:
        return []  # collected on demand only (no scrape at registration)

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        yield from self._broker()
        yield from self._catalog()
        scrape = GaugeMetricFamily("t0dqm_scrape_seconds", "Seconds the last scrape took")
        scrape.add_metric([], time.monotonic() - started)
        yield scrape

    def _broker(self) -> Iterator[Metric]:
        from t0dqm.celery import all_queues, queue_name, redis_client
        from t0dqm.tasks.queued import queue_depths

        up = GaugeMetricFamily("t0dqm_broker_up", "1 when the broker answered this scrape")
        depth = GaugeMetricFamily("t0dqm_queue_depth", "Messages waiting per queue", labels=["queue"])
        tasks = CounterMetricFamily(
            "t0dqm_tasks", "Task runs per outcome (ok, error, timeout)", labels=["task", "outcome"]
        )
        secs = CounterMetricFamily("t0dqm_task_seconds", "Seconds spent in each task", labels=["task"])
        try:
            hosts = sorted({str(p["host"]) for p in self.settings.producers})
            queues = all_queues(self.settings) + [queue_name(f"collect.{h}", self.settings) for h in hosts]
            for q, n in queue_depths(self.broker_url, queues).items():
                depth.add_metric([q], n)
            client = redis_client(self.broker_url, settings=self.settings)
            try:
                counts, seconds = task_counters(client, f"{self.prefix}metrics:tasks")
            finally:
                client.close()
            for (task, outcome), runs in sorted(counts.items()):
                tasks.add_metric([task, outcome], runs)
            for task, spent in sorted(seconds.items()):
                secs.add_metric([task], spent)
            up.add_metric([], 1)
        except (redis.RedisError, OSError) as exc:
            log.warning("metrics: broker unreachable: %s", exc)
            up.add_metric([], 0)
        yield up
        yield depth
        yield tasks
        yield secs

    def _catalog(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("t0dqm_catalog_up", "1 when the catalog answered this scrape")
        try:
            families = list(self._catalog_families())
            up.add_metric([], 1)
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; the error shows as catalog_up 0
            log.warning("metrics: catalog unreadable: %s", exc)
            families = []
            up.add_metric([], 0)
        yield up
        yield from families

    def _catalog_families(self) -> Iterator[Metric]:
        now = time.time()
        settings = self.settings
        safe = states.archive_safe_states(bool(settings.archive.require_tape))
        with self.catalog.read() as conn:
            totals = counts.totals(conn)  # running counts: no scan of files or archives
            file_states = counts.by(totals, "state", "file")
            index_states = counts.by(totals, "index_state", "file")
            archive_states = counts.by(totals, "state", "archive")
            archived = sum(counts.by(totals, "state", "archive", states=safe, measure="bytes").values())
            used = counts.by(totals, "cls", "file", states=PRESENT, measure="bytes")
            by_severity = alarms.active_by_severity(conn)
            quarantined = views.unresolved_quarantined(conn)
            beat = heartbeats.lease_heartbeat_at(conn, "heartbeat:beat")
            waiting = oldest_waiting(conn, settings, now)

        def gauge(
            name: str, doc: str, label: str, values: dict[str, Any], keys: tuple[str, ...] = ()
        ) -> Metric:
            g = GaugeMetricFamily(name, doc, labels=[label])
            for key in sorted(set(keys) | set(values)):
                g.add_metric([str(key)], float(values.get(key, 0) or 0))
            return g

        yield gauge(
            "t0dqm_files",
            "DQM files per state",
            "state",
            file_states,
            (states.RECEIVED, states.ZIPPED, states.REMOVED),
        )
        yield gauge(
            "t0dqm_files_index",
            "DQM files per index state",
            "state",
            index_states,
            (
                states.INDEX_PENDING,
                states.INDEX_PARTIAL,
                states.INDEXED,
                states.INDEX_SKIPPED,
                states.INDEX_FAILED,
            ),
        )
        yield gauge(
            "t0dqm_archives", "Zip archives per state", "state", archive_states, states.ARCHIVE_STATES
        )
        g = GaugeMetricFamily(
            "t0dqm_archived_bytes", f"Bytes in archives safe at the endpoint ({', '.join(safe)})"
        )
        g.add_metric([], float(archived))
        yield g
        quotas = {str(k): int(v) for k, v in settings.quota.items()}
        yield gauge(
            "t0dqm_quota_used_bytes", "Bytes of present ROOT files per class", "class", used, tuple(quotas)
        )
        yield gauge("t0dqm_quota_bytes", "Configured quota per class", "class", quotas)
        ratio = GaugeMetricFamily("t0dqm_quota_use_ratio", "Used / quota per class", labels=["class"])
        for cls in sorted(set(quotas) | set(used)):
            quota = quotas.get(cls)
            if quota:
                ratio.add_metric([cls], float(used.get(cls, 0) or 0) / quota)
        yield ratio
        yield gauge(
            "t0dqm_alarms_active",
            "Active alarms per severity",
            "severity",
            by_severity,
            ("info", "warning", "critical"),
        )
        g = GaugeMetricFamily("t0dqm_quarantined", "Unresolved quarantined uploads")
        g.add_metric([], float(quarantined))
        yield g
        g = GaugeMetricFamily(
            "t0dqm_beat_heartbeat_age_seconds", "Seconds since the beat heartbeat (-1: never)"
        )
        g.add_metric([], now - float(beat) if beat is not None else -1.0)
        yield g
        yield gauge(
            "t0dqm_oldest_waiting_seconds", "Age of the oldest item waiting at each step", "step", waiting
        )


def make_registry(
    settings: config.Settings,
    catalog: Catalog | None = None,
    broker_url: str | None = None,
    prefix: str | None = None,
) -> CollectorRegistry:
    """A registry holding only the t0dqm collector (no process/platform metrics of the exporter)."""
    from t0dqm.catalog.db import get_catalog
    from t0dqm.celery import app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        T0Collector(
            settings,
            catalog or get_catalog(settings.catalog_url),
            broker_url or app.conf.broker_url,
            prefix if prefix is not None else app.conf.t0dqm_prefix,
        )
    )
    return registry


def serve(
    settings: config.Settings,
    address: str = "127.0.0.1",
    port: int = 9808,
    registry: CollectorRegistry | None = None,
) -> Any:
    """Start the HTTP endpoint in a daemon thread; returns the server (``.server_port``, ``.shutdown()``).

    Served by :mod:`t0dqm.servers.webserve` with the bounds of the ``metrics`` settings (idle timeout, open
    connections, scrapes collected at once), as the upload endpoint is."""
    from t0dqm.servers import webserve

    cfg = settings.metrics
    limits = webserve.Limits(timeout=float(cfg.timeout), max_connections=int(cfg.max_connections))
    server = webserve.Hosted(
        webserve.prometheus(registry or make_registry(settings), int(cfg.max_scrapes)),
        address,
        port,
        limits=limits,
        name="metrics",
    )
    server.start()
    return server
