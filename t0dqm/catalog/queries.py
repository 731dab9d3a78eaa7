"""Catalog queries of the periodic decisions (version and quota control, the health check).

Each one costs what its candidates cost, not what the catalog holds.

- Version control reads a worklist. It holds the samples, as (run, dataset), that have a row with
  ``versions_checked_at IS NULL``: a new version arrived, or an older version still waits for its archive.
  The partial index ``ix_files_versions_unchecked`` holds only those rows. Version control stamps a
  sample's rows once no superseded ROOT file of it is left.
- Quota control walks one class's present files oldest first on ``ix_files_present_age``, in chunks.
  A window function keeps the running sum of the bytes it may free, and the walk stops at the target.
- Anti-joins are ``NOT EXISTS``. ``NOT IN (subquery)`` makes PostgreSQL rescan the subquery for every
  row, and tests/unit/test_no_not_in.py fails when one comes back.

State names go into the SQL as literals, not bound parameters. SQLite uses a partial index only when
the query repeats the index's WHERE terms literally.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, TypeAlias, cast

from sqlalchemy import and_, case, exists, func, literal, literal_column, select, tuple_, update
from sqlalchemy.engine import Connection, Row, RowMapping
from sqlalchemy.sql.elements import ColumnElement

from t0dqm.catalog.db import alarms, archives, files, leases, members, quarantine
from t0dqm.catalog.states import INDEX_PARTIAL, INDEX_PENDING, RECEIVED, REMOVED, ZIPPED

AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"  # any result row
PRESENT = (RECEIVED, ZIPPED)


def const_in(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with literal constants (matches a partial index's predicate)."""
    return cast(
        ColumnElement[bool], column.in_([literal_column("'" + v.replace("'", "''") + "'") for v in values])
    )


def present() -> ColumnElement[bool]:
    """The ROOT file is on disk (the predicate of ``ix_files_present_age``)."""
    return const_in(files.c.state, PRESENT)


def not_member() -> ColumnElement[bool]:
    """The file is in no archive: an anti-join on members' unique file_id index."""
    return ~exists().where(members.c.file_id == files.c.id)


def _file_columns() -> list[Any]:
    return [
        files.c.id,
        files.c.path,
        files.c.cls,
        files.c.run,
        files.c.dataset,
        files.c.subsystem,
        files.c.version,
        files.c.size,
        files.c.mtime,
        files.c.adler32,
        files.c.state,
    ]


# -- version control ---------------------------------------------------------------------------------


def const_limit(n: int) -> Any:
    """A LIMIT written into the SQL: with ``LIMIT ?`` SQLite cannot tell a subquery is small and may
    drive the join from a full index scan instead."""
    return literal_column(str(int(n)))


def version_worklist_query(batch: int) -> Any:
    keys = (
        select(files.c.run, files.c.dataset)
        .where(files.c.versions_checked_at.is_(None))
        .distinct()
        .limit(const_limit(batch))
        .subquery("todo")
    )
    # no ORDER BY: sorting by (run, dataset) would tempt the planner into walking ix_files_run whole
    return select(*_file_columns(), archives.c.state.label("archive_state")).select_from(
        keys.join(files, and_(files.c.run == keys.c.run, files.c.dataset == keys.c.dataset)).outerjoin(
            archives, files.c.archive_id == archives.c.id
        )
    )


def version_worklist(conn: Connection, batch: int) -> tuple[list[AnyRow], bool]:
    """Every row (all versions, any state) of up to ``batch`` samples on the worklist, with its archive
    state; and whether the batch was full (more samples wait)."""
    rows = list(conn.execute(version_worklist_query(batch)).all())
    return rows, len({(r.run, r.dataset) for r in rows}) >= batch


def mark_versions_checked(
    conn: Connection, ids: Sequence[int], now: float | None = None, chunk: int = 5000
) -> int:
    """Take these rows off the worklist (only those still on it)."""
    now = time.time() if now is None else now
    done = 0
    for start in range(0, len(ids), chunk):
        done += conn.execute(
            update(files)
            .where(files.c.id.in_(list(ids[start : start + chunk])), files.c.versions_checked_at.is_(None))
            .values(versions_checked_at=now)
        ).rowcount
    return done


def backfill_versions_checked(conn: Connection, now: float | None = None) -> int:
    """Schema upgrade: stamp every sample that has no superseded ROOT file left (one full scan)."""
    now = time.time() if now is None else now
    return conn.exec_driver_sql(
        "UPDATE files SET versions_checked_at = %s"  # noqa: S608 - built from constants and a float
        " WHERE versions_checked_at IS NULL AND NOT EXISTS ("
        " SELECT 1 FROM files o JOIN files n ON n.run = o.run AND n.dataset = o.dataset"
        " AND coalesce(n.subsystem, '') = coalesce(o.subsystem, '') AND n.version > o.version"
        f" WHERE o.run = files.run AND o.dataset = files.dataset AND o.state <> '{REMOVED}')"
        % repr(float(now))
    ).rowcount


