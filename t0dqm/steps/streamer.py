"""Streamer cleanup end to end: dump -> aggregates -> pure policy -> targets -> guarded deleter.

Shared by ``t0dqm streamer plan/clean`` and the ``streamer_cleanup`` task (step ``cleanup``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from t0dqm import deleter
from t0dqm.catalog import streamer as catalog_streamer
from t0dqm.clients.rundone import Prefetching, RunStreamDone
from t0dqm.formats import eosdump
from t0dqm.formats.streamer_names import AREA, StreamerUnit
from t0dqm.policies import streamer as policy
from t0dqm.steps.next import Context, LeaseBusy, Outcome
from t0dqm.storage import StorageError

STREAMER_TASK = "t0dqm.tasks.streamer.streamer_cleanup"


class CleanupError(RuntimeError):
    """The second pass over the dump does not match the plan: nothing is deleted."""


def read_skip_runs(path: str | os.PathLike[str] | None) -> frozenset[int]:
    """Runs to skip: one run number a line; blank lines and ``#`` comments ignored."""
    if not path:
        return frozenset()
    runs = set()
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            if not text.isdigit():
                raise ValueError(f"{path}:{n}: not a run number: {text!r}")
            runs.add(int(text))
    return frozenset(runs)


def units_from_summary(summary: eosdump.DumpSummary) -> list[policy.UnitStats]:
    return [
        policy.UnitStats(
            label=u.label,
            stream=u.stream,
            run=u.run,
            files=a.files,
            bytes=a.bytes,
            newest_mtime=a.newest,
            old_files=a.old_files,
            old_bytes=a.old_bytes,
            old_newest_mtime=a.old_newest,
        )
        for u, a in summary.units.items()
    ]


@dataclass(frozen=True)
class PlanResult:
    dump: str  # the resolved dump file (a symlink is resolved once, so both passes read the same file)
    now: float
    plan: policy.StreamerPlan
    summary: eosdump.DumpSummary
    transfertest_days: int
    done_requests: int = 0


def make_plan(
    dump: str,
    *,
    now: float | None = None,
    quota_bytes: int = policy.DEFAULT_QUOTA_BYTES,
    done_url: str | None = None,
    skip_runs: frozenset[int] = frozenset(),
    max_dump_age: float | None = eosdump.DEFAULT_MAX_AGE,
    transfertest_days: int = 7,
    age_days: int = 365,
    http_timeout: float = 10.0,
    workers: int = 8,
    done: Callable[[int, str], bool] | None = None,
) -> PlanResult:
    """Read the dump once and decide; raises eosdump.DumpError when the dump is refused."""
    now = time.time() if now is None else now
    real = os.path.realpath(dump)
    summary = eosdump.aggregate(
        real, max_age=max_dump_age, now=now, split_cutoff=policy.transfertest_cutoff(now, transfertest_days)
    )
    units = units_from_summary(summary)
    client = None
    if done is None and done_url:
        client = RunStreamDone(done_url, timeout=http_timeout, max_workers=workers)
        order = [(u.run, u.stream) for u in policy.walk_candidates(units, skip_runs)]
        done = Prefetching(client, order, batch=max(1, workers) * 4)
    plan = policy.plan_streamer_cleanup(
        units,
        now=now,
        quota_bytes=quota_bytes,
        done=done,
        skip_runs=skip_runs,
        other_bytes=summary.unrecognised_bytes,
        transfertest_days=transfertest_days,
        age_days=age_days,
    )
    return PlanResult(
        dump=real,
        now=now,
        plan=plan,
        summary=summary,
        transfertest_days=transfertest_days,
        done_requests=client.requests if client else 0,
    )


def target_for(path: str, base: str | None) -> str:
    """Deletion target of a dump path: ``base`` + the part from /store/t0streamer/ on, or the path."""
    if not base:
        return path
    i = path.find(AREA)
    if i < 0:
        raise ValueError(f"{path} is not in {AREA}")
    if "://" in base:  # root://host:port[//base] -> root://host:port//base/store/t0streamer/...
        scheme, rest = base.split("://", 1)
        server, _, base_path = rest.partition("/")
        base_path = base_path.strip("/")
        return f"{scheme}://{server}/{'/' + base_path if base_path else ''}{path[i:]}"
    return base.rstrip("/") + path[i:]


@dataclass(frozen=True)
class Target:
    target: str
    size: int
    checksum: str
    rule: str
    unit: StreamerUnit


