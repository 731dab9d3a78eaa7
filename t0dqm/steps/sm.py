"""Storage Manager (P5) cleanup I/O: read the listing, measure occupancy, apply a plan through the deleter.

The decisions are the pure policies of t0dqm.policies.storage_manager; this module only reads their
inputs and executes their output (rule "sm-<policy rule>", an audit row per file).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from t0dqm.policies.storage_manager import SMFile, SMPlan

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
                    out.append(SMFile(path=str(row["path"]), run=int(row["run"]), size=int(row["size"]),
                                      mtime=float(row["mtime"]), checked=bool(row["checked"]),
                                      repacked=bool(row["repacked"]),
                                      tier0_off=bool(row.get("tier0_off", False))))
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
        return {"dry_run": self.dry_run, "deleted": self.deleted, "missing": self.missing,
                "refused": self.refused, "errors": self.errors, "deleted_bytes": self.deleted_bytes}


def execute(plan: SMPlan, *, dry_run: bool, catalog: Any, settings: Any) -> SMExecution:
    """Delete every planned file through the guarded deleter; refusals and errors are collected."""
    from t0dqm import deleter

    ex = SMExecution(dry_run=dry_run)
    for d in plan.delete:
        reason = f"mode={plan.mode}" + (" unchecked" if d.unchecked else "")
        try:
            existed = deleter.delete(d.path, rule=f"sm-{d.rule}", reason=reason, dry_run=dry_run, size=d.size,
                                     catalog=catalog, settings=settings)
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
