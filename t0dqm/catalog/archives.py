"""Catalog SQL of archives: the zips, their members, and their way to tape (stage, verify, clean).

Every function takes a ``Connection`` (inside the caller's ``catalog.read()`` / ``catalog.begin()``)
and does one query; the steps (:mod:`t0dqm.steps.archive`, :mod:`t0dqm.steps.tape`) own the order
of the transactions. A few queries read the ``files``, ``alarms`` and ``audit`` tables on the archives'
behalf (the file row a zip step appends, the trouble alarm's message, the restage count).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Row, RowMapping

from t0dqm.catalog import states
from t0dqm.catalog.db import alarms, archives, audit, files, members
from t0dqm.formats import zipper

AnyRow: TypeAlias = "Row[*tuple[Any, ...]]"  # any result row

# -- members ---------------------------------------------------------------------------------------


def member_list(conn: Connection, archive_id: int) -> list[zipper.Member]:
    """The archive's committed members in the order they were added."""
    rows = conn.execute(
        select(members.c.name, members.c.size, members.c.adler32)
        .where(members.c.archive_id == archive_id)
        .order_by(members.c.added_at, members.c.name)
    ).all()
    return [zipper.Member(r.name, r.size, r.adler32) for r in rows]


def member_sources(conn: Connection, archive_id: int, repository: Path) -> dict[str, str]:
    """name -> repository path of each member (for rebuilding the zip)."""
    rows = conn.execute(
        select(members.c.name, files.c.path)
        .select_from(members.join(files, members.c.file_id == files.c.id))
        .where(members.c.archive_id == archive_id)
    ).all()
    return {r.name: str(repository / r.path) for r in rows}


def archive_of_file(conn: Connection, file_id: int) -> int | None:
    """The archive the file is a member of, if any."""
    row = conn.execute(select(members.c.archive_id).where(members.c.file_id == file_id)).first()
    return None if row is None else int(row[0])


def archives_holding_name(conn: Connection, name: str, archive_ids: Sequence[int]) -> set[int]:
    """Which of ``archive_ids`` already have a member called ``name``."""
    return {
        r[0]
        for r in conn.execute(
            select(members.c.archive_id).where(
                members.c.name == name, members.c.archive_id.in_(list(archive_ids))
            )
        )
    }


def insert_member(
    conn: Connection, archive_id: int, file_id: int, name: str, size: int, adler32: str, now: float
) -> None:
    conn.execute(
        insert(members).values(
            archive_id=archive_id, file_id=file_id, name=name, size=size, adler32=adler32, added_at=now
        )
    )


def files_in_archives(conn: Connection, file_ids: Sequence[int]) -> set[int]:
    """Which of ``file_ids`` are members of an archive."""
    return {
        r[0] for r in conn.execute(select(members.c.file_id).where(members.c.file_id.in_(list(file_ids))))
    }


# -- the files an archive takes (read on the archives' behalf) -------------------------------------


def file_row(conn: Connection, file_id: int) -> RowMapping | None:
    """The file's whole row."""
    return conn.execute(select(files).where(files.c.id == file_id)).mappings().first()


def set_file_reason(conn: Connection, file_id: int, reason: str, now: float) -> None:
    """Record why the file cannot be zipped (its state does not change)."""
    conn.execute(update(files).where(files.c.id == file_id).values(reason=reason, updated_at=now))


def files_with_pattern(conn: Connection, file_ids: Sequence[int]) -> set[int]:
    """Which of ``file_ids`` have a zip pattern."""
    return {
        r[0]
        for r in conn.execute(
            select(files.c.id).where(files.c.id.in_(list(file_ids)), files.c.zippat.is_not(None))
        )
    }


# -- archives --------------------------------------------------------------------------------------


def archive_row(conn: Connection, archive_id: int) -> RowMapping:
    """The archive's whole row (it must exist)."""
    return conn.execute(select(archives).where(archives.c.id == archive_id)).mappings().one()


def archive_id(conn: Connection, pattern: str, serial: int) -> int | None:
    """The id of the archive (pattern, serial), if it exists."""
    found = conn.execute(
        select(archives.c.id).where(archives.c.pattern == pattern, archives.c.serial == serial)
    ).scalar()
    return None if found is None else int(found)