def list_targets(result: PlanResult, base: str | None = None) -> list[Target]:
    """Second pass: every file the plan deletes; checked against the plan's counts and bytes."""
    rules: dict[StreamerUnit, str] = {}
    for d in result.plan.delete:
        rules[StreamerUnit(d.label, d.stream, d.run)] = d.rule
    if not rules:
        return []
    tt_cut = policy.transfertest_cutoff(result.now, result.transfertest_days)

    def select(unit: StreamerUnit) -> bool | policy.Mtime | None:
        rule = rules.get(unit)
        if rule is None:
            return None
        return tt_cut if rule == "transfertest-age" else True

    out: list[Target] = []
    seen: dict[StreamerUnit, list[int]] = {}
    for unit, rec in eosdump.iter_unit_files(result.dump, select, max_age=None, now=result.now):
        out.append(Target(target_for(rec.path, base), rec.size, rec.checksum, rules[unit], unit))
        agg = seen.setdefault(unit, [0, 0])
        agg[0] += 1
        agg[1] += rec.size
    for d in result.plan.delete:
        got = seen.get(StreamerUnit(d.label, d.stream, d.run), [0, 0])
        if got != [d.files, d.bytes]:
            raise CleanupError(
                f"{d.label}/{d.stream}/{d.run}: second pass found {got[0]} files, {got[1]} "
                f"bytes; plan says {d.files} files, {d.bytes} bytes: nothing deleted"
            )
    return out


@dataclass
class Execution:
    dry_run: bool
    deleted_files: int = 0
    deleted_bytes: int = 0
    missing: int = 0
    refused: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "dry_run": self.dry_run,
            "deleted_files": self.deleted_files,
            "deleted_bytes": self.deleted_bytes,
            "missing": self.missing,
            "refused": self.refused,
            "errors": self.errors,
        }


def execute(
    targets: list[Target],
    *,
    dry_run: bool,
    reason: str = "tier0 streamer cleanup",
    delete: Callable[..., bool] | None = None,
) -> Execution:
    """Delete every target through the guarded deleter (an audit row each)."""
    if delete is None:
        delete = deleter.delete
    ex = Execution(dry_run=dry_run)
    for t in targets:
        try:
            existed = delete(
                t.target,
                rule=f"streamer:{t.rule}",
                reason=reason,
                size=t.size,
                checksum=t.checksum or None,
                dry_run=dry_run,
            )
        except deleter.DeletionRefused as exc:
            ex.refused.append(str(exc))
            continue
        except (StorageError, OSError) as exc:
            ex.errors.append(f"{t.target}: {exc}")
            continue
        if existed:
            ex.deleted_files += 1
            ex.deleted_bytes += t.size
        else:
            ex.missing += 1
    return ex


def cleanup(
    ctx: Context, dry_run: bool | None = None, now: float | None = None, force: bool = False
) -> Outcome:
    """Plan and apply the streamer cleanup (one at a time); its result is the plan and what was done."""
    settings = ctx.settings
    cfg = settings.streamer
    if not cfg.enabled and not force:
        return Outcome({"skipped": "streamer.enabled is false"})
    if not cfg.dump:
        ctx.log("streamer-no-dump", logging.ERROR)
        return Outcome({"refused": "streamer.dump is not set"})
    if dry_run is None:
        dry_run = bool(settings.deletion.dry_run)
    try:
        with ctx.lease("streamer-cleanup", seconds=settings.tasks.long_time_limit):
            try:
                result = make_plan(
                    cfg.dump,
                    now=now,
                    quota_bytes=cfg.quota_bytes,
                    done_url=cfg.done_url or None,
                    skip_runs=read_skip_runs(cfg.skip_runs_file or None),
                    max_dump_age=cfg.max_dump_age,
                    # whole days in practice; a fraction works too (the policy truncates to seconds)
                    transfertest_days=cfg.transfertest_days,  # type: ignore[arg-type]
                    age_days=cfg.age_days,  # type: ignore[arg-type]
                    http_timeout=settings.timeout("http"),
                )
                targets = list_targets(result, cfg.base or None)
            except (eosdump.DumpError, CleanupError) as exc:
                ctx.log("streamer-dump-refused", logging.ERROR, error=str(exc))
                return Outcome({"refused": str(exc)})
            ex = execute(targets, dry_run=dry_run)
            catalog_streamer.record_units(ctx.catalog, result.plan.delete, dry_run)
    except LeaseBusy:
        return Outcome({"skipped": "another streamer cleanup is running"})
    out: dict[str, Any] = {
        **result.plan.as_dict(),
        "execution": ex.as_dict(),
        "dump": result.summary.as_dict(),
    }
    ctx.log(
        "streamer-cleanup",
        units=len(result.plan.delete),
        files=ex.deleted_files,
        bytes=ex.deleted_bytes,
        refused=len(ex.refused),
        errors=len(ex.errors),
        dry_run=dry_run,
        malformed=result.summary.malformed,
    )
    return Outcome(out)