# -- quota control -----------------------------------------------------------------------------------


def _path_order(conn: Connection) -> Any:
    """Paths compared bytewise on both backends (as Python and SQLite compare them)."""
    return files.c.path.collate("C") if conn.dialect.name == "postgresql" else files.c.path


def quota_chunk_query(
    conn: Connection,
    cls: str,
    safe: Sequence[str],
    unguarded: bool,
    after: tuple[float, str] | None,
    limit: int,
) -> Any:
    """The next ``limit`` present files of ``cls`` after ``after`` (mtime, path), oldest first, each with
    ``archived`` (1/0) and ``freed``: the running sum of archived bytes up to and including it."""
    path = _path_order(conn)
    archived = literal(1) if unguarded else case((const_in(archives.c.state, safe), 1), else_=0)
    cond = [files.c.cls == cls, present()]
    if after is not None:
        cond.append(tuple_(files.c.mtime, path) > tuple_(literal(after[0]), literal(after[1])))
    chunk = (
        select(
            files.c.id,
            files.c.path,
            files.c.size,
            files.c.mtime,
            files.c.adler32,
            archived.label("archived"),
            path.label("sort_path"),
        )
        .select_from(files.outerjoin(archives, files.c.archive_id == archives.c.id))
        .where(*cond)
        .order_by(files.c.mtime, path)
        .limit(const_limit(limit))
        .subquery("chunk")
    )
    freed = func.sum(chunk.c.size * chunk.c.archived).over(
        order_by=(chunk.c.mtime, chunk.c.sort_path), rows=(None, 0)
    )
    return select(chunk, freed.label("freed")).order_by(chunk.c.mtime, chunk.c.sort_path)


def quota_prefix(
    conn: Connection,
    cls: str,
    excess: int,
    safe: Sequence[str],
    unguarded: bool,
    max_rows: int = 200_000,
    first_chunk: int = 256,
    max_chunk: int = 16384,
) -> tuple[list[AnyRow], bool]:
    """The oldest present files of ``cls``, in order, up to the first one that brings the archived bytes
    freed to ``excess``. Also returns whether the walk stopped at ``max_rows`` before reaching it.

    Unarchived files inside the prefix come too: the policy reports them as blocking.
    """
    out: list[AnyRow] = []
    if excess <= 0:
        return out, False
    carried, after, size = 0, None, first_chunk
    while len(out) < max_rows:
        size = min(size, max_rows - len(out))
        rows = conn.execute(quota_chunk_query(conn, cls, safe, unguarded, after, size)).all()
        for row in rows:
            out.append(row)
            if carried + int(row.freed) >= excess:
                return out, False
        if len(rows) < size:
            return out, False  # the class has no more present files
        carried += int(rows[-1].freed)
        after = (rows[-1].mtime, rows[-1].path)
        size = min(size * 4, max_chunk)
    return out, True


# -- health: what waits, and the heartbeats ----------------------------------------------------------


def _oldest(
    conn: Connection, label: Any, since: Any, table: Any, cond: Sequence[Any], limit: int
) -> tuple[list[tuple[str, float]], int]:
    """(label, since) of the first ``limit`` rows matching ``cond``, oldest first, and how many match."""
    rows = conn.execute(select(label, since).where(*cond).order_by(since).limit(limit)).all()
    total = int(conn.execute(select(func.count()).select_from(table).where(*cond)).scalar() or 0)
    return [(str(r[0]), float(r[1])) for r in rows], total


def waiting_index(conn: Connection, older_than: float, limit: int) -> tuple[list[tuple[str, float]], int]:
    """Files still to index (pending or partial, not removed) created before ``older_than``."""
    cond = (
        files.c.index_state.in_([INDEX_PENDING, INDEX_PARTIAL]),
        files.c.state != REMOVED,
        files.c.created_at < older_than,
    )
    return _oldest(conn, files.c.path, files.c.created_at, files, cond, limit)


def waiting_zip(conn: Connection, older_than: float, limit: int) -> tuple[list[tuple[str, float]], int]:
    """Received files with a zip pattern in no archive, created before ``older_than``."""
    cond = (
        files.c.state == RECEIVED,
        files.c.zippat.is_not(None),
        not_member(),
        files.c.created_at < older_than,
    )
    return _oldest(conn, files.c.path, files.c.created_at, files, cond, limit)


