"""Catalog SQL of reconcile: which rows of a step are stale.

A row is stale when its claim expired or its holder is dead (stale heartbeat, on any host), or when it
has sat unclaimed in a waiting state for longer than ``reconcile.stale_seconds``. The recoverers
(:mod:`t0dqm.steps.reconcile`) turn these ids into the steps that resume them.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import TABLES, dead_owners


def _table(table: Table | str) -> Table:
    """A table, or an entity's table by name ("file", "archive", "streamer", "t0output")."""
    return TABLES[table] if isinstance(table, str) else table


def stale_ids(
    conn: Connection,
    table: Table | str,
    column: str,
    states: Iterable[str],
    now: float,
    stale_seconds: float,
    limit: int = 5000,
) -> list[int]:
    """Ids of rows in ``states`` whose lease expired or that have not moved for ``stale_seconds``."""
    table = _table(table)
    col = table.c[column]
    claimed = table.c.claimed_until
    query = (
        select(table.c.id)
        .where(
            col.in_(list(states)),
            or_(
                and_(claimed.is_not(None), claimed < now),
                and_(claimed.is_(None), table.c.updated_at < now - stale_seconds),
            ),
        )
        .order_by(table.c.id)
        .limit(limit)
    )
    return [row[0] for row in conn.execute(query)] + dead_claim_ids(conn, table, column, states, now)


def dead_claim_ids(
    conn: Connection, table: Table | str, column: str, states: Iterable[str], now: float
) -> list[int]:
    """Rows in ``states`` whose unexpired claim belongs to a dead process, on any host (its heartbeat
    is stale): no need to wait them out, Catalog.claim takes such a claim over."""
    table = _table(table)
    held = conn.execute(
        select(table.c.id, table.c.claimed_by).where(
            table.c[column].in_(list(states)), table.c.claimed_until >= now, table.c.claimed_by.is_not(None)
        )
    ).all()
    dead = dead_owners(conn, [row.claimed_by for row in held])
    return [row.id for row in held if row.claimed_by in dead]
