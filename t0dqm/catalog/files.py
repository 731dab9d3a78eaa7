"""Catalog SQL of file rows: receive (rows, quarantine, upload claims), versions and index states.

Every function takes a ``Connection`` inside the caller's transaction (``with catalog.begin() as conn:``)
and does no commit of its own; a ``begin_nested`` savepoint marks the inserts that may race another
writer (the caller sees ``IntegrityError`` or, where documented, ``None``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection as Connection  # noqa: PLC0414 - re-export for callers (mypy strict)
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError

from t0dqm.catalog.db import Catalog, audit, files, leases, quarantine
from t0dqm.catalog.states import INDEX_FAILED, INDEX_SKIPPED

if TYPE_CHECKING:
    from typing import TypeAlias

    AnyRow: TypeAlias = Row[*tuple[Any, ...]]

# -- receive: upload claims (catalog leases taken and released a batch at a time) -------------------------


def leases_taken(conn: Connection, names: Sequence[str]) -> set[str]:
    """The names among ``names`` that have a lease row (held, expired, or a dead holder's)."""
    return set(conn.execute(select(leases.c.name).where(leases.c.name.in_(names))).scalars())


def insert_leases(conn: Connection, names: Sequence[str], owner: str, expires_at: float, now: float) -> None:
    """Lease rows for ``names`` held by ``owner`` (the rows Catalog.acquire_lease inserts), in a savepoint;
    IntegrityError when another holder took one meanwhile."""
    with conn.begin_nested():
        conn.execute(
            insert(leases),
            [dict(name=n, owner=owner, expires_at=expires_at, heartbeat_at=now) for n in names],
        )


def release_leases(conn: Connection, names: Iterable[str], owner: str) -> None:
    """Drop ``owner``'s lease rows among ``names``."""
    conn.execute(leases.delete().where(leases.c.name.in_(sorted(names)), leases.c.owner == owner))


# -- receive: file rows ----------------------------------------------------------------------------


def sample_paths(conn: Connection, run: int, dataset: str) -> set[str]:
    """Repository paths of every row of the (run, dataset)."""
    rows = conn.execute(select(files.c.path).where(files.c.run == run, files.c.dataset == dataset))
    return {r[0] for r in rows}


def paths_of_runs(conn: Connection, runs: Sequence[int], chunk: int = 500) -> list[tuple[str, int, str]]:
    """(path, run, dataset) of every row of these runs (``chunk`` runs per query)."""
    out: list[tuple[str, int, str]] = []
    for start in range(0, len(runs), chunk):
        for path, run, dataset in conn.execute(
            select(files.c.path, files.c.run, files.c.dataset).where(
                files.c.run.in_(runs[start : start + chunk])
            )
        ):
            out.append((path, run, dataset))
    return out


def ids_by_path(conn: Connection, paths: Sequence[str]) -> dict[str, int]:
    """{path: id} of the rows among ``paths`` that exist."""
    # .all(): dict() on the result itself would take it for a mapping (it has keys(): the column names)
    return dict(conn.execute(select(files.c.path, files.c.id).where(files.c.path.in_(paths))).all())


def id_by_path(conn: Connection, path: str) -> int | None:
    """The id of the row with this repository path, or None."""
    found = conn.execute(select(files.c.id).where(files.c.path == path)).scalar()
    return None if found is None else int(found)


def id_of_path(conn: Connection, path: str) -> int:
    """The id of the row with this repository path (it must exist)."""
    return int(conn.execute(select(files.c.id).where(files.c.path == path)).scalar_one())


def path_known(conn: Connection, path: str) -> bool:
    """Whether a row with this repository path exists."""
    return conn.execute(select(files.c.id).where(files.c.path == path)).first() is not None


def insert_file(conn: Connection, row: Mapping[str, Any]) -> int | None:
    """Insert one file row in a savepoint; its id, or None when a row with its path exists."""
    try:
        with conn.begin_nested():
            key = conn.execute(insert(files).values(**row)).inserted_primary_key
            assert key is not None
            return int(key[0])
    except IntegrityError:
        return None


def insert_files_audited(
    conn: Connection, rows: Sequence[Mapping[str, Any]], audit_rows: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Insert file rows (one multi-row insert) and their audit rows, in one savepoint; returns the new ids
    in the order of ``rows``. ``audit_rows[i]["entity_id"]`` is set to the id of ``rows[i]``.
    IntegrityError when one of the paths exists (the savepoint is rolled back)."""
    with conn.begin_nested():
        result = conn.execute(insert(files).returning(files.c.id, sort_by_parameter_order=True), list(rows))
        new_ids = [int(r[0]) for r in result]
        conn.execute(
            insert(audit),
            [{**a, "entity_id": file_id} for a, file_id in zip(audit_rows, new_ids, strict=True)],
        )
    return new_ids


# -- receive: quarantine ---------------------------------------------------------------------------


def quarantine_once(conn: Connection, *, path: str, name: str, step: str, reason: str, now: float) -> bool:
    """A quarantine row for the upload unless an unresolved one with the same reason exists; True when
    inserted (the caller audits it)."""
    seen = conn.execute(
        select(quarantine.c.id).where(
            quarantine.c.path == path, quarantine.c.reason == reason, quarantine.c.resolved_at.is_(None)
        )
    ).first()
    if seen is not None:
        return False
    conn.execute(insert(quarantine).values(path=path, name=name, step=step, reason=reason, created_at=now))
    return True


# -- index states -------------------------------------------------------------------------------------


def set_index_state(
    catalog: Catalog,
    file_ids: Iterable[int],
    expected: Iterable[str],
    new: str,
    reason: str | None = None,
    reasons: dict[int, str] | None = None,
) -> list[int]:
    """Conditionally move files' index_state (one transaction, audited); returns the ids that moved, in the
    given order. Set-wise: one select, one update per (previous state, reason), one audit insert."""
    ids = list(dict.fromkeys(file_ids))
    if not ids:
        return []
    expected = list(expected)
    now = time.time()
    moved: set[int] = set()
    with catalog.begin() as conn:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            current = dict(
                conn.execute(select(files.c.id, files.c.index_state).where(files.c.id.in_(chunk))).all()
            )
            groups: dict[tuple[str, str | None], list[int]] = {}
            for file_id in chunk:
                if current.get(file_id) in expected:
                    groups.setdefault((current[file_id], (reasons or {}).get(file_id, reason)), []).append(
                        file_id
                    )
            rows: list[dict[str, Any]] = []
            for (previous, why), candidates in groups.items():
                group = candidates
                result = conn.execute(
                    update(files)
                    .where(files.c.id.in_(group), files.c.index_state == previous)
                    .values(
                        index_state=new,
                        updated_at=now,
                        reason=why if new in (INDEX_FAILED, INDEX_SKIPPED) else None,
                    )
                )
                if result.rowcount != len(group):  # some moved under us (several writers): see which we moved
                    group = [
                        r[0]
                        for r in conn.execute(
                            select(files.c.id).where(
                                files.c.id.in_(group), files.c.index_state == new, files.c.updated_at == now
                            )
                        )
                    ]
                moved.update(group)
                rows += [
                    dict(
                        at=now,
                        host=catalog.host,
                        entity="file",
                        entity_id=file_id,
                        action="index",
                        from_state=previous,
                        to_state=new,
                        path=None,
                        size=None,
                        checksum=None,
                        rule=None,
                        detail=why,
                    )
                    for file_id in group
                ]
            if rows:
                conn.execute(insert(audit), rows)
    return [i for i in ids if i in moved]


def versions_of(conn: Connection, runs: Sequence[int], datasets: Sequence[str]) -> list[AnyRow]:
    """(path, run, dataset, subsystem, version, state) of every row of these runs and datasets."""
    return list(
        conn.execute(
            select(
                files.c.path, files.c.run, files.c.dataset, files.c.subsystem, files.c.version, files.c.state
            ).where(files.c.run.in_(runs), files.c.dataset.in_(datasets))
        ).all()
    )


def row_by_id(conn: Connection, file_id: int) -> AnyRow | None:
    """The whole file row, or None."""
    return conn.execute(select(files).where(files.c.id == file_id)).first()


def index_rows(conn: Connection, ids: Sequence[int], chunk: int = 500) -> list[AnyRow]:
    """(id, cls, run, version, dataset, index_state, path) of these rows (``chunk`` ids per query)."""
    out: list[AnyRow] = []
    for start in range(0, len(ids), chunk):
        out += conn.execute(
            select(
                files.c.id,
                files.c.cls,
                files.c.run,
                files.c.version,
                files.c.dataset,
                files.c.index_state,
                files.c.path,
            ).where(files.c.id.in_(ids[start : start + chunk]))
        )
    return out


def ids_in_index_state(conn: Connection, state: str) -> list[int]:
    """Ids of the rows in this index_state."""
    return [r[0] for r in conn.execute(select(files.c.id).where(files.c.index_state == state))]


def class_and_run(conn: Connection, ids: Sequence[int]) -> list[AnyRow]:
    """(id, cls, run) of these rows."""
    return list(conn.execute(select(files.c.id, files.c.cls, files.c.run).where(files.c.id.in_(ids))).all())
