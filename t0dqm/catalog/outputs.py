"""Tier-0 disk outputs (table ``t0_outputs``) and their Rucio rules (table ``t0_rules``): every query.

Registration: ``record_output`` when an output lands on the Tier-0 disk, ``mark_endpoint_done`` when a
transfer to one of its endpoints completed, ``set_needed_by`` with the number of processing jobs that
still read it. Retention (t0dqm.steps.retention) reads ``live_outputs`` and takes a row with ``take``,
a conditional update that re-checks the facts the decision used; placement (t0dqm.steps.placement)
keeps one ``t0_rules`` row per (block, RSE).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, CursorResult, RowMapping
from sqlalchemy.exc import IntegrityError

from t0dqm.catalog.db import Catalog, quarantine, t0_outputs, t0_rules

ENTITY = "t0output"  # audit entity of a t0_outputs row
RULE_ENTITY = "t0rule"  # audit entity of a t0_rules row
LIVE = ("present", "deleting")  # output rows retention still acts on
RETENTION_RULE = "t0-retention"  # the audit rule of retention's deletions and releases


def dump_set(items: Iterable[str]) -> str:
    """A set of names as the JSON text the endpoint columns hold (sorted, no duplicates)."""
    return json.dumps(sorted(set(items)))


def load_set(text: str | None) -> frozenset[str]:
    """The set of names held by an endpoint column's JSON text."""
    return frozenset(json.loads(text or "[]"))


