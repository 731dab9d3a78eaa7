"""Catalog SQL of the DQM GUI registration (``files.gui_registered_at`` / ``files.gui_reason``).

Used by :mod:`t0dqm.steps.gui` (the Registrar), reconcile, ``t0dqm gui`` and the status counts. Every
function takes a ``Connection`` inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Select

from t0dqm.catalog.db import alarms, audit, files
from t0dqm.catalog.states import INDEX_SKIPPED, REMOVED

if TYPE_CHECKING:
    from typing import TypeAlias

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]

ALARM_UNREACHABLE = "gui-register:unreachable"

_COLUMNS = (
    files.c.id,
    files.c.path,
    files.c.cls,
    files.c.run,
    files.c.version,
    files.c.dataset,
    files.c.subsystem,
    files.c.state,
    files.c.index_state,
    files.c.gui_registered_at,
)


# -- the Registrar's rows ------------------------------------------------------------------------------


def rows_by_ids(conn: Connection, ids: Sequence[int]) -> list[AnyRow]:
    """(id, path, cls, run, version, dataset, subsystem, state, index_state, gui_registered_at) of these
    rows."""
    return list(conn.execute(select(*_COLUMNS).where(files.c.id.in_(list(ids)))).all())


def rows_of_runs(conn: Connection, runs: Sequence[int], chunk: int = 500) -> list[AnyRow]:
    """The same columns for every row of these runs (``chunk`` runs per query)."""
    out: list[AnyRow] = []
    for start in range(0, len(runs), chunk):
        out += conn.execute(select(*_COLUMNS).where(files.c.run.in_(runs[start : start + chunk])))
    return out


def set_values(conn: Connection, ids: Sequence[int], chunk: int = 500, **values: Any) -> None:
    """Set columns of these rows (``chunk`` ids per statement)."""
    for start in range(0, len(ids), chunk):
        conn.execute(update(files).where(files.c.id.in_(ids[start : start + chunk])).values(**values))


def mark_registered(
    conn: Connection, ids: Sequence[int], now: float, audit_rows: Sequence[Mapping[str, Any]]
) -> None:
    """``gui_registered_at`` = now (reason cleared) for these rows, and their audit rows."""
    conn.execute(
        update(files).where(files.c.id.in_(list(ids))).values(gui_registered_at=now, gui_reason=None)
    )
    conn.execute(insert(audit), list(audit_rows))


def note_reasons(conn: Connection, reasons: Mapping[int, str]) -> None:
    """Why a row is not sent (only rows not registered meanwhile)."""
    for file_id, reason in reasons.items():
        conn.execute(
            update(files)
            .where(files.c.id == file_id, files.c.gui_registered_at.is_(None))
            .values(gui_reason=reason[:1000])
        )


# -- what is missing ---------------------------------------------------------------------------------------


def missing_ids(
    conn: Connection,
    *,
    older_than: float | None = None,
    run: int | None = None,
    everything: bool = False,
    limit: int = 100000,
) -> list[int]:
    """Rows the GUI should have and has not: not registered, not refused nor left with a reason, ROOT file
    present, indexed. ``older_than``: received before this time (reconcile leaves fresh files to the
    chain). ``everything`` / ``run``: every present row (of the run), registered or not."""
    query = select(files.c.id).where(files.c.state != REMOVED, files.c.index_state != INDEX_SKIPPED)
    if not everything and run is None:
        query = query.where(and_(files.c.gui_registered_at.is_(None), files.c.gui_reason.is_(None)))
    if run is not None:
        query = query.where(files.c.run == int(run))
    if older_than is not None:
        query = query.where(files.c.created_at < older_than)
    return [r[0] for r in conn.execute(query.order_by(files.c.id).limit(limit))]


def _removed_registered_query() -> Select[Any]:
    newer = files.alias("newer")
    replaced = (
        select(newer.c.id)
        .where(
            newer.c.run == files.c.run,
            newer.c.dataset == files.c.dataset,
            or_(
                newer.c.subsystem == files.c.subsystem,
                and_(newer.c.subsystem.is_(None), files.c.subsystem.is_(None)),
            ),
            newer.c.version > files.c.version,
            newer.c.gui_registered_at.is_not(None),
        )
        .exists()
    )
    return select(
        files.c.id,
        files.c.cls,
        files.c.run,
        files.c.dataset,
        files.c.subsystem,
        files.c.version,
        files.c.path,
        files.c.gui_registered_at,
    ).where(files.c.state == REMOVED, files.c.gui_registered_at.is_not(None), ~replaced)


def removed_but_registered(conn: Connection, limit: int | None = None) -> list[dict[str, Any]]:
    """Registered rows whose ROOT file version or quota control deleted and that no newer registered
    version of the same sample replaced in the GUI: the GUI still points at a missing file."""
    query = _removed_registered_query().order_by(files.c.run, files.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def counts(conn: Connection) -> dict[str, int]:
    """registered (ROOT file present); waiting (present, not yet registered); not_sent (left with a
    reason, see ``files.gui_reason``); removed_registered (see :func:`removed_but_registered`).
    Aggregated in SQL: a few rows come back, whatever the catalog holds."""
    registered, has_reason = files.c.gui_registered_at.is_not(None), files.c.gui_reason.is_not(None)
    groups = (registered, has_reason, files.c.state, files.c.index_state)
    rows = conn.execute(select(*groups, func.count()).group_by(*groups)).all()
    out = {"registered": 0, "waiting": 0, "not_sent": 0, "removed_registered": 0}
    for is_registered, reason, state, index_state, n in rows:
        if state == REMOVED or (index_state == INDEX_SKIPPED and not is_registered):
            continue
        if is_registered:
            out["registered"] += n
        else:
            out["not_sent" if reason else "waiting"] += n
    out["removed_registered"] = conn.execute(
        select(func.count()).select_from(_removed_registered_query().subquery())
    ).scalar_one()
    return out


def unreachable_recently(conn: Connection, now: float, window: float) -> bool:
    """The unreachable alarm is active and was raised within ``window`` seconds (back off)."""
    row = conn.execute(
        select(alarms.c.last_at).where(alarms.c.key == ALARM_UNREACHABLE, alarms.c.active.is_(True))
    ).first()
    return row is not None and row.last_at > now - window


__all__ = [
    "ALARM_UNREACHABLE",
    "counts",
    "mark_registered",
    "missing_ids",
    "note_reasons",
    "removed_but_registered",
    "rows_by_ids",
    "rows_of_runs",
    "set_values",
    "unreachable_recently",
]
