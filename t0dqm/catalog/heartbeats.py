"""Who is alive and what it holds: the heartbeat rows of live processes, the elected beat's record of its runs,
and reads of the named leases (beat election, metrics, chaos runs).

The Catalog methods (t0dqm.catalog.db: beat, forget, reap_heartbeats, record_beat_run, beat_last_runs,
live_processes) open the transaction and call these. Taking, renewing and releasing a lease, and judging a
holder dead (dead_owners), stay in t0dqm.catalog.db with the claims they guard.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from t0dqm.catalog.db import beat_runs, db_now, heartbeats, leases

# -- heartbeats ----------------------------------------------------------------------------------------------


def beat(conn: Connection, identity: str, role: str, where: str, started_at: float) -> float:
    """Insert or refresh a process's heartbeat row; the database time of the beat."""
    host, _, rest = identity.partition(":")
    pid = int(rest.split(":", 1)[0])
    now = db_now(conn)
    result = conn.execute(
        update(heartbeats)
        .where(heartbeats.c.identity == identity)
        .values(beat_at=now, role=role, locator=where)
    )
    if result.rowcount == 0:
        conn.execute(
            insert(heartbeats).values(
                identity=identity,
                host=host,
                pid=pid,
                role=role,
                locator=where,
                started_at=started_at,
                beat_at=now,
            )
        )
    return now


def forget(conn: Connection, identity: str) -> None:
    """Remove a process's heartbeat (clean exit)."""
    conn.execute(heartbeats.delete().where(heartbeats.c.identity == identity))


def reap(conn: Connection, older_than: float) -> int:
    """Drop heartbeat rows older than ``older_than`` seconds; how many."""
    return int(
        conn.execute(heartbeats.delete().where(heartbeats.c.beat_at < db_now(conn) - older_than)).rowcount
    )


def live(conn: Connection, stale_after: float) -> list[RowMapping]:
    """Heartbeat rows with a beat fresher than ``stale_after`` seconds, newest first."""
    now = db_now(conn)
    return list(
        conn.execute(
            select(heartbeats)
            .where(heartbeats.c.beat_at >= now - stale_after)
            .order_by(heartbeats.c.beat_at.desc())
        ).mappings()
    )


# -- the elected beat's runs (t0dqm.beat_election) -----------------------------------------------------------


def record_beat_run(conn: Connection, name: str, at: float, sent_by: str) -> None:
    """The elected beat sent schedule entry ``name`` at ``at``."""
    result = conn.execute(
        update(beat_runs)
        .where(beat_runs.c.name == name)
        .values(last_run_at=at, runs=beat_runs.c.runs + 1, sent_by=sent_by)
    )
    if result.rowcount == 0:
        conn.execute(insert(beat_runs).values(name=name, last_run_at=at, runs=1, sent_by=sent_by))


def beat_last_runs(conn: Connection, prefix: str) -> dict[str, float]:
    """Entry name (without ``prefix``) -> when the elected beat last sent it."""
    rows = conn.execute(
        select(beat_runs.c.name, beat_runs.c.last_run_at).where(
            beat_runs.c.name.startswith(prefix, autoescape=True)
        )
    )
    return {name[len(prefix) :]: at for name, at in rows}


# -- named leases --------------------------------------------------------------------------------------------


def lease_owner(conn: Connection, name: str) -> str | None:
    """The owner of the named lease, expired or not (None: no such lease)."""
    owner = conn.execute(select(leases.c.owner).where(leases.c.name == name)).scalar()
    return None if owner is None else str(owner)


def unexpired_lease_owner(conn: Connection, name: str, now: float) -> str | None:
    """The owner of the named lease while it has not expired at ``now``."""
    owner = conn.execute(
        select(leases.c.owner).where(leases.c.name == name, leases.c.expires_at > now)
    ).scalar()
    return None if owner is None else str(owner)


def lease_heartbeat_at(conn: Connection, name: str) -> float | None:
    """When the named lease was last taken or renewed (None: no such lease)."""
    at = conn.execute(select(leases.c.heartbeat_at).where(leases.c.name == name)).scalar()
    return None if at is None else float(at)


def unexpired_owners(conn: Connection, name_like: str, now: float) -> list[str]:
    """Owners of the unexpired leases whose name matches the LIKE pattern ``name_like``."""
    return [
        r[0]
        for r in conn.execute(
            select(leases.c.owner).where(leases.c.name.like(name_like), leases.c.expires_at > now)
        )
    ]


def unexpired_held_by(conn: Connection, owner_like: str, now: float) -> list[str]:
    """Names of the unexpired leases whose owner matches the LIKE pattern ``owner_like``."""
    return [
        r[0]
        for r in conn.execute(
            select(leases.c.name).where(leases.c.owner.like(owner_like), leases.c.expires_at > now)
        )
    ]
