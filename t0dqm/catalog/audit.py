"""Reads of the audit trail (chaos runs' measurements and checks), and the catalog read of the guarded deleter.

Audit rows are written by ``Catalog.audit`` (t0dqm.catalog.db), in the transaction of the change they record.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Row

from t0dqm.catalog.db import archives, audit, files
from t0dqm.catalog.states import INDEXED


def deletions(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(path, at, rule) of every audited real deletion."""
    return list(
        conn.execute(select(audit.c.path, audit.c.at, audit.c.rule).where(audit.c.action == "delete")).all()
    )


def first_change_after(
    conn: Connection, entity: str, entity_id: int, after: float, other_than_host: str
) -> float | None:
    """When a host other than ``other_than_host`` first audited a change of this item after ``after``."""
    at = conn.execute(
        select(func.min(audit.c.at)).where(
            audit.c.entity == entity,
            audit.c.entity_id == entity_id,
            audit.c.at > after,
            audit.c.host != other_than_host,
        )
    ).scalar()
    return None if at is None else float(at)


def first_indexed_after(conn: Connection, after: float) -> float | None:
    """When a file was first moved to indexed after ``after`` (None: not since)."""
    at = conn.execute(
        select(func.min(audit.c.at)).where(
            audit.c.action == "index", audit.c.to_state == INDEXED, audit.c.at > after
        )
    ).scalar()
    return None if at is None else float(at)


# -- the guarded deleter (t0dqm.deleter) ---------------------------------------------------------------------


def file_archive_state(conn: Connection, rel: str) -> Row[*tuple[Any, ...]] | None:
    """(id, state) of the repository file at ``rel`` and of its archive (state None: in no archive);
    None when the catalog has no such file."""
    return conn.execute(
        select(files.c.id, archives.c.state)
        .select_from(files.outerjoin(archives, files.c.archive_id == archives.c.id))
        .where(files.c.path == rel)
    ).first()