def _new_id(result: CursorResult[Any]) -> int:
    """The primary key an insert gave its row."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# --------------------------------------------------------------------------------------------- outputs


def record_output(
    catalog: Catalog,
    path: str,
    size: int,
    adler32: str | None,
    endpoints_required: list[str] | tuple[str, ...] | set[str],
    created_at: float | None = None,
    *,
    dataset: str | None = None,
    block: str | None = None,
    lfn: str | None = None,
    conn: Connection | None = None,
) -> int:
    """Register an output (idempotent on ``path``: an existing row keeps its facts); returns its id.

    ``dataset``/``block``/``lfn`` place it in Rucio (t0dqm.steps.placement); ``conn`` joins the caller's
    transaction.
    """
    if conn is None:
        with catalog.begin() as own:
            return record_output(
                catalog,
                path,
                size,
                adler32,
                endpoints_required,
                created_at,
                dataset=dataset,
                block=block,
                lfn=lfn,
                conn=own,
            )
    now = time.time()
    row_id = conn.execute(select(t0_outputs.c.id).where(t0_outputs.c.path == path)).scalar()
    if row_id is not None:
        return int(row_id)
    try:
        with conn.begin_nested():
            row_id = _new_id(
                conn.execute(
                    insert(t0_outputs).values(
                        path=path,
                        size=int(size),
                        adler32=adler32,
                        created_at=now if created_at is None else float(created_at),
                        endpoints_required=dump_set(list(endpoints_required)),
                        endpoints_done="[]",
                        needed_by=0,
                        state="present",
                        updated_at=now,
                        dataset=dataset,
                        block=block,
                        lfn=lfn,
                    )
                )
            )
    except IntegrityError:  # registered concurrently
        return int(conn.execute(select(t0_outputs.c.id).where(t0_outputs.c.path == path)).scalar_one())
    catalog.audit(
        conn,
        entity=ENTITY,
        entity_id=int(row_id),
        action="register",
        to_state="present",
        path=path,
        size=int(size),
        checksum=adler32,
        detail=block,
    )
    return int(row_id)


def mark_endpoint_done(catalog: Catalog, path: str, endpoint: str) -> bool:
    """Record that ``path`` reached ``endpoint``; False when the output is unknown."""
    for _attempt in range(10):
        with catalog.begin() as conn:
            row = conn.execute(
                select(t0_outputs.c.id, t0_outputs.c.endpoints_done).where(t0_outputs.c.path == path)
            ).first()
            if row is None:
                return False
            done = load_set(row.endpoints_done)
            if endpoint in done:
                return True
            result = conn.execute(
                update(t0_outputs)
                .where(t0_outputs.c.id == row.id, t0_outputs.c.endpoints_done == row.endpoints_done)
                .values(endpoints_done=dump_set(done | {endpoint}), updated_at=time.time())
            )
            if result.rowcount == 1:
                catalog.audit(
                    conn, entity=ENTITY, entity_id=row.id, action="endpoint-done", path=path, detail=endpoint
                )
                return True
    raise RuntimeError(f"could not record endpoint {endpoint} for {path}: too much contention")


def set_needed_by(catalog: Catalog, path: str, n: int) -> bool:
    """Set how many processing jobs still need ``path``.

    False when the output is unknown, or when ``n > 0`` and retention already started deleting it.
    """
    if n < 0:
        raise ValueError(f"needed_by must be >= 0, got {n}")
    with catalog.begin() as conn:
        cond = [t0_outputs.c.path == path]
        if n > 0:
            cond.append(t0_outputs.c.state == "present")
        result = conn.execute(
            update(t0_outputs).where(*cond).values(needed_by=int(n), updated_at=time.time())
        )
        return bool(result.rowcount == 1)


def registered(conn: Connection, path: str) -> Any:
    """(block, size, adler32) of the output already registered at ``path``, else None."""
    return conn.execute(
        select(t0_outputs.c.block, t0_outputs.c.size, t0_outputs.c.adler32).where(t0_outputs.c.path == path)
    ).first()


def live_outputs(catalog: Catalog) -> list[RowMapping]:
    """Every output retention still acts on (present or deleting), by path."""
    with catalog.read() as conn:
        return list(
            conn.execute(
                select(t0_outputs).where(t0_outputs.c.state.in_(LIVE)).order_by(t0_outputs.c.path)
            ).mappings()
        )


def take(catalog: Catalog, row: Mapping[str, Any], rule: str = RETENTION_RULE) -> bool:
    """present -> deleting, only if the facts the decision used still hold."""
    if row["state"] == "deleting":
        return True
    with catalog.begin() as conn:
        result = conn.execute(
            update(t0_outputs)
            .where(
                t0_outputs.c.id == row["id"],
                t0_outputs.c.state == "present",
                t0_outputs.c.needed_by == 0,
                t0_outputs.c.endpoints_required == row["endpoints_required"],
                t0_outputs.c.endpoints_done == row["endpoints_done"],
            )
            .values(state="deleting", updated_at=time.time())
        )
        if result.rowcount != 1:
            return False
        catalog.audit(
            conn,
            entity=ENTITY,
            entity_id=row["id"],
            action="transition",
            from_state="present",
            to_state="deleting",
            rule=rule,
        )
        return True


def set_state(catalog: Catalog, row_id: int, new_state: str, detail: str | None = None) -> None:
    """deleting -> ``new_state`` (audited)."""
    with catalog.begin() as conn:
        catalog.transition(conn, ENTITY, row_id, "deleting", new_state, detail=detail)


def mark_released(catalog: Catalog, row_ids: Iterable[int], block: str) -> None:
    """present/deleting -> released for the files of ``block`` whose Tier-0 disk rule was removed."""
    with catalog.begin() as conn:
        for row_id in row_ids:
            catalog.transition(
                conn,
                ENTITY,
                int(row_id),
                ("present", "deleting"),
                "released",
                detail=f"Tier-0 disk rule of {block} removed",
            )


def block_paths(catalog: Catalog, block: str) -> list[str]:
    """The paths of every file of ``block``."""
    with catalog.read() as conn:
        return [p for (p,) in conn.execute(select(t0_outputs.c.path).where(t0_outputs.c.block == block))]


def block_files(catalog: Catalog, block: str) -> list[dict[str, Any]]:
    """The block's files as Rucio wants them: name (LFN), bytes, adler32."""
    with catalog.read() as conn:
        rows = conn.execute(
            select(t0_outputs.c.lfn, t0_outputs.c.size, t0_outputs.c.adler32)
            .where(t0_outputs.c.block == block)
            .order_by(t0_outputs.c.lfn)
        ).all()
    return [{"name": r.lfn, "bytes": int(r.size), "adler32": r.adler32} for r in rows]


def count_live_files(catalog: Catalog, block: str) -> int:
    """How many files of ``block`` retention still acts on (present or deleting)."""
    with catalog.read() as conn:
        live = conn.execute(
            select(t0_outputs.c.id).where(t0_outputs.c.block == block, t0_outputs.c.state.in_(LIVE))
        ).all()
    return len(live)


def raw_bytes_by_dataset(catalog: Catalog) -> list[tuple[str, int]]:
    """(dataset, bytes) of every RAW dataset registered."""
    with catalog.read() as conn:
        return [
            (dataset, int(size or 0))
            for dataset, size in conn.execute(
                select(t0_outputs.c.dataset, func.sum(t0_outputs.c.size))
                .where(t0_outputs.c.dataset.like("%/RAW"))
                .group_by(t0_outputs.c.dataset)
            )
        ]


def quarantine_request(catalog: Catalog, name: str, reason: str, step: str) -> None:
    """Record a refused registration in ``quarantine`` (the operator sees why)."""
    with catalog.begin() as conn:
        conn.execute(
            insert(quarantine).values(
                path=name, name=name[:512], step=step, reason=reason, created_at=time.time()
            )
        )


# ----------------------------------------------------------------------------------------------- rules


