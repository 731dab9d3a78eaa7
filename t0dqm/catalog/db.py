"""The catalog: the single source of truth for files, archives, streamer units, audit, leases, alarms.

SQLAlchemy Core on SQLite (WAL, busy timeout) by default, PostgreSQL by URL. Every state change is a
conditional UPDATE (``... WHERE state IN (expected)``) in the same transaction as its audit row, so two
workers racing on one item cannot both win and no change goes unrecorded.
Timestamps are float seconds since the epoch (UTC).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from t0dqm.identity import (
    gone_from_this_machine,
    holder_process,
    host_name,
    process_identity,
    worker_identity,
)

__all__ = [
    "Catalog",
    "Connection",
    "DatabaseRefused",
    "db_now",
    "dead_owners",
    "get_catalog",
    "prepare_empty_database",
    "reset_catalogs",
    "worker_identity",
]

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# A DQM file filed in the repository. state: received -> zipped -> removed; index_state separately.
files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(1024), nullable=False, unique=True),  # relative to the repository root
    Column("name", String(512), nullable=False),
    Column("cls", String(32), nullable=False),
    Column("run", Integer, nullable=False),
    Column("version", Integer, nullable=False),
    Column("dataset", String(512), nullable=False),
    Column("subsystem", String(128)),
    Column("size", Integer, nullable=False),
    Column("md5", String(32)),
    Column("adler32", String(8), nullable=False),
    Column("mtime", Float, nullable=False),
    Column("zippat", String(1024)),
    Column("state", String(16), nullable=False, default="received"),
    Column("index_state", String(16), nullable=False, default="pending"),
    Column("archive_id", Integer, ForeignKey("archives.id")),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_until", Float),
    Column("attempts", Integer, nullable=False, default=0),
    # DQM GUI registration (t0dqm.steps.gui): when the GUI accepted the file; why it was not sent (refused,
    # superseded, ...), which keeps reconcile from sending it again.
    Column("gui_registered_at", Float),
    Column("gui_reason", Text),
    # Set by version control once no older version of this (run, dataset) waits for deletion;
    # NULL (every new row) puts the sample on version control's worklist (t0dqm.catalog.queries).
    Column("versions_checked_at", Float),
    Index("ix_files_state", "state", "updated_at"),
    Index("ix_files_index_state", "index_state", "updated_at"),
    Index("ix_files_run", "run", "dataset"),
    # Version control's worklist: only samples with a new or a waiting version (schema 3).
    Index(
        "ix_files_versions_unchecked",
        "run",
        "dataset",
        sqlite_where=text("versions_checked_at IS NULL"),
        postgresql_where=text("versions_checked_at IS NULL"),
    ),
    # Quota control: present files of a class, oldest first (schema 3).
    Index(
        "ix_files_present_age",
        "cls",
        "mtime",
        sqlite_where=text("state IN ('received', 'zipped')"),
        postgresql_where=text("state IN ('received', 'zipped')"),
    ),
    Index("ix_files_gui", "gui_registered_at", "created_at"),
)

# Uploads that failed validation: never deleted, never retried forever.
quarantine = Table(
    "quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(1024), nullable=False),
    Column("name", String(512), nullable=False),
    Column("step", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    Index("ix_quarantine_path", "path"),
)

# A zip archive. state: open -> frozen -> copied -> verified -> on_tape -> cleaned; failed, conflict.
archives = Table(
    "archives",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(1024), nullable=False, unique=True),  # relative to the zip root
    Column("pattern", String(1024), nullable=False),
    Column("serial", Integer, nullable=False),
    Column("state", String(16), nullable=False, default="open"),
    Column("nfiles", Integer, nullable=False, default=0),
    Column("size", Integer, nullable=False, default=0),
    Column("adler32", String(8)),
    Column("first_write", Float),
    Column("last_write", Float),
    Column("frozen_at", Float),
    Column("copied_at", Float),
    Column("verified_at", Float),
    Column("cleaned_at", Float),
    Column("tries", Integer, nullable=False, default=0),
    Column("next_try_at", Float),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_until", Float),
    UniqueConstraint("pattern", "serial", name="uq_archives_pattern_serial"),
    Index("ix_archives_state", "state", "updated_at"),
)

# Membership: a file is in exactly one archive (unique file_id).
members = Table(
    "members",
    metadata,
    Column("archive_id", Integer, ForeignKey("archives.id"), nullable=False),
    Column("file_id", Integer, ForeignKey("files.id"), nullable=False, unique=True),
    Column("name", String(512), nullable=False),
    Column("size", Integer, nullable=False),
    Column("adler32", String(8), nullable=False),
    Column("added_at", Float, nullable=False),
    UniqueConstraint("archive_id", "name", name="uq_members_archive_name"),
)

# Tier-0 streamer run/stream units seen in the dump and what was done with them.
streamer_units = Table(
    "streamer_units",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("label", String(64), nullable=False),
    Column("stream", String(128), nullable=False),
    Column("run", Integer, nullable=False),
    Column("files", Integer, nullable=False, default=0),
    Column("bytes", Integer, nullable=False, default=0),
    Column("newest_mtime", Integer),
    Column("state", String(16), nullable=False, default="present"),
    Column("rule", String(32)),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("label", "stream", "run", name="uq_streamer_unit"),
)

# Tier-0 disk outputs (revision 0002): where each must go and whether processing still needs it.
# endpoints_required / endpoints_done: JSON text lists; needed_by: processing jobs still needing it.
# state: present -> deleted (retention, t0dqm.tasks.streamer.retention_cleanup).
t0_outputs = Table(
    "t0_outputs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", String(2048), nullable=False, unique=True),  # deletion target: local path or root:// URL
    Column("size", Integer, nullable=False),
    Column("adler32", String(8)),
    Column("created_at", Float, nullable=False),
    Column("endpoints_required", Text, nullable=False, default="[]"),
    Column("endpoints_done", Text, nullable=False, default="[]"),
    Column("needed_by", Integer, nullable=False, default=0),
    Column("state", String(16), nullable=False, default="present"),
    Column("updated_at", Float, nullable=False),
    # Placement (t0dqm.steps.placement): the CMS dataset, its Rucio block and the file's LFN; NULL for
    # outputs registered without a dataset.
    Column("dataset", String(512)),
    Column("block", String(600)),
    Column("lfn", String(2048)),
    Index("ix_t0_outputs_state", "state", "created_at"),
    Index("ix_t0_outputs_block", "block"),
)

# Rucio rules of a Tier-0 block, one per (block, RSE): role t0-disk, tape or disk.
# state: pending (not yet created) -> a Rucio rule state (REPLICATING, OK, STUCK, SUSPENDED, ...)
# -> removed (the T0 disk rule, by retention); missing when a recorded rule is no longer in Rucio.
t0_rules = Table(
    "t0_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("block", String(600), nullable=False),
    Column("dataset", String(512), nullable=False),
    Column("rse", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("rule_id", String(64)),
    Column("state", String(16), nullable=False, default="pending"),
    Column("state_since", Float, nullable=False),
    Column("checked_at", Float),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("block", "rse", name="uq_t0_rules_block_rse"),
    Index("ix_t0_rules_state", "state", "updated_at"),
)

# Every state change and every deletion.
audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("host", String(128), nullable=False),
    Column("entity", String(16), nullable=False),  # file, archive, path, streamer, index
    Column("entity_id", Integer),
    Column("action", String(32), nullable=False),  # transition, delete, dry-run-delete, quarantine, ...
    Column("from_state", String(16)),
    Column("to_state", String(16)),
    Column("path", String(2048)),
    Column("size", Integer),
    Column("checksum", String(64)),
    Column("rule", String(64)),
    Column("detail", Text),
    Index("ix_audit_entity", "entity", "entity_id"),
    Index("ix_audit_action", "action", "at"),
)

# Named leases: singleton jobs, single-writer sections, heartbeats.
leases = Table(
    "leases",
    metadata,
    Column("name", String(256), primary_key=True),
    Column("owner", String(256), nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)

# One row per live process (worker process, pool child, beat, CLI that claims): principle 6.
# beat_at is the catalog database's clock (db_now), so hosts with skewed clocks agree on staleness.
# locator: boot_id/pid-namespace/pid/start-time, for the same-machine shortcut (t0dqm.identity).
heartbeats = Table(
    "heartbeats",
    metadata,
    Column("identity", String(256), primary_key=True),  # host:pid:token
    Column("host", String(256), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("role", String(64), nullable=False),  # worker, worker-child, beat, cli, ...
    Column("locator", String(256), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("beat_at", Float, nullable=False),
    Index("ix_heartbeats_beat_at", "beat_at"),
)

# The elected beat's record of what it sent (t0dqm.beat_election): a standby that takes over goes on
# from here instead of re-running every entry. last_run_at: seconds since the epoch (UTC).
beat_runs = Table(
    "beat_runs",
    metadata,
    Column("name", String(256), primary_key=True),  # <flavour>:<schedule entry>
    Column("last_run_at", Float, nullable=False),
    Column("runs", Integer, nullable=False),
    Column("sent_by", String(256), nullable=False),
)

alarms = Table(
    "alarms",
    metadata,
    Column("key", String(256), primary_key=True),
    Column("severity", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("first_at", Float, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("count", Integer, nullable=False, default=1),
    Column("notified_at", Float),
    Column("active", Boolean, nullable=False, default=True),
)


# Running totals per (entity, cls, state, index_state) of files and archives: rows and bytes (schema 3).
# Triggers append to count_deltas in the writer's transaction; t0dqm.catalog.counts folds them into counts.
# Archives use '' for cls and index_state.
def _count_key(primary_key: bool) -> list[Column[str]]:
    return [
        Column(name, String(size), nullable=False, primary_key=primary_key)
        for name, size in (("entity", 16), ("cls", 32), ("state", 16), ("index_state", 16))
    ]


counts = Table(
    "counts",
    metadata,
    *_count_key(True),
    Column("n", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)
count_deltas = Table(
    "count_deltas",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    *_count_key(False),
    Column("n", Integer, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

TABLES = {"file": files, "archive": archives, "streamer": streamer_units, "t0output": t0_outputs}


def db_now(conn: Connection) -> float:
    """Seconds since the epoch by the catalog database's clock (one clock for every host)."""
    if conn.dialect.name == "postgresql":
        return float(conn.execute(text("SELECT extract(epoch from clock_timestamp())")).scalar_one())
    return time.time()


