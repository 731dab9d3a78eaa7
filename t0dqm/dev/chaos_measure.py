"""What `t0dqm chaos --hosts N` measures besides the invariants.

- ``Sampler``: every 0.5 s, the depth of each queue in Redis (kombu keeps a queue in a list named after
  it, plus one list per priority step), the reserved-but-unacked messages, the items pending at each
  step in the catalog, and the task counters of the metrics hash (summed across Redis restarts).
- ``held_by`` / ``takeover``: what a host held when it was killed, and when other hosts moved each item
  on (from the catalog's audit rows and zip members).
- ``first_send_after``: when a beat next sent a task after the leader was killed (from the beats' logs).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from t0dqm import config
from t0dqm.catalog import audit, heartbeats
from t0dqm.catalog import status as views
from t0dqm.catalog.db import Catalog, Connection
from t0dqm.formats import dropbox
from t0dqm.tasks.queued import CHAIN_STEPS, PRIORITY_STEPS, queue_lists

BOUND_SLACK = 50  # target: queue depth <= pending items + 50
# Tasks handling one item (a file, a batch of uploads, an archive): their runs per file are reported.
ITEM_TASKS = CHAIN_STEPS


def pending_items(conn: Connection, settings: config.Settings) -> dict[str, int]:
    """Items waiting at each queue's steps (the bound a queue's depth is held to)."""
    pending = views.pending_at_steps(conn)
    return {
        "receive": len(dropbox.scan_entries(settings.dropbox)),
        "index": pending["index"],
        "index-merge": pending["index-merge"],
        "archive": pending["archive"],
        "tape": pending["tape"],
        "cleanup": 0,
        "sync": 0,
        "ops": 0,
    }


@dataclass
class QueuePeak:
    depth: int = 0
    pending: int = 0  # items pending at the queue's steps at the moment of the peak
    worst_excess: int = -(1 << 30)  # max over samples of depth - pending
    worst_item_excess: int = -(1 << 30)  # the same counting only per-item (chain step) messages

    def as_dict(self) -> dict[str, int]:
        return {
            "max depth": self.depth,
            "pending at max": self.pending,
            "max depth - pending": self.worst_excess,
            "max per-item messages - pending": self.worst_item_excess,
        }


RX_TASK = re.compile(rb'"task":\s*"([^"]+)"')


def item_messages(client: Any, name: str, limit: int = 20000) -> int:
    """Messages of a queue (all its priority lists) for a per-item chain step, i.e. not the periodic
    tasks beat sends (they pile up while a consumer is down, one per period: not what the bound is about)."""
    items = {task.encode() for task in ITEM_TASKS}
    count = 0
    for key in queue_lists(name):
        for body in client.lrange(key, 0, limit - 1):
            m = RX_TASK.search(body)
            count += bool(m and m.group(1) in items)
    return count


@dataclass
class Counters:
    """Monotonic totals of a Redis hash of counters that may be wiped (Redis restarted empty)."""

    base: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def update(self, now: dict[str, float]) -> None:
        for key, before in self.last.items():
            if now.get(key, 0.0) < before:  # wiped since the last sample
                self.base[key] = self.base.get(key, 0.0) + before
        self.last = dict(now)

    def totals(self) -> dict[str, float]:
        keys = set(self.base) | set(self.last)
        return {k: self.base.get(k, 0.0) + self.last.get(k, 0.0) for k in keys}


class Sampler(threading.Thread):
    """Samples queues, pending items and counters until stop(); results() once stopped (or any time:
    every read of the shared state holds the lock)."""

    def __init__(
        self,
        settings: config.Settings,
        broker_url: str,
        queues: dict[str, str],
        counter_keys: tuple[str, ...],
        interval: float = 0.5,
    ) -> None:
        super().__init__(name="chaos-sampler", daemon=True)
        self.settings, self.broker_url, self.queues = settings, broker_url, queues  # base name -> Redis list
        self.counter_keys = counter_keys
        self.interval = interval
        self._stop_event = threading.Event()
        self._lock = threading.Lock()
        self.peaks: dict[str, QueuePeak] = {base: QueuePeak() for base in queues}
        self.unacked_max = 0
        self.samples = 0
        self.errors = 0
        self.counters: dict[str, Counters] = {key: Counters() for key in counter_keys}

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=30)

    def run(self) -> None:
        from t0dqm.celery import redis_client

        client = redis_client(self.broker_url, timeout=2.0, settings=self.settings)
        catalog = Catalog(self.settings.catalog_url)
        try:
            while not self._stop_event.wait(self.interval):
                try:
                    self.sample(client, catalog)
                except Exception:  # noqa: BLE001 - Redis restarting, catalog disk full: skip this sample
                    with self._lock:
                        self.errors += 1
        finally:
            client.close()
            catalog.dispose()

    def sample(self, client: Any, catalog: Catalog) -> None:
        pipe = client.pipeline(transaction=False)
        for name in self.queues.values():
            for key in queue_lists(name):
                pipe.llen(key)
        pipe.hlen("unacked")
        for key in self.counter_keys:
            pipe.hgetall(key)
        replies = pipe.execute()
        per = 1 + len(PRIORITY_STEPS)
        depths = {base: sum(replies[i * per : (i + 1) * per]) for i, base in enumerate(self.queues)}
        unacked = replies[len(self.queues) * per]
        hashes = replies[len(self.queues) * per + 1 :]
        with catalog.read() as conn:
            pending = pending_items(conn, self.settings)
        # per-item messages: looked at only when the whole depth breaks the bound (reading is costly)
        items = {
            base: item_messages(client, self.queues[base])
            for base, depth in depths.items()
            if depth - pending.get(base, 0) > BOUND_SLACK
        }
        with self._lock:
            self.samples += 1
            self.unacked_max = max(self.unacked_max, int(unacked))
            for base, depth in depths.items():
                peak = self.peaks[base]
                waiting = pending.get(base, 0)
                peak.worst_excess = max(peak.worst_excess, depth - waiting)
                peak.worst_item_excess = max(peak.worst_item_excess, items.get(base, depth) - waiting)
                if depth > peak.depth:
                    peak.depth, peak.pending = depth, waiting
            for key, raw in zip(self.counter_keys, hashes, strict=True):
                self.counters[key].update({_text(k): float(v) for k, v in (raw or {}).items()})

    def results(self, n_files: int) -> dict[str, Any]:
        with self._lock:
            peaks = {base: peak.as_dict() for base, peak in self.peaks.items()}
            bound = all(p.worst_excess <= BOUND_SLACK for p in self.peaks.values())
            item_bound = all(p.worst_item_excess <= BOUND_SLACK for p in self.peaks.values())
            totals = {key: c.totals() for key, c in self.counters.items()}
            out: dict[str, Any] = {
                "queue samples": self.samples,
                "queue samples missed": self.errors,
                "queues": peaks,
                f"queue depth <= pending + {BOUND_SLACK} at every sample": bound,
                f"per-item messages <= pending + {BOUND_SLACK} at every sample": item_bound,
                "max unacked (reserved) messages": self.unacked_max,
            }
        out["messages per file"] = messages_per_file(totals, n_files)
        return out


def messages_per_file(totals: dict[str, dict[str, float]], n_files: int) -> dict[str, Any]:
    """Per good file and per chain step: task runs (any outcome) from the task metrics hash, and the
    messages sent, received and not sent because one was already queued from the messages hash (when
    this t0dqm counts them)."""
    n = max(1, n_files)
    out: dict[str, Any] = {}
    for key, counts in totals.items():
        by_kind: dict[str, dict[str, float]] = {}
        for name, value in counts.items():
            task, _, kind = name.rpartition(":")
            by_kind.setdefault(kind, {})[task] = by_kind.get(kind, {}).get(task, 0.0) + value
        if key.endswith(":metrics:tasks"):
            runs: dict[str, float] = {}
            for kind, tasks in by_kind.items():
                if kind != "seconds":
                    for task, value in tasks.items():
                        runs[task] = runs.get(task, 0.0) + value
            table = {task.rsplit(".", 1)[-1]: round(runs[task] / n, 2) for task in ITEM_TASKS if task in runs}
            out["task runs"] = dict(table, **{"all tasks": round(sum(runs.values()) / n, 2)})
        elif key.endswith(":metrics:messages") and counts:
            for kind, title in (
                ("received", "messages received"),
                ("sent", "messages sent"),
                ("deduped", "messages not sent (already queued)"),
            ):
                tasks = by_kind.get(kind, {})
                table = {
                    task.rsplit(".", 1)[-1]: round(tasks[task] / n, 2) for task in ITEM_TASKS if task in tasks
                }
                chain = sum(tasks.get(task, 0.0) for task in ITEM_TASKS)
                out[title] = dict(table, **{"chain steps": round(chain / n, 2)})
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- take-over of a killed host's work ---------------------------------------------------------------


@dataclass
class Held:
    """What a host held when it was killed."""

    archives: list[int] = field(default_factory=list)  # claimed (copy, verify)
    files: list[int] = field(default_factory=list)
    zips: list[int] = field(default_factory=list)  # archives whose zip lease it held
    leases: list[str] = field(default_factory=list)  # every lease name it held

    def count(self) -> int:
        return len(self.archives) + len(self.files) + len(self.zips)


def held_by(catalog: Catalog, host: str, now: float | None = None) -> Held:
    """Unexpired claims and leases whose owner starts with ``host:``."""
    now = now or time.time()
    like = f"{host}:%"
    held = Held()
    with catalog.read() as conn:
        held.archives = views.claimed_by(conn, "archive", like, now)
        held.files = views.claimed_by(conn, "file", like, now)
        held.leases = heartbeats.unexpired_held_by(conn, like, now)
        zip_paths = [name[len("zip:") :] for name in held.leases if name.startswith("zip:")]
        if zip_paths:
            held.zips = views.archive_ids_at(conn, zip_paths)
    return held


def takeover(catalog: Catalog, held: Held, killed_at: float, dead_host: str) -> dict[str, Any]:
    """Seconds from the kill to the first change, by another host, of each item the dead host held:
    an audited transition or take-over of a claimed archive or file, a member added to a zip whose lease
    it held (or that archive's own transition)."""
    delays: list[float] = []
    missing = 0
    with catalog.read() as conn:

        def first_audit(entity: str, item: int) -> float | None:
            return audit.first_change_after(conn, entity, item, killed_at, dead_host)

        for entity, ids in (("archive", held.archives), ("file", held.files)):
            for item in ids:
                at = first_audit(entity, item)
                if at is None:
                    missing += 1
                else:
                    delays.append(at - killed_at)
        for archive_id in held.zips:
            added = views.first_member_added_after(conn, archive_id, killed_at)
            moved = first_audit("archive", archive_id)
            candidates = [t for t in (added, moved) if t is not None]
            if candidates:
                delays.append(min(candidates) - killed_at)
            else:
                missing += 1
    return {
        "items held": held.count(),
        "leases held": len(held.leases),
        "first taken over (s)": round(min(delays), 1) if delays else None,
        "all taken over (s)": round(max(delays), 1) if delays and not missing else None,
        "never taken over": missing,
    }


def first_index_after(catalog: Catalog, at: float) -> float | None:
    """Seconds from ``at`` to the next file moved to indexed (by a merge), if any."""
    with catalog.read() as conn:
        when = audit.first_indexed_after(conn, at)
    return round(when - at, 1) if when is not None else None


# -- beat ------------------------------------------------------------------------------------------

RX_SEND = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}): INFO/\w+\] Scheduler: Sending due task")


def send_times(log: Path) -> list[float]:
    """Wall times of every "Sending due task" line of a celery beat log (local time, as celery logs)."""
    out = []
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        m = RX_SEND.match(line)
        if m:
            out.append(
                # the log stamps are local time without a zone: naive, so timestamp() reads them as local
                datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()  # noqa: DTZ007 - local time
                + int(m.group(2)) / 1000
            )
    return out


def first_send_after(logs: list[Path], at: float) -> float | None:
    """Seconds from ``at`` to the first task any of these beats sent after it."""
    later = [t for log in logs for t in send_times(log) if t > at]
    return round(min(later) - at, 1) if later else None
