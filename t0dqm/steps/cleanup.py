"""Step: cleanup of repository ROOT files (visDQMRootFileVersionControlDaemon, visDQMRootFileQuotaControl).

Both gather only their candidates from the catalog (t0dqm.catalog.queries: a worklist of samples with a new or
waiting version; the oldest present files of a class over quota, up to the target), ask a pure policy
(t0dqm.policies.versions / quota) and delete only through the guarded deleter, which itself refuses a
ROOT file whose archive is not verified. Only the ROOT file goes: the .dqminfo, the catalog row
(state -> removed) and the index entry stay. A class whose quota cannot be met because its files are not
archived yet raises the alarm ``quota:<class>``. Each runs alone (leases ``cleanup:version-control`` and
``cleanup:quota``); the tasks are :mod:`t0dqm.tasks.cleanup`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from t0dqm import config, deleter
from t0dqm.catalog import counts, queries
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog
from t0dqm.catalog.states import RECEIVED, REMOVED, ZIPPED, archive_safe_states
from t0dqm.policies import quota, versions
from t0dqm.steps.next import Context, LeaseBusy

logger = logging.getLogger("t0dqm.steps.cleanup")

VERSION_CONTROL_TASK = "t0dqm.tasks.cleanup.version_control"
QUOTA_CONTROL_TASK = "t0dqm.tasks.cleanup.quota_control"


@dataclass(frozen=True)
class Removal:
    file_id: int
    path: str
    rule: str
    reason: str
    outcome: str  # deleted | dry-run | missing | refused: <why>


VERSION_BATCH = 5000  # samples per version control run (the worklist is normally far shorter)


def _archived(settings: config.Settings) -> Callable[[str | None], bool]:
    """archive state -> may its members be deleted locally (see deletion.require_verified)."""
    safe = archive_safe_states(settings.archive.require_tape)
    unguarded = not settings.deletion.require_verified
    return lambda state: unguarded or state in safe


def _remove(
    catalog: Catalog,
    settings: config.Settings,
    file_id: int,
    path: str,
    rule: str,
    reason: str,
    size: int,
    adler32: str,
    dry_run: bool | None,
) -> Removal:
    """Delete one repository ROOT file through the guard; mark the row removed when it is gone."""
    if dry_run is None:
        dry_run = bool(settings.deletion.dry_run)
    target = str(settings.repository / path)
    try:
        existed = deleter.delete(
            target,
            rule=rule,
            reason=reason,
            dry_run=dry_run,
            size=size,
            checksum=adler32,
            entity_id=file_id,
            catalog=catalog,
            settings=settings,
        )
    except deleter.DeletionRefused as exc:
        logger.warning("cleanup refused for %s: %s", path, exc)
        return Removal(file_id, path, rule, reason, f"refused: {exc}")
    if dry_run:
        return Removal(file_id, path, rule, reason, "dry-run")
    with catalog.begin() as conn:
        catalog.transition(
            conn, "file", file_id, [RECEIVED, ZIPPED], REMOVED, release=False, detail=f"{rule}: {reason}"
        )
    return Removal(file_id, path, rule, reason, "deleted" if existed else "missing")


@dataclass(frozen=True)
class VersionPlan:
    decisions: tuple[versions.VersionDecision, ...]  # present files of the samples on the worklist
    rows: dict[int, Any]  # file id -> catalog row (every version of those samples)
    more: bool  # the worklist holds more samples than one batch


def plan_version_control(
    settings: config.Settings, catalog: Catalog, batch: int = VERSION_BATCH
) -> VersionPlan:
    """The version policy over the samples on version control's worklist (t0dqm.catalog.queries)."""
    archived = _archived(settings)
    with catalog.read() as conn:
        rows, more = queries.version_worklist(conn, batch)
    vfiles = [
        versions.VersionedFile(
            r.path,
            r.run,
            r.dataset,
            r.subsystem,
            r.version,
            archived=archived(r.archive_state),
            present=r.state != REMOVED,
            size=r.size,
            file_id=r.id,
        )
        for r in rows
    ]
    return VersionPlan(versions.plan_versions(vfiles), {r.id: r for r in rows}, more)


def version_control(
    settings: config.Settings, catalog: Catalog, dry_run: bool | None = None, batch: int = VERSION_BATCH
) -> list[Removal]:
    """Delete ROOT files of superseded versions whose archive is verified; newest versions stay.

    A sample leaves the worklist once none of its superseded files is left on disk; one that waits
    for its archive (or whose deletion was refused or only simulated) stays on it.
    """
    plan = plan_version_control(settings, catalog, batch)
    out: list[Removal] = []
    unsettled: set[tuple[int, str]] = set()
    for d in plan.decisions:
        row = plan.rows[d.file.file_id]  # type: ignore[index]  # files built from catalog rows: id set
        if d.action == versions.KEEP:
            continue
        if d.action == versions.DELETE:
            removal = _remove(
                catalog, settings, row.id, row.path, d.rule, d.reason, row.size, row.adler32, dry_run
            )
            out.append(removal)
            if removal.outcome in ("deleted", "missing"):
                continue
        unsettled.add((row.run, row.dataset))
    settled = [r.id for r in plan.rows.values() if (r.run, r.dataset) not in unsettled]
    if settled:
        with catalog.begin() as conn:
            queries.mark_versions_checked(conn, settled)
    if plan.more:
        logger.warning("version control: more than %d samples on the worklist; the rest go next run", batch)
    return out


