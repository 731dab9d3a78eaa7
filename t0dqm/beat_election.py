"""An elected beat: run ``celery -A t0dqm beat`` on two or more hosts and exactly one of them sends.

The lock is a catalog lease (``beat-leader:<flavour>``), not a Redis one: the catalog is the truth and
survives a flushed or replaced Redis, which a Redis lock (celery-redbeat) does not. Each tick the
scheduler takes or renews the lease before it may send one entry, so a leader that lost the lease
(paused, cut off from the catalog) stops at its next send. A standby takes over as soon as the
leader's heartbeat is stale (heartbeat.stale_after) or its lease was not renewed for
heartbeat.leader_lease seconds; a leader that stops cleanly hands over at once. Every takeover is an
audited lease-takeover. What the leader sends is recorded in the catalog (beat_runs), so the new
leader goes on from the old one's last runs instead of sending every entry again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from celery.beat import ScheduleEntry, Scheduler
from sqlalchemy.exc import SQLAlchemyError

from t0dqm import config
from t0dqm.catalog import heartbeats
from t0dqm.catalog.db import Catalog, get_catalog
from t0dqm.identity import process_identity

logger = logging.getLogger("t0dqm.beat")


def leader_lease_name(settings: config.Settings) -> str:
    return f"beat-leader:{settings.flavour}"


def current_leader(catalog: Catalog, settings: config.Settings) -> str | None:
    """The owner of the beat leader lease, if any (status, tests)."""
    with catalog.read() as conn:
        return heartbeats.lease_owner(conn, leader_lease_name(settings))


class ElectedScheduler(Scheduler):
    """celery beat scheduler that sends only while it holds the catalog's beat leader lease."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.leading = False
        self._leader_seen: str | None = None
        self._in_catalog = 0  # > 0 while a catalog transaction of ours is open (see close)
        super().__init__(*args, **kwargs)

    @contextmanager
    def _catalog_call(self) -> Iterator[None]:
        self._in_catalog += 1
        try:
            yield
        finally:
            self._in_catalog -= 1

    # -- election -----------------------------------------------------------------------------------
    @property
    def settings(self) -> config.Settings:
        return config.get()

    @property
    def catalog(self) -> Catalog:
        return get_catalog(self.settings.catalog_url)

    @property
    def owner(self) -> str:
        return f"{process_identity()}:beat"

    @property
    def standby_interval(self) -> float:
        return float(self.settings.heartbeat.interval)

    def elect(self) -> bool:
        """Take or renew the leader lease; False (and no sending) when another beat holds it or the
        catalog cannot be reached."""
        settings = self.settings
        try:
            with self._catalog_call():
                won = self.catalog.acquire_lease(
                    leader_lease_name(settings), self.owner, float(settings.heartbeat.leader_lease)
                )
        except SQLAlchemyError as exc:
            if self.leading:
                logger.warning("beat: catalog unreachable, not sending until it is back: %s", exc)
            won = False
        if won and not self.leading:
            logger.info("beat: leading (%s)", self.owner)
            self._resume_from_catalog()
        elif not won:
            self._note_standby()
        self.leading = won
        return won

    def _note_standby(self) -> None:
        try:
            with self._catalog_call():
                leader = current_leader(self.catalog, self.settings)
        except SQLAlchemyError:
            leader = None
        if leader != self._leader_seen or self.leading:
            logger.info("beat: standby, leader is %s", leader)
        self._leader_seen = leader

    def _resume_from_catalog(self) -> None:
        """Go on from the last runs the previous leader recorded (later of theirs and ours)."""
        try:
            with self._catalog_call():
                runs = self.catalog.beat_last_runs(self._prefix)
        except SQLAlchemyError as exc:
            logger.warning("beat: last runs unavailable, using this beat's own: %s", exc)
            return
        for name, entry in self.schedule.items():
            at = runs.get(name)
            if at is not None:
                recorded = datetime.fromtimestamp(at, tz=UTC)
                if entry.last_run_at is None or recorded > _aware(entry.last_run_at):
                    entry.last_run_at = recorded
        self._heap = None  # rebuild the heap from the updated entries

    @property
    def _prefix(self) -> str:
        return f"{self.settings.flavour}:"

    # -- celery.beat.Scheduler ----------------------------------------------------------------------
    def tick(self, *args: Any, **kwargs: Any) -> float:
        if not self.elect():
            return self.standby_interval
        return min(super().tick(*args, **kwargs), self.standby_interval)

    def apply_entry(self, entry: ScheduleEntry, producer: Any = None) -> None:
        super().apply_entry(entry, producer=producer)
        try:
            with self._catalog_call():
                self.catalog.record_beat_run(self._prefix + entry.name, time.time(), self.owner)
        except SQLAlchemyError as exc:  # the next leader may send this entry once more: harmless
            logger.warning("beat: could not record the run of %s: %s", entry.name, exc)

    def close(self) -> None:
        """Hand the leadership over. celery calls this from its SIGTERM handler too, which may interrupt
        our own lease transaction (its row lock would block the release until the statement timeout):
        then it does nothing, and beat's shutdown calls it again once that transaction is rolled back."""
        super().close()
        if self._in_catalog:
            return
        if self.leading:
            try:
                self.catalog.release_lease(leader_lease_name(self.settings), self.owner)
                logger.info("beat: leadership handed over (clean stop)")
            except SQLAlchemyError as exc:
                logger.warning("beat: could not release the leader lease: %s", exc)
            self.leading = False

    @property
    def info(self) -> str:
        return f"    . elected by the catalog lease {leader_lease_name(self.settings)} ({self.owner})"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
