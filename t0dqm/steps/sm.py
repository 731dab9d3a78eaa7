"""Storage Manager (P5) cleanup I/O: read the listing, measure occupancy, apply a plan through the deleter.

The decisions are the pure policies of t0dqm.policies.storage_manager; this module only reads their
inputs and executes their output (rule "sm-<policy rule>", an audit row per file).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from t0dqm import deleter
from t0dqm.catalog.alarms import raise_alarm
from t0dqm.policies import storage_manager
from t0dqm.policies.storage_manager import SMFile, SMPlan
from t0dqm.steps.next import Context, LeaseBusy, Outcome

SM_TASK = "t0dqm.tasks.streamer.sm_cleanup"
ALARM_KEY = "sm-unchecked-deleted"


class ListingError(ValueError):
    """The listing cannot be read; nothing is deleted."""


def read_listing(path: str) -> list[SMFile]:
    """JSON lines ``{"path","run","size","mtime","checked","repacked","tier0_off"}``; a bad line refuses all."""
    out = []
    try:
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    out.append(
                        SMFile(
                            path=str(row["path"]),
                            run=int(row["run"]),
                            size=int(row["size"]),
                            mtime=float(row["mtime"]),
                            checked=bool(row["checked"]),
                            repacked=bool(row["repacked"]),
                            tier0_off=bool(row.get("tier0_off", False)),
                        )
                    )
                except (ValueError, KeyError, TypeError) as exc:
                    raise ListingError(f"{path}:{n}: bad listing line: {exc}") from None
    except OSError as exc:
        raise ListingError(f"{path}: {exc}") from None
    return out


def occupancy(path: str) -> float:
    """Used fraction of the filesystem holding ``path`` (as df: used / (used + available))."""
    st = os.statvfs(path)
    used = st.f_blocks - st.f_bfree
    usable = used + st.f_bavail
    return used / usable if usable else 0.0


@dataclass
class SMExecution:
    dry_run: bool
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    deleted_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "missing": self.missing,
            "refused": self.refused,
            "errors": self.errors,
            "deleted_bytes": self.deleted_bytes,
        }


def execute(plan: SMPlan, *, dry_run: bool, catalog: Any, settings: Any) -> SMExecution:
    """Delete every planned file through the guarded deleter; refusals and errors are collected."""
    ex = SMExecution(dry_run=dry_run)
    for d in plan.delete:
        reason = f"mode={plan.mode}" + (" unchecked" if d.unchecked else "")
        try:
            existed = deleter.delete(
                d.path,
                rule=f"sm-{d.rule}",
                reason=reason,
                dry_run=dry_run,
                size=d.size,
                catalog=catalog,
                settings=settings,
            )
        except deleter.DeletionRefused as exc:
            ex.refused.append(f"{d.path}: {exc}")
            continue
        except OSError as exc:
            ex.errors.append(f"{d.path}: {exc}")
            continue
        if existed:
            ex.deleted.append(d.path)
            ex.deleted_bytes += d.size
        else:
            ex.missing.append(d.path)
    return ex


def cleanup(
    ctx: Context,
    mode: str = "occupancy",
    dry_run: bool | None = None,
    now: float | None = None,
    occupancy: float | None = None,
    force: bool = False,
) -> Outcome:
    """Storage Manager cleanup of the P5 copy (mode "occupancy" or "age") through the guarded deleter.

    ``occupancy`` overrides the statvfs reading of ``storage_manager.area`` (tests, operators).
    """
    settings = ctx.settings
    cfg = settings.storage_manager
    if not cfg.enabled and not force:
        return Outcome({"skipped": "storage_manager.enabled is false"})
    if mode not in storage_manager.MODES:
        return Outcome({"refused": f"mode must be one of {storage_manager.MODES}, got {mode!r}"})
    if not cfg.listing:
        ctx.log("sm-no-listing", logging.ERROR)
        return Outcome({"refused": "storage_manager.listing is not set"})
    if occupancy is None:
        if not cfg.area:
            ctx.log("sm-no-area", logging.ERROR)
            return Outcome({"refused": "storage_manager.area is not set"})
        occupancy = _occupancy(cfg.area)
    if dry_run is None:
        dry_run = bool(settings.deletion.dry_run)
    now = time.time() if now is None else float(now)
    try:
        with ctx.lease("sm-cleanup", seconds=settings.tasks.long_time_limit):
            try:
                files = read_listing(cfg.listing)
            except ListingError as exc:
                ctx.log("sm-listing-refused", logging.ERROR, error=str(exc))
                return Outcome({"refused": str(exc)})
            plan = storage_manager.plan(files, occupancy, now, mode)
            ex = execute(plan, dry_run=dry_run, catalog=ctx.catalog, settings=settings)
    except LeaseBusy:
        return Outcome({"skipped": "another storage manager cleanup is running"})
    unchecked = [d.path for d in plan.delete if d.unchecked]
    if unchecked:
        verb = "would delete" if dry_run else "deleted"
        raise_alarm(
            ctx.catalog,
            ALARM_KEY,
            f"Storage Manager age cleanup {verb} {len(unchecked)} files not yet checked by Tier-0 "
            f"(occupancy {occupancy:.1%}), e.g. {unchecked[0]}",
            severity="critical",
        )
    out = {
        **plan.as_dict(),
        "mode": mode,
        "occupancy": occupancy,
        "alarm": bool(unchecked),
        "execution": ex.as_dict(),
    }
    ctx.log(
        "sm-cleanup",
        mode=mode,
        occupancy=occupancy,
        planned=len(plan.delete),
        deleted=len(ex.deleted),
        bytes=ex.deleted_bytes,
        refused=len(ex.refused),
        errors=len(ex.errors),
        unchecked=len(unchecked),
        dry_run=dry_run,
    )
    return Outcome(out)


_occupancy = occupancy  # the ``occupancy`` argument of cleanup shadows the function