def insert_archive(conn: Connection, path: str, pattern: str, serial: int, now: float) -> int:
    """A new open, empty archive; raises IntegrityError when (pattern, serial) exists."""
    result = conn.execute(
        insert(archives).values(
            path=path,
            pattern=pattern,
            serial=serial,
            state=states.OPEN,
            nfiles=0,
            size=0,
            tries=0,
            created_at=now,
            updated_at=now,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def archives_of_pattern(conn: Connection, pattern: str) -> Sequence[RowMapping]:
    """Every serial of the pattern."""
    return conn.execute(select(archives).where(archives.c.pattern == pattern)).mappings().all()


def count_append(conn: Connection, archive_id: int, size: int, now: float) -> int:
    """One more member in an open archive, now ``size`` bytes; 0 when it is no longer open."""
    done = conn.execute(
        update(archives)
        .where(archives.c.id == archive_id, archives.c.state == states.OPEN)
        .values(
            size=size,
            nfiles=archives.c.nfiles + 1,
            last_write=now,
            first_write=func.coalesce(archives.c.first_write, now),
            updated_at=now,
        )
    )
    return int(done.rowcount)


def archives_of_open_patterns(conn: Connection, pattern: str | None = None) -> Sequence[RowMapping]:
    """Every serial of each pattern that has an open serial (of ``pattern`` only, if given)."""
    query = select(archives).where(
        archives.c.pattern.in_(select(archives.c.pattern).where(archives.c.state == states.OPEN))
    )
    if pattern is not None:
        query = query.where(archives.c.pattern == pattern)
    return conn.execute(query).mappings().all()


def archives_in_states(conn: Connection, wanted: Iterable[str]) -> Sequence[RowMapping]:
    """Whole rows of the archives in these states, by id."""
    return (
        conn.execute(select(archives).where(archives.c.state.in_(list(wanted))).order_by(archives.c.id))
        .mappings()
        .all()
    )


def update_archive(conn: Connection, archive_id: int, **values: Any) -> None:
    """Set columns of one archive row (tries, next_try_at, size, adler32, reason, updated_at...)."""
    conn.execute(update(archives).where(archives.c.id == archive_id).values(**values))


# -- trouble ---------------------------------------------------------------------------------------


def trouble(conn: Connection, max_tries: int) -> Sequence[AnyRow]:
    """(path, state, tries, reason) of archives failed, in conflict, or retrying past the try limit."""
    return conn.execute(
        select(archives.c.path, archives.c.state, archives.c.tries, archives.c.reason).where(
            (archives.c.state.in_([states.FAILED, states.CONFLICT]))
            | ((archives.c.tries >= max_tries) & archives.c.state.in_([states.COPIED, states.VERIFIED]))
        )
    ).all()


def active_alarm_message(conn: Connection, key: str) -> str | None:
    """The message of the alarm ``key`` when it is active."""
    found = conn.execute(
        select(alarms.c.message).where(alarms.c.key == key, alarms.c.active.is_(True))
    ).scalar()
    return None if found is None else str(found)


def restage_count(conn: Connection, archive_id: int) -> int:
    """How many times the archive was sent back to stage (audited)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(audit)
            .where(audit.c.entity == "archive", audit.c.entity_id == archive_id, audit.c.action == "restage")
        ).scalar()
        or 0
    )


# -- due stages and verifications ------------------------------------------------------------------


def due_frozen(conn: Connection, now: float, dead: Sequence[int]) -> list[int]:
    """Frozen archives, unclaimed (or claimed by a dead process), whose next try is due."""
    free = (
        archives.c.claimed_until.is_(None) | (archives.c.claimed_until < now) | archives.c.id.in_(list(dead))
    )
    return [
        r[0]
        for r in conn.execute(
            select(archives.c.id)
            .where(
                archives.c.state == states.FROZEN,
                free,
                archives.c.next_try_at.is_(None) | (archives.c.next_try_at <= now),
            )
            .order_by(archives.c.id)
        )
    ]


def verify_candidates(
    conn: Connection, verifiable: Sequence[str], now: float, dead: Sequence[int]
) -> Sequence[AnyRow]:
    """(id, copied_at, next_try_at) of the unclaimed archives in ``verifiable`` states."""
    free = (
        archives.c.claimed_until.is_(None) | (archives.c.claimed_until < now) | archives.c.id.in_(list(dead))
    )
    return conn.execute(
        select(archives.c.id, archives.c.copied_at, archives.c.next_try_at)
        .where(archives.c.state.in_(list(verifiable)), free)
        .order_by(archives.c.id)
    ).all()


def recently_moved(conn: Connection, archive_ids: Sequence[int], since: float) -> set[int]:
    """Which of ``archive_ids`` moved after ``since`` and wait for nothing (unclaimed, no next try)."""
    return {
        r[0]
        for r in conn.execute(
            select(archives.c.id).where(
                archives.c.id.in_(list(archive_ids)),
                archives.c.updated_at >= since,
                archives.c.claimed_until.is_(None),
                archives.c.next_try_at.is_(None),
            )
        )
    }
