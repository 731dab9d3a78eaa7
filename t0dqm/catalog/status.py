"""Read-only views across the catalog: the operator's counts (``t0dqm status``, the metrics exporter), the
archive listing of ``t0dqm archive``, and the progress and invariant checks of ``t0dqm demo`` and the chaos runs.

File and archive totals per state come from the running counts (t0dqm.catalog.counts), not from here. On a
scrape, the metrics exporter reads only :func:`unresolved_quarantined` and :func:`oldest_waiting_since`;
the rest serve the operator's commands and the development tools.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from sqlalchemy import func, or_, select
from sqlalchemy.engine import Connection, Row, RowMapping

from t0dqm.catalog import states
from t0dqm.catalog.db import TABLES, archives, files, members, quarantine, t0_outputs, t0_rules
from t0dqm.catalog.queries import not_member
from t0dqm.catalog.states import INDEX_SKIPPED, INDEXED

# -- status and metrics -------------------------------------------------------------------------------------


def t0_output_states(conn: Connection) -> dict[str, int]:
    """Tier-0 disk outputs per state."""
    return {
        str(k): int(v)
        for k, v in conn.execute(select(t0_outputs.c.state, func.count()).group_by(t0_outputs.c.state)).all()
    }


def t0_rule_states(conn: Connection) -> dict[str, int]:
    """Rucio rules of Tier-0 blocks per state."""
    return {
        str(k): int(v)
        for k, v in conn.execute(select(t0_rules.c.state, func.count()).group_by(t0_rules.c.state)).all()
    }


def unresolved_quarantined(conn: Connection) -> int:
    """Quarantined uploads nobody resolved yet."""
    return int(
        conn.execute(
            select(func.count()).select_from(quarantine).where(quarantine.c.resolved_at.is_(None))
        ).scalar_one()
    )


def oldest_waiting_since(conn: Connection) -> dict[str, float | None]:
    """Per step (index, zip, stage, verify): when the oldest item now waiting there entered it (None: none)."""

    def scalar(query: Any) -> float | None:
        value = conn.execute(query).scalar()
        return None if value is None else float(value)

    return {
        "index": scalar(
            select(func.min(files.c.created_at)).where(
                files.c.index_state.in_([states.INDEX_PENDING, states.INDEX_PARTIAL]),
                files.c.state != states.REMOVED,
            )
        ),
        "zip": scalar(
            select(func.min(files.c.created_at)).where(
                files.c.state == states.RECEIVED, files.c.zippat.is_not(None), not_member()
            )
        ),
        "stage": scalar(select(func.min(archives.c.frozen_at)).where(archives.c.state == states.FROZEN)),
        "verify": scalar(select(func.min(archives.c.copied_at)).where(archives.c.state == states.COPIED)),
    }


# -- t0dqm archive (CLI) -------------------------------------------------------------------------------------


def list_archives(conn: Connection, state: str | None = None) -> list[RowMapping]:
    """Every archive (or those in ``state``) by pattern and serial."""
    query = select(archives).order_by(archives.c.pattern, archives.c.serial)
    if state:
        query = query.where(archives.c.state == state)
    return list(conn.execute(query).mappings().all())


def archives_named(conn: Connection, zip_name: str) -> list[RowMapping]:
    """Archives whose path is ``zip_name`` or ends with ``/zip_name``, or whose id it is."""
    cond = or_(archives.c.path == zip_name, archives.c.path.like(f"%/{zip_name}"))
    if zip_name.isdigit():
        cond = or_(cond, archives.c.id == int(zip_name))
    return list(conn.execute(select(archives).where(cond)).mappings().all())


def member_named(conn: Connection, archive_id: int, name: str) -> RowMapping | None:
    """The member ``name`` of an archive (None: not a member)."""
    return (
        conn.execute(select(members).where(members.c.archive_id == archive_id, members.c.name == name))
        .mappings()
        .first()
    )


# -- demo and chaos runs: progress -------------------------------------------------------------------------


class Progress(NamedTuple):
    """How far the chain got (t0dqm.dev.demo.progress)."""

    files: int  # filed
    indexed: int  # indexed or skipped
    archived: int  # in an archive in a safe state
    zipped: int  # in an archive
    quarantined: int
    archive_states: dict[str, int]


def progress(conn: Connection, safe: Iterable[str]) -> Progress:
    """Files filed, indexed, zipped and archived safely; quarantined uploads; archives per state."""
    n_files = conn.execute(select(func.count()).select_from(files)).scalar_one()
    indexed = conn.execute(
        select(func.count()).select_from(files).where(files.c.index_state.in_([INDEXED, INDEX_SKIPPED]))
    ).scalar_one()
    archived = conn.execute(
        select(func.count())
        .select_from(files.join(archives, files.c.archive_id == archives.c.id))
        .where(archives.c.state.in_(list(safe)))
    ).scalar_one()
    zipped = conn.execute(
        select(func.count()).select_from(files).where(files.c.archive_id.is_not(None))
    ).scalar_one()
    n_quarantined = conn.execute(select(func.count()).select_from(quarantine)).scalar_one()
    arch = {
        str(k): int(v)
        for k, v in conn.execute(select(archives.c.state, func.count()).group_by(archives.c.state)).all()
    }
    return Progress(n_files, indexed, archived, zipped, n_quarantined, arch)


def count_archives_in(conn: Connection, archive_states: Iterable[str]) -> int:
    """Archives in any of ``archive_states``."""
    return int(
        conn.execute(
            select(func.count()).select_from(archives).where(archives.c.state.in_(list(archive_states)))
        ).scalar_one()
    )


def count_files_in_index_state(conn: Connection, index_state: str) -> int:
    """Files in one index state."""
    return int(
        conn.execute(
            select(func.count()).select_from(files).where(files.c.index_state == index_state)
        ).scalar_one()
    )


def pending_at_steps(conn: Connection) -> dict[str, int]:
    """Items waiting at the catalog-driven steps: index, index-merge, archive (files to zip plus zip patterns
    to freeze: one freeze per pattern) and tape (stage or verify)."""

    def count(query: Any) -> int:
        return int(conn.execute(query).scalar_one())

    to_zip = count(
        select(func.count())
        .select_from(files)
        .where(files.c.state == states.RECEIVED, files.c.zippat.is_not(None), not_member())
    )
    # freeze is one step per zip pattern: the patterns of open archives and of files still to zip
    patterns = {r[0] for r in conn.execute(select(archives.c.pattern).where(archives.c.state == states.OPEN))}
    patterns |= {
        r[0]
        for r in conn.execute(
            select(files.c.zippat)
            .distinct()
            .where(files.c.state == states.RECEIVED, files.c.zippat.is_not(None), not_member())
        )
    }
    to_tape = count(
        select(func.count()).select_from(archives).where(archives.c.state.in_([states.FROZEN, states.COPIED]))
    )
    to_index = count(
        select(func.count()).select_from(files).where(files.c.index_state == states.INDEX_PENDING)
    )
    to_merge = count(
        select(func.count()).select_from(files).where(files.c.index_state == states.INDEX_PARTIAL)
    )
    return {"index": to_index, "index-merge": to_merge, "archive": to_zip + len(patterns), "tape": to_tape}


# -- chaos runs: claims, and the invariant checks ------------------------------------------------------------


def archive_claimants(conn: Connection, state: str, now: float) -> list[str]:
    """Holders of the unexpired claims on archives in ``state``."""
    return [
        r[0]
        for r in conn.execute(
            select(archives.c.claimed_by).where(archives.c.state == state, archives.c.claimed_until > now)
        )
    ]


def claimed_by(conn: Connection, entity: str, owner_like: str, now: float) -> list[int]:
    """Ids of the ``entity`` rows (file, archive) under an unexpired claim whose holder matches the LIKE
    pattern ``owner_like``."""
    table = TABLES[entity]
    return [
        r[0]
        for r in conn.execute(
            select(table.c.id).where(table.c.claimed_by.like(owner_like), table.c.claimed_until > now)
        )
    ]


def archive_ids_at(conn: Connection, paths: list[str]) -> list[int]:
    """Ids of the archives at these paths (relative to the zip root)."""
    return [r[0] for r in conn.execute(select(archives.c.id).where(archives.c.path.in_(paths)))]


def first_member_added_after(conn: Connection, archive_id: int, after: float) -> float | None:
    """When the first member added to an archive after ``after`` was added (None: none)."""
    at = conn.execute(
        select(func.min(members.c.added_at)).where(
            members.c.archive_id == archive_id, members.c.added_at > after
        )
    ).scalar()
    return None if at is None else float(at)


def archives_in_state(conn: Connection, state: str) -> list[Row[*tuple[Any, ...]]]:
    """(id, path) of the archives in ``state``."""
    return list(conn.execute(select(archives.c.id, archives.c.path).where(archives.c.state == state)).all())


def all_files_brief(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(id, name, path, index_state, archive_id, adler32) of every file."""
    return list(
        conn.execute(
            select(
                files.c.id,
                files.c.name,
                files.c.path,
                files.c.index_state,
                files.c.archive_id,
                files.c.adler32,
            )
        ).all()
    )


def all_archives(conn: Connection) -> dict[int, Row[*tuple[Any, ...]]]:
    """Every archive row by id."""
    return {r.id: r for r in conn.execute(select(archives))}


def all_members(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(file_id, archive_id, name, adler32) of every member."""
    return list(
        conn.execute(select(members.c.file_id, members.c.archive_id, members.c.name, members.c.adler32)).all()
    )


def quarantined_with_reason(conn: Connection) -> int:
    """Quarantined uploads that carry a reason."""
    return int(
        conn.execute(
            select(func.count()).select_from(quarantine).where(quarantine.c.reason != "")
        ).scalar_one()
    )
