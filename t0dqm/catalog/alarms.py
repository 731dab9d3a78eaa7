"""Alarms: one row per key in the catalog's ``alarms`` table (notifiers read it and send).

``raise_alarm`` inserts the alarm or bumps its count and last time (re-activating a cleared one);
``clear_alarm`` marks it inactive. Both are idempotent and safe to call on every beat.
"""

from __future__ import annotations

import time

from sqlalchemy import insert, select, update
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
                        conn.execute(insert(alarms).values(key=key, severity=severity, message=message,
                                                           first_at=now, last_at=now, count=1, active=True))
                    return
                except IntegrityError:  # raised concurrently: update instead
                    continue
            values = {"severity": severity, "message": message, "last_at": now, "count": row.count + 1,
                      "active": True}
            if not row.active:
                values.update(first_at=now, count=1, notified_at=None)
            conn.execute(update(alarms).where(alarms.c.key == key).values(**values))
            return


def clear_alarm(catalog: Catalog, key: str) -> bool:
    """Mark the alarm inactive; True when it was active."""
    with catalog.begin() as conn:
        result = conn.execute(update(alarms).where(alarms.c.key == key, alarms.c.active.is_(True))
                              .values(active=False, last_at=time.time()))
        return result.rowcount == 1


def active_alarms(catalog: Catalog) -> list[dict]:
    with catalog.read() as conn:
        return [dict(r) for r in conn.execute(select(alarms).where(alarms.c.active.is_(True))).mappings()]
