"""Heartbeats: each process that can hold a claim refreshes its catalog row every few seconds.

As in rucio's heartbeats, liveness is a row per process refreshed on a timer; a holder whose row is
older than ``heartbeat.stale_after`` is dead wherever it ran (t0dqm.catalog.db.dead_owners). One daemon
thread per catalog URL per process does the refreshing; it starts on the first claim or lease the
process takes in that catalog (the first beat is written before the claim), and eagerly at worker,
pool child and beat start (t0dqm.celery), so ``celery -A t0dqm worker|beat`` needs nothing else.
A clean exit deletes the row, so the process's leftovers are free at once. After fork the child
draws a new identity and starts its own thread when it needs one.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time

from t0dqm.identity import locator, process_identity

logger = logging.getLogger("t0dqm.heartbeat")

REAP_AFTER = 86400.0  # heartbeat rows of processes dead for a day are dropped
REAP_EVERY = 100  # beats between two reaps


def _settings() -> tuple[float, str]:
    from t0dqm import config

    return float(config.get().heartbeat.interval), config.get().catalog_url


class Heartbeat:
    """The beating thread of one process in one catalog."""

    def __init__(self, url: str, role: str, interval: float) -> None:
        from t0dqm.catalog.db import Catalog

        self.url, self.role, self.interval = url, role, interval
        self.identity = process_identity()
        self.started_at = time.time()
        self.catalog = Catalog(url)
        self.stopping = threading.Event()
        self.beats = 0
        self.thread = threading.Thread(target=self._run, name=f"t0dqm-heartbeat-{role}", daemon=True)

    def start(self) -> None:
        self.beat()  # synchronous: the row exists before anything is claimed
        self.thread.start()

    def beat(self) -> None:
        self.catalog.beat(self.identity, self.role, locator(), self.started_at)
        self.beats += 1
        if self.beats % REAP_EVERY == 0:
            self.catalog.reap_heartbeats(REAP_AFTER)

    def _run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.beat()
            except Exception as exc:  # noqa: BLE001 - the catalog may be away for a while; keep trying
                logger.warning("heartbeat of %s failed: %s", self.identity, exc)

    def stop(self, forget: bool = True) -> None:
        self.stopping.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=self.interval + 30)
        if forget:
            try:
                self.catalog.forget(self.identity)
            except Exception as exc:  # noqa: BLE001 - it goes stale by itself then
                logger.warning("could not remove heartbeat of %s: %s", self.identity, exc)
        self.catalog.dispose()


_lock = threading.Lock()
_beats: dict[str, Heartbeat] = {}
_orphans: list[Heartbeat] = []  # a parent's, inherited by fork: never touched (shared sockets)
_role = "process"


def ensure(url: str | None = None, role: str | None = None) -> Heartbeat:
    """The heartbeat of this process in catalog ``url`` (default: the configured one), started if needed."""
    global _role
    interval, default_url = _settings()
    url = url or default_url
    with _lock:
        if role:
            _role = role
        hb = _beats.get(url)
        if hb is None or hb.identity != process_identity():
            hb = Heartbeat(url, _role, interval)
            try:
                hb.start()
            except Exception:
                hb.catalog.dispose()  # the catalog is away: the caller retries, nothing left open
                raise
            _beats[url] = hb
        elif role and hb.role != role:
            hb.role = role
        return hb


def stop_all(forget: bool = True) -> None:
    """Stop every heartbeat of this process (clean exit, tests)."""
    with _lock:
        beats = list(_beats.values())
        _beats.clear()
    for hb in beats:
        hb.stop(forget=forget)


def _after_fork_in_child() -> None:
    """Threads do not survive fork: forget the parent's heartbeats without closing their connections."""
    global _lock
    _lock = threading.Lock()
    _orphans.extend(_beats.values())
    _beats.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(stop_all)
