"""Tier-0 disk retention over the catalog's outputs (``t0_outputs``, queries in t0dqm.catalog.outputs).

``run_retention`` loads the outputs' facts, asks the pure policy (t0dqm.policies.retention) and deletes
what it releases through the guarded deleter (rule "t0-retention"); ``cleanup`` is the daily task's step.

Row states: present -> deleting -> deleted (file deleted), or -> released when the output is placed with
Rucio (t0dqm.steps.placement removed its block's Tier-0 disk rule; Rucio's reaper deletes the replicas).
``deleting`` is taken with a conditional update that also re-checks the facts the decision used (no
endpoint added, nothing needing it), so a job registering itself concurrently either wins (kept) or comes
too late (``set_needed_by`` returns False). A run killed between ``deleting`` and ``deleted`` is finished
by the next run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from t0dqm import deleter
from t0dqm.catalog import outputs as catalog_outputs
from t0dqm.catalog.db import Catalog
from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
from t0dqm.policies import retention
from t0dqm.steps import placement
from t0dqm.steps.next import Context, LeaseBusy, Outcome

RETENTION_TASK = "t0dqm.tasks.streamer.retention_cleanup"
RULE = catalog_outputs.RETENTION_RULE
ENTITY = catalog_outputs.ENTITY


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
            "now": self.now,
            "min_days": self.min_days,
            "delete": self.delete,
            "bytes": sum(d["size"] for d in self.delete),
            "kept": dict(sorted(self.kept.items())),
        }
        if self.execute:
            out["execution"] = {
                "dry_run": self.dry_run,
                "deleted": self.deleted,
                "missing": self.missing,
                "lost_race": self.lost_race,
                "refused": self.refused,
                "errors": self.errors,
            }
            if self.rucio is not None:
                out["execution"]["rucio"] = self.rucio
        return out


def _facts(row: Any) -> retention.T0Output:
    return retention.T0Output(
        name=row["path"],
        created=float(row["created_at"]),
        endpoints=catalog_outputs.load_set(row["endpoints_required"]),
        transferred_to=catalog_outputs.load_set(row["endpoints_done"]),
        needed_by_processing=int(row["needed_by"] or 0) > 0,
        size=int(row["size"]),
    )


def plan(catalog: Catalog, now: float, min_days: int) -> tuple[RetentionRun, dict[str, Any]]:
    """Decisions for every present output; rows already ``deleting`` are always due (interrupted run)."""
    run = RetentionRun(now=now, min_days=min_days, dry_run=True, execute=False)
    rows = catalog_outputs.live_outputs(catalog)
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


def run_retention(
    catalog: Catalog,
    settings: Any,
    *,
    now: float | None = None,
    min_days: int | None = None,
    dry_run: bool = True,
) -> RetentionRun:
    """Plan and apply retention; in dry-run the deleter audits what would go and no row changes."""
    now = time.time() if now is None else float(now)
    min_days = int(settings.retention.min_days if min_days is None else min_days)
    run, rows = plan(catalog, now, min_days)
    run.execute, run.dry_run = True, dry_run
    # With Rucio, a placed output goes by removing its block's Tier-0 disk rule, never by deleting the file.
    by_rule = [i for i in run.delete if settings.rucio.url and rows[i["path"]]["block"]]
    if by_rule:
        run.rucio = placement.release(catalog, settings, by_rule, rows, dry_run=dry_run).as_dict()
    by_rule_paths = {i["path"] for i in by_rule}
    for item in run.delete:
        row = rows[item["path"]]
        if item["path"] in by_rule_paths:
            continue
        kwargs = {
            "rule": RULE,
            "reason": item["reason"],
            "size": int(row["size"]),
            "checksum": row["adler32"],
            "entity_id": int(row["id"]),
            "catalog": catalog,
            "settings": settings,
        }
        if dry_run:
            try:
                deleter.delete(row["path"], dry_run=True, **kwargs)
                run.deleted.append(row["path"])
            except deleter.DeletionRefused as exc:
                run.refused.append(f"{row['path']}: {exc}")
            continue
        if not catalog_outputs.take(catalog, row, RULE):
            run.lost_race.append(row["path"])
            continue
        try:
            existed = deleter.delete(row["path"], dry_run=False, **kwargs)
        except deleter.DeletionRefused as exc:
            catalog_outputs.set_state(catalog, int(row["id"]), "present", detail=f"refused: {exc}")
            run.refused.append(f"{row['path']}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - any storage error: stays "deleting", the next run retries
            run.errors.append(f"{row['path']}: {exc}")
            continue
        catalog_outputs.set_state(catalog, int(row["id"]), "deleted")
        (run.deleted if existed else run.missing).append(row["path"])
    return run


def cleanup(
    ctx: Context, dry_run: bool | None = None, now: float | None = None, force: bool = False
) -> Outcome:
    """The daily retention run (one at a time); its result is the plan and what was done."""
    settings = ctx.settings
    if not settings.retention.enabled and not force:
        return Outcome({"skipped": "retention.enabled is false"})
    if dry_run is None:
        dry_run = bool(settings.deletion.dry_run)
    try:
        with ctx.lease("t0-retention", seconds=settings.tasks.long_time_limit):
            run = run_retention(ctx.catalog, settings, now=now, dry_run=dry_run)
    except LeaseBusy:
        return Outcome({"skipped": "another retention cleanup is running"})
    except (RucioUnavailable, RucioRefused) as exc:  # no rule removed without a fresh check: next run
        ctx.log("t0-retention-rucio", logging.ERROR, error=str(exc))
        return Outcome({"refused": f"Rucio: {exc}; nothing released"})
    ctx.log(
        "t0-retention",
        planned=len(run.delete),
        deleted=len(run.deleted),
        missing=len(run.missing),
        lost_race=len(run.lost_race),
        refused=len(run.refused),
        errors=len(run.errors),
        dry_run=dry_run,
    )
    return Outcome(run.as_dict())
