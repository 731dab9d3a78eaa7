"""Who is alive and what it holds: reads of the named leases (beat election, metrics, chaos runs).

Taking, renewing and releasing a lease, and writing heartbeats, are Catalog methods (t0dqm.catalog.db).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import leases


def lease_owner(conn: Connection, name: str) -> str | None:
    """The owner of the named lease, expired or not (None: no such lease)."""
    owner = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar()
    return None if owner is None else str(owner)


def unexpired_lease_owner(conn: Connection, name: str, now: float) -> str | None:
    """The owner of the named lease while it has not expired at ``now``."""
    owner = conn.execute(select(leases.c.owner).where(leases.c.name == name, leases.c.expires_at > now)).scalar()
    return None if owner is None else str(owner)


def lease_heartbeat_at(conn: Connection, name: str) -> float | None:
    """When the named lease was last taken or renewed (None: no such lease)."""
    at = conn.execute(select(leases.c.heartbeat_at).where(leases.c.name == name)).scalar()
    return None if at is None else float(at)


def unexpired_owners(conn: Connection, name_like: str, now: float) -> list[str]:
    """Owners of the unexpired leases whose name matches the LIKE pattern ``name_like``."""
    return [r[0] for r in conn.execute(select(leases.c.owner).where(
        leases.c.name.like(name_like), leases.c.expires_at > now))]


def unexpired_held_by(conn: Connection, owner_like: str, now: float) -> list[str]:
    """Names of the unexpired leases whose owner matches the LIKE pattern ``owner_like``."""
    return [r[0] for r in conn.execute(select(leases.c.name).where(
        leases.c.owner.like(owner_like), leases.c.expires_at > now))]