def waiting_archives(
    conn: Connection, state: str, since_column: str, older_than: float, limit: int
) -> tuple[list[tuple[str, float]], int]:
    """Archives in ``state`` whose ``since_column`` (frozen_at, copied_at) is before ``older_than``."""
    column = archives.c[since_column]
    cond = (archives.c.state == state, column.is_not(None), column < older_than)
    return _oldest(conn, archives.c.path, column, archives, cond, limit)


def lease_heartbeat(conn: Connection, name: str) -> float | None:
    """When the holder of lease ``name`` last renewed it."""
    found = conn.execute(select(leases.c.heartbeat_at).where(leases.c.name == name)).scalar()
    return float(found) if found is not None else None


def collector_heartbeat(conn: Connection, host: str) -> float | None:
    """The last sign of life of the collector of producer host ``host`` (its heartbeat or a collect lease)."""
    last = conn.execute(
        select(func.max(leases.c.heartbeat_at)).where(
            (leases.c.name == f"heartbeat:collect:{host}") | leases.c.name.like(f"collect:{host}:%")
        )
    ).scalar()
    return float(last) if last is not None else None


def quarantined_count(conn: Connection) -> int:
    """Quarantined files not resolved yet."""
    return int(
        conn.execute(
            select(func.count()).select_from(quarantine).where(quarantine.c.resolved_at.is_(None))
        ).scalar_one()
    )


def active_alarm_keys(conn: Connection, prefix: str) -> list[str]:
    """Keys of the active alarms starting with ``prefix``."""
    return [
        str(r[0])
        for r in conn.execute(
            select(alarms.c.key).where(alarms.c.active.is_(True), alarms.c.key.like(f"{prefix}%"))
        )
    ]


# -- reprocess and retry-bad (operator tools) ---------------------------------------------------------


def _run_filter(run: int, dataset: str | None) -> list[ColumnElement[bool]]:
    cond = [files.c.run == run]
    if dataset:
        cond.append(files.c.dataset == dataset)
    return cond


def run_files_index_states(conn: Connection, run: int, dataset: str | None) -> Sequence[AnyRow]:
    """(id, path, index_state, state) of the run's files (of ``dataset`` only, if given), by id."""
    return conn.execute(
        select(files.c.id, files.c.path, files.c.index_state, files.c.state)
        .where(*_run_filter(run, dataset))
        .order_by(files.c.id)
    ).all()


def reset_index_state(conn: Connection, file_id: int, from_state: str, to_state: str, now: float) -> bool:
    """Move the file's index state from ``from_state`` (only) to ``to_state``, its reason cleared."""
    return bool(
        conn.execute(
            update(files)
            .where(files.c.id == file_id, files.c.index_state == from_state)
            .values(index_state=to_state, reason=None, updated_at=now)
        ).rowcount
        == 1
    )


def run_files_outside_archives(conn: Connection, run: int, dataset: str | None) -> Sequence[AnyRow]:
    """(id, path, state, zippat) of the run's files that are in no archive, by id."""
    return conn.execute(
        select(files.c.id, files.c.path, files.c.state, files.c.zippat)
        .where(*_run_filter(run, dataset), not_member())
        .order_by(files.c.id)
    ).all()


def run_archives(conn: Connection, run: int, dataset: str | None) -> Sequence[RowMapping]:
    """Whole rows of the archives holding a file of the run, by id."""
    ids = (
        select(members.c.archive_id)
        .join(files, files.c.id == members.c.file_id)
        .where(*_run_filter(run, dataset))
    )
    return (
        conn.execute(select(archives).where(archives.c.id.in_(ids)).order_by(archives.c.id)).mappings().all()
    )


def clear_archive_backoff(conn: Connection, archive_id: int, state: str, now: float) -> None:
    """The archive's next try is due now (while it is still in ``state``)."""
    conn.execute(
        update(archives)
        .where(archives.c.id == archive_id, archives.c.state == state)
        .values(next_try_at=None, updated_at=now)
    )


def unresolved_quarantine(conn: Connection, ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """Unresolved quarantine rows (all, or those ``ids``), oldest first."""
    query = select(quarantine).where(quarantine.c.resolved_at.is_(None))
    if ids:
        query = query.where(quarantine.c.id.in_(list(ids)))
    return [dict(r) for r in conn.execute(query.order_by(quarantine.c.id)).mappings()]


def resolve_quarantine(conn: Connection, row_id: int, now: float) -> bool:
    """Mark the quarantine row resolved; False when it already was."""
    return bool(
        conn.execute(
            update(quarantine)
            .where(quarantine.c.id == row_id, quarantine.c.resolved_at.is_(None))
            .values(resolved_at=now)
        ).rowcount
        == 1
    )