def add_rule_row(
    catalog: Catalog, conn: Connection, block: str, dataset: str, rse: str, role: str, now: float
) -> None:
    """A ``pending`` rule row for (block, rse) unless there is one (idempotent, audited)."""
    exists = conn.execute(
        select(t0_rules.c.id).where(t0_rules.c.block == block, t0_rules.c.rse == rse)
    ).first()
    if exists is not None:
        return
    try:
        with conn.begin_nested():
            row_id = _new_id(
                conn.execute(
                    insert(t0_rules).values(
                        block=block,
                        dataset=dataset,
                        rse=rse,
                        role=role,
                        rule_id=None,
                        state="pending",
                        state_since=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
            )
    except IntegrityError:  # recorded concurrently
        return
    catalog.audit(
        conn,
        entity=RULE_ENTITY,
        entity_id=int(row_id),
        action="rule-planned",
        to_state="pending",
        path=block,
        detail=f"{role} {rse}",
    )


def rule_rows(catalog: Catalog, block: str) -> list[dict[str, Any]]:
    """The rule rows of ``block``, by role and RSE."""
    with catalog.read() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(t0_rules).where(t0_rules.c.block == block).order_by(t0_rules.c.role, t0_rules.c.rse)
            ).mappings()
        ]


def set_rule(
    catalog: Catalog,
    row: Mapping[str, Any],
    *,
    action: str | None = None,
    detail: str | None = None,
    now: float | None = None,
    **values: Any,
) -> None:
    """Update a rule row (``state_since`` follows a state change); audited when ``action`` is given."""
    now = time.time() if now is None else now
    if "state" in values and values["state"] != row["state"]:
        values.setdefault("state_since", now)
    with catalog.begin() as conn:
        conn.execute(update(t0_rules).where(t0_rules.c.id == row["id"]).values(updated_at=now, **values))
        if action:
            catalog.audit(
                conn,
                entity=RULE_ENTITY,
                entity_id=int(row["id"]),
                action=action,
                from_state=row["state"],
                to_state=values.get("state", row["state"]),
                path=row["block"],
                detail=detail or f"{row['role']} {row['rse']} rule {values.get('rule_id', row['rule_id'])}",
            )


def live_rule_blocks(catalog: Catalog, final: Iterable[str]) -> list[str]:
    """Blocks with a rule row not in a ``final`` state, by name."""
    with catalog.read() as conn:
        return [
            b
            for (b,) in conn.execute(
                select(t0_rules.c.block)
                .where(t0_rules.c.state.not_in(tuple(final)))
                .distinct()
                .order_by(t0_rules.c.block)
            )
        ]


# ------------------------------------------------------------------------------------------------ views


def block_listing(
    catalog: Catalog, *, dataset: str | None = None, state: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Blocks with their files' states, rules and retention facts, newest first (``t0dqm t0 output ls``)."""
    q = select(t0_outputs).where(t0_outputs.c.block.is_not(None))
    if dataset:
        q = q.where(t0_outputs.c.dataset == dataset)
    with catalog.read() as conn:
        files = list(conn.execute(q.order_by(t0_outputs.c.created_at.desc(), t0_outputs.c.path)).mappings())
        blocks: dict[str, dict[str, Any]] = {}
        for f in files:
            b = blocks.setdefault(
                f["block"],
                {
                    "block": f["block"],
                    "dataset": f["dataset"],
                    "files": 0,
                    "bytes": 0,
                    "created_at": f["created_at"],
                    "states": {},
                    "needed_by": 0,
                    "endpoints_required": set(),
                    "endpoints_done": None,
                },
            )
            b["files"] += 1
            b["bytes"] += int(f["size"])
            b["states"][f["state"]] = b["states"].get(f["state"], 0) + 1
            b["needed_by"] = max(b["needed_by"], int(f["needed_by"] or 0))
            b["endpoints_required"] |= load_set(f["endpoints_required"])
            done = load_set(f["endpoints_done"])
            b["endpoints_done"] = done if b["endpoints_done"] is None else (b["endpoints_done"] & done)
            b["created_at"] = min(b["created_at"], f["created_at"])
        out = []
        for b in blocks.values():
            if state and state not in b["states"]:
                continue
            rules = conn.execute(
                select(t0_rules)
                .where(t0_rules.c.block == b["block"])
                .order_by(t0_rules.c.role, t0_rules.c.rse)
            ).mappings()
            b["rules"] = [
                {k: r[k] for k in ("rse", "role", "rule_id", "state", "state_since", "error")} for r in rules
            ]
            b["endpoints_required"] = sorted(b["endpoints_required"])
            b["endpoints_done"] = sorted(b["endpoints_done"] or ())
            out.append(b)
            if len(out) >= limit:
                break
    return out
