"""Tier-0 disk outputs in the catalog (table ``t0_outputs``) and the retention run over them.

Registration: ``record_output`` when an output lands on the Tier-0 disk, ``mark_endpoint_done`` when a
transfer to one of its endpoints completed, ``set_needed_by`` with the number of processing jobs that
still read it. ``retention`` loads these facts, asks the pure policy (t0dqm.policies.retention) and
deletes what it releases through the guarded deleter (rule "t0-retention").

Row states: present -> deleting -> deleted (file deleted), or -> released when the output is placed with
Rucio (t0dqm.steps.placement removed its block's Tier-0 disk rule; Rucio's reaper deletes the replicas). ``deleting`` is taken with a conditional update that also
re-checks the facts the decision used (no endpoint added, nothing needing it), so a job registering
itself concurrently either wins (kept) or comes too late (``set_needed_by`` returns False). A run killed
between ``deleting`` and ``deleted`` is finished by the next run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from t0dqm.catalog.db import Catalog, t0_outputs
from t0dqm.policies import retention

RULE = "t0-retention"
ENTITY = "t0output"


def _dump(items: set[str] | list[str] | tuple[str, ...]) -> str:
    return json.dumps(sorted(set(items)))


def _load(text: str | None) -> frozenset[str]:
    return frozenset(json.loads(text or "[]"))


def record_output(catalog: Catalog, path: str, size: int, adler32: str | None,
                  endpoints_required: list[str] | tuple[str, ...] | set[str],
                  created_at: float | None = None, *, dataset: str | None = None, block: str | None = None,
                  lfn: str | None = None, conn: Connection | None = None) -> int:
    """Register an output (idempotent on ``path``: an existing row keeps its facts); returns its id.

    ``dataset``/``block``/``lfn`` place it in Rucio (t0dqm.steps.placement); ``conn`` joins the caller's
    transaction.
    """
    if conn is None:
        with catalog.begin() as own:
            return record_output(catalog, path, size, adler32, endpoints_required, created_at, dataset=dataset,
                                 block=block, lfn=lfn, conn=own)
    now = time.time()
    row_id = conn.execute(select(t0_outputs.c.id).where(t0_outputs.c.path == path)).scalar()
    if row_id is not None:
        return int(row_id)
    try:
        with conn.begin_nested():
            row_id = conn.execute(insert(t0_outputs).values(
                path=path, size=int(size), adler32=adler32,
                created_at=now if created_at is None else float(created_at),
                endpoints_required=_dump(list(endpoints_required)), endpoints_done="[]", needed_by=0,
                state="present", updated_at=now, dataset=dataset, block=block, lfn=lfn)).inserted_primary_key[0]
    except IntegrityError:  # registered concurrently
        row_id = conn.execute(select(t0_outputs.c.id).where(t0_outputs.c.path == path)).scalar()
        return int(row_id)
    catalog.audit(conn, entity=ENTITY, entity_id=int(row_id), action="register", to_state="present",
                  path=path, size=int(size), checksum=adler32, detail=block)
    return int(row_id)


def mark_endpoint_done(catalog: Catalog, path: str, endpoint: str) -> bool:
    """Record that ``path`` reached ``endpoint``; False when the output is unknown."""
    for _attempt in range(10):
        with catalog.begin() as conn:
            row = conn.execute(select(t0_outputs.c.id, t0_outputs.c.endpoints_done)
                               .where(t0_outputs.c.path == path)).first()
            if row is None:
                return False
            done = _load(row.endpoints_done)
            if endpoint in done:
                return True
            result = conn.execute(update(t0_outputs).where(
                t0_outputs.c.id == row.id, t0_outputs.c.endpoints_done == row.endpoints_done).values(
                endpoints_done=_dump(done | {endpoint}), updated_at=time.time()))
            if result.rowcount == 1:
                catalog.audit(conn, entity=ENTITY, entity_id=row.id, action="endpoint-done", path=path,
                              detail=endpoint)
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
        result = conn.execute(update(t0_outputs).where(*cond).values(needed_by=int(n), updated_at=time.time()))
        return result.rowcount == 1


# ------------------------------------------------------------------------------------------- retention

@dataclass
class RetentionRun:
    now: float
    min_days: int
    dry_run: bool
    execute: bool
    delete: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    lost_race: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rucio: dict[str, Any] | None = None  # blocks released by removing their Tier-0 disk rule (placement)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "now": self.now, "min_days": self.min_days, "delete": self.delete,
            "bytes": sum(d["size"] for d in self.delete), "kept": dict(sorted(self.kept.items()))}
        if self.execute:
            out["execution"] = {"dry_run": self.dry_run, "deleted": self.deleted, "missing": self.missing,
                                "lost_race": self.lost_race, "refused": self.refused, "errors": self.errors}
            if self.rucio is not None:
                out["execution"]["rucio"] = self.rucio
        return out


def _facts(row: Any) -> retention.T0Output:
    return retention.T0Output(name=row["path"], created=float(row["created_at"]),
                              endpoints=_load(row["endpoints_required"]),
                              transferred_to=_load(row["endpoints_done"]),
                              needed_by_processing=int(row["needed_by"] or 0) > 0, size=int(row["size"]))


def plan(catalog: Catalog, now: float, min_days: int) -> tuple[RetentionRun, dict[str, Any]]:
    """Decisions for every present output; rows already ``deleting`` are always due (interrupted run)."""
    run = RetentionRun(now=now, min_days=min_days, dry_run=True, execute=False)
    with catalog.read() as conn:
        rows = list(conn.execute(select(t0_outputs).where(t0_outputs.c.state.in_(("present", "deleting")))
                                 .order_by(t0_outputs.c.path)).mappings())
    by_path = {r["path"]: r for r in rows}
    for r in rows:
        if r["state"] == "deleting":
            reason = "resume"
        else:
            d = retention.decide(_facts(r), now, min_days)
            if not d.delete:
                key = d.reason.split(":", 1)[0]
                run.kept[key] = run.kept.get(key, 0) + 1
                continue
            reason = d.reason
        run.delete.append({"path": r["path"], "size": int(r["size"]), "reason": reason})
    return run, by_path


def _take(catalog: Catalog, row: Any) -> bool:
    """present -> deleting, only if the facts the decision used still hold."""
    if row["state"] == "deleting":
        return True
    with catalog.begin() as conn:
        result = conn.execute(update(t0_outputs).where(
            t0_outputs.c.id == row["id"], t0_outputs.c.state == "present", t0_outputs.c.needed_by == 0,
            t0_outputs.c.endpoints_required == row["endpoints_required"],
            t0_outputs.c.endpoints_done == row["endpoints_done"]).values(state="deleting", updated_at=time.time()))
        if result.rowcount != 1:
            return False
        catalog.audit(conn, entity=ENTITY, entity_id=row["id"], action="transition", from_state="present",
                      to_state="deleting", rule=RULE)
        return True


def _set_state(catalog: Catalog, row_id: int, new_state: str, detail: str | None = None) -> None:
    with catalog.begin() as conn:
        catalog.transition(conn, ENTITY, row_id, "deleting", new_state, detail=detail)


def run_retention(catalog: Catalog, settings: Any, *, now: float | None = None, min_days: int | None = None,
                  dry_run: bool = True) -> RetentionRun:
    """Plan and apply retention; in dry-run the deleter audits what would go and no row changes."""
    from t0dqm import deleter

    now = time.time() if now is None else float(now)
    min_days = int(settings["retention"]["min_days"] if min_days is None else min_days)
    run, rows = plan(catalog, now, min_days)
    run.execute, run.dry_run = True, dry_run
    # With Rucio, a placed output goes by removing its block's Tier-0 disk rule, never by deleting the file.
    by_rule = [i for i in run.delete if settings["rucio"]["url"] and rows[i["path"]]["block"]]
    if by_rule:
        from t0dqm.steps import placement

        run.rucio = placement.release(catalog, settings, by_rule, rows, dry_run=dry_run).as_dict()
    by_rule_paths = {i["path"] for i in by_rule}
    for item in run.delete:
        row = rows[item["path"]]
        if item["path"] in by_rule_paths:
            continue
        kwargs = {"rule": RULE, "reason": item["reason"], "size": int(row["size"]), "checksum": row["adler32"],
                  "entity_id": int(row["id"]), "catalog": catalog, "settings": settings}
        if dry_run:
            try:
                deleter.delete(row["path"], dry_run=True, **kwargs)
                run.deleted.append(row["path"])
            except deleter.DeletionRefused as exc:
                run.refused.append(f"{row['path']}: {exc}")
            continue
        if not _take(catalog, row):
            run.lost_race.append(row["path"])
            continue
        try:
            existed = deleter.delete(row["path"], dry_run=False, **kwargs)
        except deleter.DeletionRefused as exc:
            _set_state(catalog, int(row["id"]), "present", detail=f"refused: {exc}")
            run.refused.append(f"{row['path']}: {exc}")
            continue
        except Exception as exc:  # storage error: stays "deleting", the next run retries it
            run.errors.append(f"{row['path']}: {exc}")
            continue
        _set_state(catalog, int(row["id"]), "deleted")
        (run.deleted if existed else run.missing).append(row["path"])
    return run
