"""Alarms: one row per key in the catalog's ``alarms`` table (notifiers read it and send).

``raise_alarm`` inserts the alarm or bumps its count and last time (re-activating a cleared one);
``clear_alarm`` marks it inactive. Both are idempotent and safe to call on every beat.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from t0dqm.catalog.db import Catalog, alarms

SEVERITIES = ("info", "warning", "critical")


def raise_alarm(catalog: Catalog, key: str, message: str, severity: str = "warning") -> None:
    """Insert or update the alarm ``key`` (active, count + 1, last_at now)."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    now = time.time()
    for _attempt in range(2):
        with catalog.begin() as conn:
            row = conn.execute(select(alarms.c.count, alarms.c.active).where(alarms.c.key == key)).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(alarms).values(
                                key=key,
                                severity=severity,
                                message=message,
                                first_at=now,
                                last_at=now,
                                count=1,
                                active=True,
                            )
                        )
                    return
                except IntegrityError:  # raised concurrently: update instead
                    continue
            values: dict[str, Any] = {
                "severity": severity,
                "message": message,
                "last_at": now,
                "count": row[0] + 1,
                "active": True,
            }
            if not row.active:
                values.update(first_at=now, count=1, notified_at=None)
            conn.execute(update(alarms).where(alarms.c.key == key).values(**values))
            return


def clear_alarm(catalog: Catalog, key: str) -> bool:
    """Mark the alarm inactive; True when it was active."""
    with catalog.begin() as conn:
        result = conn.execute(
            update(alarms)
            .where(alarms.c.key == key, alarms.c.active.is_(True))
            .values(active=False, last_at=time.time())
        )
        return result.rowcount == 1


def active_alarms(catalog: Catalog) -> list[dict[str, Any]]:
    with catalog.read() as conn:
        return [dict(r) for r in conn.execute(select(alarms).where(alarms.c.active.is_(True))).mappings()]


# -- reads and claims of the notifiers (t0dqm.notify), status and metrics ------------------------------------


def active_and_recent(conn: Connection, since: float) -> list[Row[*tuple[Any, ...]]]:
    """Active alarms and those changed since ``since``, active first, then newest first."""
    return list(
        conn.execute(
            select(alarms)
            .where(or_(alarms.c.active.is_(True), alarms.c.last_at >= since))
            .order_by(alarms.c.active.desc(), alarms.c.last_at.desc())
        ).all()
    )


def active_oldest_first(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """Active alarms in the order they were first raised (the notifiers' worklist)."""
    return list(
        conn.execute(select(alarms).where(alarms.c.active.is_(True)).order_by(alarms.c.first_at)).all()
    )


def active_newest_first(conn: Connection) -> list[dict[str, Any]]:
    """Active alarms as dicts, most recently raised again first (status)."""
    return [
        dict(r)
        for r in conn.execute(
            select(alarms).where(alarms.c.active.is_(True)).order_by(alarms.c.last_at.desc())
        ).mappings()
    ]


def active_by_severity(conn: Connection) -> dict[str, int]:
    """Number of active alarms per severity (metrics)."""
    return {
        str(k): int(v)
        for k, v in conn.execute(
            select(alarms.c.severity, func.count())
            .where(alarms.c.active.is_(True))
            .group_by(alarms.c.severity)
        ).all()
    }


def claim_notification(conn: Connection, key: str, notified_at: float | None, now: float) -> bool:
    """Set notified_at=now only if the alarm is active and its notified_at is still ``notified_at``
    (one dispatcher wins)."""
    cond = alarms.c.notified_at.is_(None) if notified_at is None else alarms.c.notified_at == notified_at
    result = conn.execute(
        update(alarms).where(alarms.c.key == key, alarms.c.active.is_(True), cond).values(notified_at=now)
    )
    return result.rowcount == 1


def unclaim_notification(conn: Connection, key: str, now: float, notified_at: float | None) -> None:
    """Give back a claim taken at ``now``: notified_at is ``notified_at`` again (nothing was delivered)."""
    conn.execute(
        update(alarms).where(alarms.c.key == key, alarms.c.notified_at == now).values(notified_at=notified_at)
    )
