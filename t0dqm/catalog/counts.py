"""Running counts of files and archives per state: what metrics and quota control read instead of the catalog.

Counting 10 million rows on every scrape or quota run costs seconds; these totals cost what changed.

- Triggers on ``files`` and ``archives`` append one delta row per insert, delete, or change of class,
  state, index state or size. The delta goes in the writer's own transaction, so it commits or rolls
  back with the change. Deltas are insert-only: concurrent writers never wait on a shared counter row.
- :func:`compact` moves the deltas into ``counts``: one ``DELETE ... RETURNING``, added up in the same
  transaction. Version control, quota control and the health check call it on their beat.
- :func:`totals` reads ``counts`` plus the deltas not yet folded in, in one statement, so it sees one snapshot.
- :func:`rebuild` counts everything again. Migration 0004 calls it, and so does a bulk load that ran
  with the triggers dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from t0dqm.catalog.db import Catalog, count_deltas, counts

KEY = ("entity", "cls", "state", "index_state")

# table -> (entity, expression of cls, of index_state, columns whose change moves the row between counts)
_SPECS = {
    "files": ("file", "{r}.cls", "{r}.index_state", ("cls", "state", "index_state", "size")),
    "archives": ("archive", "''", "''", ("state", "size")),
}


class Key(NamedTuple):
    entity: str
    cls: str
    state: str
    index_state: str


class Total(NamedTuple):
    n: int
    bytes: int


def _values(table: str, row: str, sign: int) -> str:
    entity, cls, index_state, _ = _SPECS[table]
    minus = "-" if sign < 0 else ""
    return (
        f"('{entity}', {cls.format(r=row)}, {row}.state, {index_state.format(r=row)}, {sign}, "
        f"{minus}{row}.size)"
    )


_INSERT = "INSERT INTO count_deltas (entity, cls, state, index_state, n, bytes) VALUES "


def _changed(columns: tuple[str, ...], distinct: str) -> str:
    return " OR ".join(f"OLD.{c} {distinct} NEW.{c}" for c in columns)


def _sqlite_ddl(table: str) -> list[str]:
    cols = _SPECS[table][3]
    name = f"t0dqm_count_{table}"
    return [
        (
            f"CREATE TRIGGER IF NOT EXISTS {name}_ins AFTER INSERT ON {table} BEGIN "
            f"{_INSERT}{_values(table, 'NEW', 1)}; END"
        ),
        (
            f"CREATE TRIGGER IF NOT EXISTS {name}_del AFTER DELETE ON {table} BEGIN "
            f"{_INSERT}{_values(table, 'OLD', -1)}; END"
        ),
        (
            f"CREATE TRIGGER IF NOT EXISTS {name}_upd AFTER UPDATE OF {', '.join(cols)} ON {table} "
            f"WHEN {_changed(cols, 'IS NOT')} BEGIN "
            f"{_INSERT}{_values(table, 'OLD', -1)}, {_values(table, 'NEW', 1)}; END"
        ),
    ]


def _postgresql_ddl(table: str) -> list[str]:
    cols = _SPECS[table][3]
    name = f"t0dqm_count_{table}"
    return [
        (
            f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF TG_OP <> 'INSERT' THEN {_INSERT}{_values(table, 'OLD', -1)}; END IF; "
            f"IF TG_OP <> 'DELETE' THEN {_INSERT}{_values(table, 'NEW', 1)}; END IF; "
            "RETURN NULL; END $$"
        ),
        f"DROP TRIGGER IF EXISTS {name}_insdel ON {table}",
        f"CREATE TRIGGER {name}_insdel AFTER INSERT OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION {name}()",
        f"DROP TRIGGER IF EXISTS {name}_upd ON {table}",
        (
            f"CREATE TRIGGER {name}_upd AFTER UPDATE OF {', '.join(cols)} ON {table} FOR EACH ROW "
            f"WHEN ({_changed(cols, 'IS DISTINCT FROM')}) EXECUTE FUNCTION {name}()"
        ),
    ]


def install_triggers(conn: Connection) -> None:
    """Create (or replace) the counting triggers on files and archives."""
    ddl = _postgresql_ddl if conn.dialect.name == "postgresql" else _sqlite_ddl
    for table in _SPECS:
        for statement in ddl(table):
            conn.exec_driver_sql(statement)


def drop_triggers(conn: Connection) -> None:
    """Remove the counting triggers (a bulk load does this, then :func:`rebuild` and :func:`install_triggers`)."""
    for table in _SPECS:
        name = f"t0dqm_count_{table}"
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_insdel ON {table}")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_upd ON {table}")
        else:
            for suffix in ("ins", "del", "upd"):
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_{suffix}")


def rebuild(conn: Connection) -> None:
    """Count every file and archive again (one full scan each); the deltas are discarded."""
    if conn.dialect.name == "postgresql":  # no writer may slip between the count and the delta purge
        conn.exec_driver_sql("LOCK TABLE files, archives IN SHARE MODE")
    conn.execute(delete(count_deltas))
    conn.execute(delete(counts))
    conn.exec_driver_sql(
        "INSERT INTO counts (entity, cls, state, index_state, n, bytes) "
        "SELECT 'file', cls, state, index_state, count(*), coalesce(sum(size), 0) FROM files "
        "GROUP BY cls, state, index_state"
    )
    conn.exec_driver_sql(
        "INSERT INTO counts (entity, cls, state, index_state, n, bytes) "
        "SELECT 'archive', '', state, '', count(*), coalesce(sum(size), 0) FROM archives GROUP BY state"
    )


def _upsert(conn: Connection) -> Any:
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = module.insert(counts)
    return stmt.on_conflict_do_update(
        index_elements=list(KEY),
        set_={"n": counts.c.n + stmt.excluded.n, "bytes": counts.c.bytes + stmt.excluded.bytes},
    )


def compact(catalog: Catalog, chunk: int = 20000) -> int:
    """Fold the pending deltas into ``counts``; returns how many were folded. Safe to run concurrently:
    each delta is deleted (and so added) by exactly one compactor."""
    folded = 0
    while True:
        with catalog.begin() as conn:
            oldest = select(count_deltas.c.id).order_by(count_deltas.c.id).limit(chunk)
            rows = conn.execute(
                delete(count_deltas)
                .where(count_deltas.c.id.in_(oldest.scalar_subquery()))
                .returning(*(count_deltas.c[k] for k in KEY), count_deltas.c.n, count_deltas.c.bytes)
            ).all()
            sums: dict[tuple[str, ...], list[int]] = {}
            for row in rows:
                acc = sums.setdefault(tuple(row[:4]), [0, 0])
                acc[0] += int(row.n)
                acc[1] += int(row.bytes)
            if sums:  # sorted: two compactors update shared rows in one order (no deadlock)
                conn.execute(
                    _upsert(conn),
                    [dict(zip(KEY, key, strict=True), n=n, bytes=b) for key, (n, b) in sorted(sums.items())],
                )
        folded += len(rows)
        if len(rows) < chunk:
            return folded


def totals_query(entity: str | None = None) -> Any:
    parts = [select(*(t.c[k] for k in KEY), t.c.n, t.c.bytes) for t in (counts, count_deltas)]
    if entity is not None:
        parts = [p.where(p.selected_columns.entity == entity) for p in parts]
    both = union_all(*parts).subquery()
    keys = [both.c[k] for k in KEY]
    return select(*keys, func.sum(both.c.n), func.sum(both.c.bytes)).group_by(*keys)


def totals(conn: Connection, entity: str | None = None) -> dict[Key, Total]:
    """Rows and bytes per (entity, cls, state, index_state): counts plus unfolded deltas, one snapshot."""
    rows = conn.execute(totals_query(entity)).all()
    return {Key(*r[:4]): Total(int(r[4] or 0), int(r[5] or 0)) for r in rows}


def by(
    totals_: Mapping[Key, Total],
    field: str,
    entity: str,
    *,
    states: tuple[str, ...] | None = None,
    measure: str = "n",
) -> dict[str, int]:
    """Sum of ``measure`` (n or bytes) per ``field`` of one entity, optionally only rows in ``states``."""
    out: dict[str, int] = {}
    for key, total in totals_.items():
        if key.entity != entity or (states is not None and key.state not in states):
            continue
        name = getattr(key, field)
        out[name] = out.get(name, 0) + getattr(total, measure)
    return out
