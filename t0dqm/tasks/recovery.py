"""Registry of recoverers: per step, which catalog rows are stale and which task resumes them.

Each task module registers a function with @recoverer; the ``reconcile`` beat task calls them all.
A row is stale when its claim expired or its holder is dead (stale heartbeat, on any host), or when it
has sat unclaimed in a waiting state for longer than ``reconcile.stale_seconds``. Re-enqueueing is safe because every task is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import dead_owners


@dataclass(frozen=True)
class Resume:
    task: str  # registered Celery task name
    args: tuple[Any, ...] = ()


Recoverer = Callable[[Connection, Any, float], Iterable[Resume]]
RECOVERERS: dict[str, Recoverer] = {}


def recoverer(name: str) -> Callable[[Recoverer], Recoverer]:
    def register(fn: Recoverer) -> Recoverer:
        RECOVERERS[name] = fn
        return fn

    return register


def stale_ids(conn: Connection, table: Table, column: str, states: Iterable[str], now: float,
              stale_seconds: float, limit: int = 5000) -> list[int]:
    """Ids of rows in ``states`` whose lease expired or that have not moved for ``stale_seconds``."""
    col = table.c[column]
    claimed = table.c.claimed_until
    query = (
        select(table.c.id)
        .where(col.in_(list(states)),
               or_(and_(claimed.is_not(None), claimed < now),
                   and_(claimed.is_(None), table.c.updated_at < now - stale_seconds)))
        .order_by(table.c.id)
        .limit(limit))
    return [row[0] for row in conn.execute(query)] + dead_claim_ids(conn, table, column, states, now)


def dead_claim_ids(conn: Connection, table: Table, column: str, states: Iterable[str], now: float) -> list[int]:
    """Rows in ``states`` whose unexpired claim belongs to a dead process, on any host (its heartbeat
    is stale): no need to wait them out, Catalog.claim takes such a claim over."""
    held = conn.execute(select(table.c.id, table.c.claimed_by).where(
        table.c[column].in_(list(states)), table.c.claimed_until >= now, table.c.claimed_by.is_not(None))).all()
    dead = dead_owners(conn, [row.claimed_by for row in held])
    return [row.id for row in held if row.claimed_by in dead]
