"""Tasks: cleanup of repository ROOT files (visDQMRootFileVersionControlDaemon, visDQMRootFileQuotaControl).

Both gather facts from the catalog, ask a pure policy (t0dqm.policies.versions / quota) and delete only
through the guarded deleter, which itself refuses a ROOT file whose archive is not verified. Only the ROOT
file goes: the .dqminfo, the catalog row (state -> removed) and the index entry stay. A class whose quota
cannot be met because its files are not archived yet raises the alarm ``quota:<class>``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from t0dqm import config, deleter
from t0dqm.alarms import clear_alarm, raise_alarm
from t0dqm.catalog import Catalog, archives, files
from t0dqm.celery import app
from t0dqm.policies import quota, versions
from t0dqm.states import RECEIVED, REMOVED, ZIPPED, archive_safe_states
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits

logger = logging.getLogger("t0dqm.tasks.cleanup")


@dataclass(frozen=True)
class Removal:
    file_id: int
    path: str
    rule: str
    reason: str
    outcome: str  # deleted | dry-run | missing | refused: <why>


def _facts(catalog: Catalog, settings: config.Settings) -> list[Any]:
    safe = archive_safe_states(settings["archive"]["require_tape"])
    with catalog.read() as conn:
        rows = conn.execute(
            select(files.c.id, files.c.path, files.c.cls, files.c.run, files.c.dataset, files.c.subsystem,
                   files.c.version, files.c.size, files.c.mtime, files.c.adler32, files.c.state,
                   archives.c.state.label("archive_state"))
            .select_from(files.outerjoin(archives, files.c.archive_id == archives.c.id))).all()
    unguarded = not settings["deletion"]["require_verified"]
    return [(r, unguarded or r.archive_state in safe) for r in rows]


def _remove(catalog: Catalog, settings: config.Settings, file_id: int, path: str, rule: str, reason: str,
            size: int, adler32: str, dry_run: bool | None) -> Removal:
    """Delete one repository ROOT file through the guard; mark the row removed when it is gone."""
    if dry_run is None:
        dry_run = bool(settings["deletion"]["dry_run"])
    target = str(settings.repository / path)
    try:
        existed = deleter.delete(target, rule=rule, reason=reason, dry_run=dry_run, size=size, checksum=adler32,
                                 entity_id=file_id, catalog=catalog, settings=settings)
    except deleter.DeletionRefused as exc:
        logger.warning("cleanup refused for %s: %s", path, exc)
        return Removal(file_id, path, rule, reason, f"refused: {exc}")
    if dry_run:
        return Removal(file_id, path, rule, reason, "dry-run")
    with catalog.begin() as conn:
        catalog.transition(conn, "file", file_id, [RECEIVED, ZIPPED], REMOVED, release=False,
                           detail=f"{rule}: {reason}")
    return Removal(file_id, path, rule, reason, "deleted" if existed else "missing")


def version_control(settings: config.Settings, catalog: Catalog, dry_run: bool | None = None) -> list[Removal]:
    """Delete ROOT files of superseded versions whose archive is verified; newest versions stay."""
    facts = _facts(catalog, settings)
    by_id = {r.id: r for r, _ in facts}
    vfiles = [versions.VersionedFile(r.path, r.run, r.dataset, r.subsystem, r.version, archived=archived,
                                     present=r.state != REMOVED, size=r.size, file_id=r.id)
              for r, archived in facts]
    out: list[Removal] = []
    for d in versions.deletions(vfiles):
        row = by_id[d.file.file_id]
        out.append(_remove(catalog, settings, row.id, row.path, d.rule, d.reason, row.size, row.adler32, dry_run))
    return out


@dataclass(frozen=True)
class QuotaReport:
    removals: list[Removal]
    plans: dict[str, quota.QuotaPlan]


def quota_control(settings: config.Settings, catalog: Catalog, dry_run: bool | None = None) -> QuotaReport:
    """Per class over quota: delete the oldest archived ROOT files down to 95 %; alarm when unarchived
    files stand in the way."""
    facts = _facts(catalog, settings)
    by_id = {r.id: r for r, _ in facts}
    qfiles = [quota.QuotaFile(r.path, r.cls, r.size, r.mtime, archived=archived, present=r.state != REMOVED,
                              file_id=r.id) for r, archived in facts]
    plans = quota.plan_quota(qfiles, {k: int(v) for k, v in settings["quota"].items()})
    removals: list[Removal] = []
    for cls, plan in plans.items():
        for d in plan.deletions:
            row = by_id[d.file.file_id]
            removals.append(_remove(catalog, settings, row.id, row.path, d.rule, d.reason, row.size, row.adler32,
                                    dry_run))
        key = f"quota:{cls}"
        refused = [r for r in removals if r.outcome.startswith("refused") and by_id[r.file_id].cls == cls]
        if plan.alarm or refused:
            raise_alarm(catalog, key, _quota_message(cls, plan, len(refused)))
        else:
            clear_alarm(catalog, key)
    return QuotaReport(removals, plans)


def _quota_message(cls: str, plan: quota.QuotaPlan, refused: int) -> str:
    gib = 1 << 30
    text = (f"{cls} uses {plan.used / gib:.2f} GiB of {plan.quota / gib:.2f} GiB; "
            f"{plan.shortfall / gib:.2f} GiB cannot be freed because {len(plan.blocked)} older file(s) are "
            f"not archived yet")
    if refused:
        text += f"; {refused} deletion(s) refused by the guard"
    return text


def _summary(removals: Iterable[Removal]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in removals:
        key = r.outcome.split(":", 1)[0]
        out[key] = out.get(key, 0) + 1
    return out


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.cleanup.version_control", **long_limits())
def version_control_task(self: T0Task, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: keep the newest version; drop older ROOT files once their archive is verified."""
    try:
        with self.lease("cleanup:version-control", seconds=self.settings["tasks"]["long_time_limit"]):
            removals = version_control(self.settings, self.catalog, dry_run)
    except LeaseBusy:
        return {}
    summary = _summary(removals)
    if summary:
        self.log("version-control", **summary)
    return summary


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.cleanup.quota_control", **long_limits())
def quota_control_task(self: T0Task, dry_run: bool | None = None) -> dict[str, int]:
    """Beat: per-class quota, oldest archived files first, down to 95 %; alarm when blocked."""
    try:
        with self.lease("cleanup:quota", seconds=self.settings["tasks"]["long_time_limit"]):
            report = quota_control(self.settings, self.catalog, dry_run)
    except LeaseBusy:
        return {}
    summary = _summary(report.removals)
    summary["alarms"] = sum(1 for p in report.plans.values() if p.alarm)
    if report.removals or summary["alarms"]:
        self.log("quota-control", **summary)
    return summary