def stale_after_default() -> float:
    from t0dqm import config

    return float(config.get().heartbeat.stale_after)


def dead_owners(
    conn: Connection, owners: Iterable[str | None], stale_after: float | None = None
) -> dict[str, str]:
    """Owners among ``owners`` whose holding process is dead, with why. Dead: its heartbeat is older
    than ``stale_after`` seconds or absent, or it ran on this machine and its process is gone.
    Owners without a process identity are never judged dead here (they only expire)."""
    by_process: dict[str, list[str]] = {}
    for owner in owners:
        proc = holder_process(owner)
        if proc is not None and owner is not None:
            by_process.setdefault(proc, []).append(owner)
    if not by_process:
        return {}
    stale = stale_after if stale_after is not None else stale_after_default()
    now = db_now(conn)
    rows = {
        r.identity: r
        for r in conn.execute(
            select(heartbeats.c.identity, heartbeats.c.beat_at, heartbeats.c.locator).where(
                heartbeats.c.identity.in_(list(by_process))
            )
        )
    }
    dead: dict[str, str] = {}
    for proc, holders in by_process.items():
        row = rows.get(proc)
        if row is None:
            why = "no heartbeat"
        elif row.beat_at < now - stale:
            why = f"heartbeat stale for {now - row.beat_at:.0f} s"
        elif gone_from_this_machine(row.locator):
            why = "process gone (same machine)"
        else:
            continue
        dead.update(dict.fromkeys(holders, why))
    return dead


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite's own transaction handling off: we emit BEGIN ourselves (see make_engine).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, readonly: bool = False) -> Engine:
    """Engine for the catalog URL. SQLite writers BEGIN IMMEDIATE: a read-then-write transaction
    then waits for the lock up front instead of failing on upgrade; readers use plain BEGIN."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        begin_sql = "BEGIN" if readonly else "BEGIN IMMEDIATE"
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql(begin_sql))
        return engine
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args = {"connect_timeout": 10, "options": "-c statement_timeout=60000"}
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, connect_args=connect_args)


class Catalog:
    """Connection to the catalog with the conditional-update and audit helpers tasks need."""

    def __init__(self, url: str, host: str | None = None, stale_after: float | None = None) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.read_engine = make_engine(url, readonly=True) if url.startswith("sqlite") else self.engine
        self.host = host or host_name()
        self._stale_after = stale_after

    @property
    def stale_after(self) -> float:
        """Seconds without a heartbeat after which a holder is dead (config heartbeat.stale_after)."""
        return self._stale_after if self._stale_after is not None else stale_after_default()

    # -- schema (t0dqm.catalog.schema: alembic revisions in t0dqm/catalog/migrations) ---------------------------
    def revision(self) -> str | None:
        """The catalog's schema revision (None: empty catalog)."""
        from t0dqm.catalog import schema

        with self.read() as conn:
            return schema.current(conn)

    def upgrade(self) -> str:
        """Create or migrate the schema to this t0dqm's head revision; safe concurrently and repeatedly."""
        from t0dqm.catalog import schema

        return schema.upgrade(self.engine)

    def ensure_schema(self) -> str:
        """SQLite: create or migrate by itself. Other databases: refuse unless at the head revision."""
        from t0dqm.catalog import schema

        return schema.ensure(self.engine, self.read_engine)

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for queries only (never blocks on SQLite's write lock)."""
        with self.read_engine.connect() as conn:
            yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()

    # -- audit and transitions -------------------------------------------------------------------
    def audit(
        self,
        conn: Connection,
        *,
        entity: str,
        action: str,
        entity_id: int | None = None,
        from_state: str | None = None,
        to_state: str | None = None,
        path: str | None = None,
        size: int | None = None,
        checksum: str | None = None,
        rule: str | None = None,
        detail: str | None = None,
    ) -> None:
        conn.execute(
            insert(audit).values(
                at=time.time(),
                host=self.host,
                entity=entity,
                entity_id=entity_id,
                action=action,
                from_state=from_state,
                to_state=to_state,
                path=path,
                size=size,
                checksum=checksum,
                rule=rule,
                detail=detail,
            )
        )

    def transition(
        self,
        conn: Connection,
        entity: str,
        row_id: int,
        expected: str | Iterable[str],
        new_state: str,
        *,
        release: bool = True,
        detail: str | None = None,
        **values: Any,
    ) -> bool:
        """Move one row from an expected state to new_state; False if someone else got there first."""
        table = TABLES[entity]
        expected_states = [expected] if isinstance(expected, str) else list(expected)
        previous = conn.execute(select(table.c.state).where(table.c.id == row_id)).scalar()
        if previous not in expected_states:
            return False
        now = time.time()
        changes = dict(values, state=new_state, updated_at=now)
        if release and "claimed_by" in table.c:
            changes.update(claimed_by=None, claimed_until=None)
        result = conn.execute(
            update(table).where(table.c.id == row_id, table.c.state == previous).values(**changes)
        )
        if result.rowcount != 1:
            return False
        self.audit(
            conn,
            entity=entity,
            entity_id=row_id,
            action="transition",
            from_state=previous,
            to_state=new_state,
            detail=detail,
        )
        return True

    def claim(
        self,
        entity: str,
        row_id: int,
        states: str | Iterable[str],
        lease_seconds: float,
        owner: str | None = None,
    ) -> bool:
        """Take a claim on a row in one of ``states``; only one claimant holds it at a time.

        The claim lasts while its holder's heartbeat is fresh, up to ``lease_seconds`` (a ceiling
        for a live but stuck holder: give the task's time limit). A claim whose holder is dead
        (stale heartbeat) or whose ceiling passed is taken over, from any host, and audited."""
        table = TABLES[entity]
        state_list = [states] if isinstance(states, str) else list(states)
        owner = owner or worker_identity()
        self._heartbeat(owner)
        with self.begin() as conn:
            row = conn.execute(
                select(table.c.claimed_by, table.c.claimed_until).where(
                    table.c.id == row_id, table.c.state.in_(state_list)
                )
            ).first()
            if row is None:
                return False
            holder, until = row
            now = time.time()
            why = self._takeover_reason(conn, holder, until, now)
            if why is False:
                return False
            result = conn.execute(
                update(table)
                .where(
                    table.c.id == row_id,
                    table.c.state.in_(state_list),
                    table.c.claimed_by.is_not_distinct_from(holder),
                    table.c.claimed_until.is_not_distinct_from(until),
                )
                .values(claimed_by=owner, claimed_until=now + lease_seconds)
            )
            if result.rowcount != 1:
                return False
            if why:
                self.audit(
                    conn,
                    entity=entity,
                    entity_id=row_id,
                    action="claim-takeover",
                    detail=f"from {holder}: {why}; to {owner}",
                )
            return True

    def _takeover_reason(
        self, conn: Connection, holder: str | None, until: float | None, now: float
    ) -> str | bool | None:
        """None: free; a reason string: held by someone gone; False: held by a live holder."""
        if holder is None or until is None:
            return None
        if until < now:
            return f"ceiling passed {now - until:.0f} s ago"
        return dead_owners(conn, [holder], self.stale_after).get(holder, False)

    def release(self, entity: str, row_id: int, owner: str | None = None) -> None:
        """Give a claim back; only its holder's (``owner``, default this thread) is cleared."""
        table = TABLES[entity]
        with self.begin() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == row_id, table.c.claimed_by == (owner or worker_identity()))
                .values(claimed_by=None, claimed_until=None)
            )

    # -- named leases -----------------------------------------------------------------------------
    def acquire_lease(self, name: str, owner: str, seconds: float) -> bool:
        """Take or renew the named lease; True when ``owner`` holds it afterwards. A lease held by
        a dead process (stale heartbeat) or past its expiry is taken over, and audited."""
        self._heartbeat(owner)
        with self.begin() as conn:
            row = conn.execute(
                select(leases.c.owner, leases.c.expires_at).where(leases.c.name == name)
            ).first()
            now = time.time()
            values = {"owner": owner, "expires_at": now + seconds, "heartbeat_at": now}
            if row is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(leases).values(name=name, **values))
                    return True
                except IntegrityError:  # lost an insert race: someone else holds it now
                    return False
            holder, expires = row
            why = None if holder == owner else self._takeover_reason(conn, holder, expires, now)
            if why is False:
                return False
            result = conn.execute(
                update(leases)
                .where(leases.c.name == name, leases.c.owner == holder, leases.c.expires_at == expires)
                .values(**values)
            )
            if result.rowcount == 1 and why:
                self.audit(
                    conn,
                    entity="lease",
                    action="lease-takeover",
                    path=name,
                    detail=f"from {holder}: {why}; to {owner}",
                )
            return result.rowcount == 1

    def release_lease(self, name: str, owner: str) -> None:
        with self.begin() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.owner == owner))

    def _heartbeat(self, owner: str | None = None) -> None:
        """Make sure this process beats in this catalog before it holds anything in it."""
        if owner is None or holder_process(owner) == process_identity():
            from t0dqm import heartbeat

            heartbeat.ensure(self.url)

    # -- heartbeats -------------------------------------------------------------------------------
    def beat(self, identity: str, role: str, where: str, started_at: float) -> float:
        """Insert or refresh a process's heartbeat row; the database time of the beat."""
        from t0dqm.catalog import heartbeats as hb

        with self.begin() as conn:
            return hb.beat(conn, identity, role, where, started_at)

    def forget(self, identity: str) -> None:
        """Remove a process's heartbeat (clean exit): whatever it still holds is free at once."""
        from t0dqm.catalog import heartbeats as hb

        with self.begin() as conn:
            hb.forget(conn, identity)

    def reap_heartbeats(self, older_than: float) -> int:
        """Drop heartbeat rows older than ``older_than`` seconds (long-dead processes)."""
        from t0dqm.catalog import heartbeats as hb

        with self.begin() as conn:
            return hb.reap(conn, older_than)

    def record_beat_run(self, name: str, at: float, sent_by: str) -> None:
        """The elected beat sent schedule entry ``name`` at ``at``."""
        from t0dqm.catalog import heartbeats as hb

        with self.begin() as conn:
            hb.record_beat_run(conn, name, at, sent_by)

    def beat_last_runs(self, prefix: str) -> dict[str, float]:
        """Entry name (without ``prefix``) -> when the elected beat last sent it."""
        from t0dqm.catalog import heartbeats as hb

        with self.read() as conn:
            return hb.beat_last_runs(conn, prefix)

    def lease_report(self) -> list[dict[str, Any]]:
        """Every named lease with its holder's state: live, expired, or dead and why (operators)."""
        with self.read() as conn:
            rows = conn.execute(select(leases).order_by(leases.c.name)).mappings().all()
            dead = dead_owners(conn, [r["owner"] for r in rows], self.stale_after)
        now = time.time()
        return [
            {
                "name": r["name"],
                "owner": r["owner"],
                "expires_in": round(r["expires_at"] - now, 1),
                "holder": (
                    "expired"
                    if r["expires_at"] < now
                    else f"dead: {dead[r['owner']]}"
                    if r["owner"] in dead
                    else "live"
                ),
            }
            for r in rows
        ]

    def live_processes(self) -> list[RowMapping]:
        """Heartbeat rows with a fresh beat, newest first (health, status)."""
        from t0dqm.catalog import heartbeats as hb

        with self.read() as conn:
            return hb.live(conn, self.stale_after)

    # -- queries ----------------------------------------------------------------------------------
    def get(self, entity: str, row_id: int) -> RowMapping | None:
        table = TABLES[entity]
        with self.read() as conn:
            return conn.execute(select(table).where(table.c.id == row_id)).mappings().first()

    def counts(self, entity: str, column: str = "state") -> dict[str, int]:
        table = TABLES[entity] if entity in TABLES else metadata.tables[entity]
        col = table.c[column]
        with self.read() as conn:
            return dict(conn.execute(select(col, func.count()).group_by(col)).all())