@dataclass(frozen=True)
class QuotaReport:
    removals: list[Removal]
    plans: dict[str, quota.QuotaPlan]
    truncated: tuple[str, ...] = ()  # classes whose walk stopped at max_rows before reaching the target


def plan_quota_control(
    settings: config.Settings, catalog: Catalog
) -> tuple[dict[str, quota.QuotaPlan], dict[int, Any], tuple[str, ...]]:
    """Per class with a quota: usage from the running counts; when over, the oldest present files up
    to the target (t0dqm.catalog.queries.quota_prefix); the quota policy decides over them."""
    safe = archive_safe_states(settings.archive.require_tape)
    unguarded = not settings.deletion.require_verified
    quotas = {str(k): int(v) for k, v in settings.quota.items()}
    plans: dict[str, quota.QuotaPlan] = {}
    rows_by_id: dict[int, Any] = {}
    truncated: list[str] = []
    with catalog.read() as conn:
        used = counts.by(counts.totals(conn, "file"), "cls", "file", states=queries.PRESENT, measure="bytes")
        for cls, limit in sorted(quotas.items()):
            if limit <= 0:
                raise ValueError(f"quota for {cls} must be positive, got {limit}")
            rows, cut = queries.quota_prefix(
                conn, cls, quota.excess(used.get(cls, 0), limit), safe, unguarded
            )
            if cut:
                truncated.append(cls)
            rows_by_id.update((r.id, r) for r in rows)
            qfiles = [
                quota.QuotaFile(r.path, cls, r.size, r.mtime, archived=bool(r.archived), file_id=r.id)
                for r in rows
            ]
            plans[cls] = quota.plan_class(cls, qfiles, limit, used=used.get(cls, 0))
    return plans, rows_by_id, tuple(truncated)


def quota_control(settings: config.Settings, catalog: Catalog, dry_run: bool | None = None) -> QuotaReport:
    """Per class over quota: delete the oldest archived ROOT files down to 95 %; alarm when unarchived
    files stand in the way."""
    plans, rows, truncated = plan_quota_control(settings, catalog)
    removals: list[Removal] = []
    for cls, plan in plans.items():
        mine = [
            _remove(
                catalog,
                settings,
                d.file.file_id,  # type: ignore[arg-type]  # QuotaFiles built from catalog rows: id set
                d.file.path,
                d.rule,
                d.reason,
                d.file.size,
                rows[d.file.file_id].adler32,  # type: ignore[index]  # as above
                dry_run,
            )
            for d in plan.deletions
        ]
        removals += mine
        key = f"quota:{cls}"
        refused = sum(1 for r in mine if r.outcome.startswith("refused"))
        if plan.alarm or refused:
            raise_alarm(catalog, key, _quota_message(cls, plan, refused, cls in truncated))
        else:
            clear_alarm(catalog, key)
    return QuotaReport(removals, plans, truncated)


def _quota_message(cls: str, plan: quota.QuotaPlan, refused: int, truncated: bool = False) -> str:
    gib = 1 << 30
    text = (
        f"{cls} uses {plan.used / gib:.2f} GiB of {plan.quota / gib:.2f} GiB; "
        f"{plan.shortfall / gib:.2f} GiB cannot be freed because {'at least ' if truncated else ''}"
        f"{len(plan.blocked)} older file(s) are not archived yet"
    )
    if refused:
        text += f"; {refused} deletion(s) refused by the guard"
    return text


def _summary(removals: Iterable[Removal]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in removals:
        key = r.outcome.split(":", 1)[0]
        out[key] = out.get(key, 0) + 1
    return out


def run_version_control(ctx: Context, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: keep the newest version; drop older ROOT files once their archive is verified."""
    try:
        with ctx.lease("cleanup:version-control", seconds=ctx.settings.tasks.long_time_limit):
            counts.compact(ctx.catalog)
            removals = version_control(ctx.settings, ctx.catalog, dry_run)
    except LeaseBusy:
        return {}
    summary = _summary(removals)
    if summary:
        ctx.log("version-control", **summary)
    return summary


def run_quota_control(ctx: Context, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: per-class quota, oldest archived files first, down to 95 %; alarm when blocked."""
    try:
        with ctx.lease("cleanup:quota", seconds=ctx.settings.tasks.long_time_limit):
            counts.compact(ctx.catalog)
            report = quota_control(ctx.settings, ctx.catalog, dry_run)
    except LeaseBusy:
        return {}
    summary = _summary(report.removals)
    summary["alarms"] = sum(1 for p in report.plans.values() if p.alarm)
    if report.removals or summary["alarms"]:
        ctx.log("quota-control", **summary)
    return summary