class DatabaseRefused(RuntimeError):
    """The database cannot take a new catalog (unreachable, or it holds one already); the message says why."""


def prepare_empty_database(url: str) -> str:
    """The catalog database must hold no t0dqm catalog; a missing PostgreSQL database is created.
    Returns what was done, for the log (chaos runs on PostgreSQL)."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = inspect(conn).get_table_names()
    except OperationalError as exc:
        parsed = make_url(url)
        name = parsed.database or ""
        if (
            not url.startswith("postgresql")
            or "does not exist" not in str(exc)
            or not re.fullmatch(r"\w+", name)
        ):
            raise DatabaseRefused(
                f"catalog {parsed.render_as_string(hide_password=True)}: {exc.orig}"
            ) from None
        admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return f"created database {name}"
    finally:
        engine.dispose()
    if "files" in tables:
        raise DatabaseRefused(
            f"catalog {make_url(url).render_as_string(hide_password=True)} already holds a "
            "t0dqm catalog: give the URL of an empty (or missing) database"
        )
    return "empty database"


_catalogs: dict[str, Catalog] = {}
_lock = threading.Lock()


def get_catalog(url: str | None = None) -> Catalog:
    """Process-wide Catalog per URL, schema checked on first use (SQLite: created). Call
    reset_catalogs() after fork."""
    from t0dqm import config

    url = url or config.get().catalog_url
    with _lock:
        cat = _catalogs.get(url)
        if cat is None:
            cat = Catalog(url)
            cat.ensure_schema()
            _catalogs[url] = cat
        return cat


def reset_catalogs() -> None:
    """Drop every cached catalog and stop this process's heartbeats (tests, settings changes)."""
    from t0dqm import heartbeat

    heartbeat.stop_all()
    with _lock:
        for cat in _catalogs.values():
            cat.dispose()
        _catalogs.clear()


_inherited: list[Catalog] = []  # a parent's catalogs after fork: kept, never closed (shared sockets)


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _inherited.extend(_catalogs.values())
    _catalogs.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
