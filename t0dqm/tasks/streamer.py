"""Tasks: Tier-0 disk cleanups.

- streamer_cleanup (daily 05:00 when ``streamer.enabled``): read the EOS dump, call the pure policy,
  delete through the guarded deleter (an audit row per file), record the deleted units in the catalog.
  A refused dump deletes nothing.
- retention_cleanup (daily 06:00 when ``retention.enabled``): Tier-0 disk outputs registered in
  ``t0_outputs`` go once at least ``retention.min_days`` old, at all their endpoints and not needed.
- sm_cleanup (age mode twice a day, occupancy mode every 15 min when ``storage_manager.enabled``):
  the Storage Manager policies on the P5 listing; unchecked files deleted by the age rule raise an alarm.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select

from t0dqm.catalog.db import streamer_units
from t0dqm.celery import app
from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
from t0dqm.formats import eosdump
from t0dqm.steps import retention as outputs
from t0dqm.steps import sm
from t0dqm.steps import streamer as cleanup
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits


def _record_units(catalog: Any, plan: Any, dry_run: bool) -> None:
    now = time.time()
    state = "dry-run" if dry_run else "deleted"
    with catalog.begin() as conn:
        for d in plan.delete:
            row = conn.execute(select(streamer_units.c.id).where(
                streamer_units.c.label == d.label, streamer_units.c.stream == d.stream,
                streamer_units.c.run == d.run)).first()
            values = {"files": d.files, "bytes": d.bytes, "newest_mtime": d.newest_mtime[0], "state": state,
                      "rule": d.rule, "updated_at": now}
            if row is None:
                conn.execute(streamer_units.insert().values(label=d.label, stream=d.stream, run=d.run, **values))
            else:
                conn.execute(streamer_units.update().where(streamer_units.c.id == row.id).values(**values))


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.streamer.streamer_cleanup", autoretry_for=(),
          **long_limits())
def streamer_cleanup(self: T0Task, dry_run: bool | None = None, now: float | None = None,
                     force: bool = False) -> dict[str, Any]:
    """Plan and apply the streamer cleanup; returns the plan and what was done."""
    settings = self.settings
    cfg = settings["streamer"]
    if not cfg["enabled"] and not force:
        return {"skipped": "streamer.enabled is false"}
    if not cfg["dump"]:
        self.log("streamer-no-dump", logging.ERROR)
        return {"refused": "streamer.dump is not set"}
    if dry_run is None:
        dry_run = bool(settings["deletion"]["dry_run"])
    try:
        with self.lease("streamer-cleanup", seconds=settings["tasks"]["long_time_limit"]):
            try:
                result = cleanup.make_plan(
                    cfg["dump"], now=now, quota_bytes=cfg["quota_bytes"], done_url=cfg["done_url"] or None,
                    skip_runs=cleanup.read_skip_runs(cfg["skip_runs_file"] or None),
                    max_dump_age=cfg["max_dump_age"], transfertest_days=cfg["transfertest_days"],
                    age_days=cfg["age_days"], http_timeout=settings.timeout("http"))
                targets = cleanup.list_targets(result, cfg.get("base") or None)
            except (eosdump.DumpError, cleanup.CleanupError) as exc:
                self.log("streamer-dump-refused", logging.ERROR, error=str(exc))
                return {"refused": str(exc)}
            ex = cleanup.execute(targets, dry_run=dry_run)
            _record_units(self.catalog, result.plan, dry_run)
    except LeaseBusy:
        return {"skipped": "another streamer cleanup is running"}
    out = {**result.plan.as_dict(), "execution": ex.as_dict(), "dump": result.summary.as_dict()}
    self.log("streamer-cleanup", units=len(result.plan.delete), files=ex.deleted_files,
             bytes=ex.deleted_bytes, refused=len(ex.refused), errors=len(ex.errors), dry_run=dry_run,
             malformed=result.summary.malformed)
    return out


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.streamer.retention_cleanup", autoretry_for=(),
          **long_limits())
def retention_cleanup(self: T0Task, dry_run: bool | None = None, now: float | None = None,
                      force: bool = False) -> dict[str, Any]:
    """Apply Tier-0 disk retention to the catalog's t0_outputs; returns the plan and what was done."""
    settings = self.settings
    if not settings["retention"]["enabled"] and not force:
        return {"skipped": "retention.enabled is false"}
    if dry_run is None:
        dry_run = bool(settings["deletion"]["dry_run"])
    try:
        with self.lease("t0-retention", seconds=settings["tasks"]["long_time_limit"]):
            run = outputs.run_retention(self.catalog, settings, now=now, dry_run=dry_run)
    except LeaseBusy:
        return {"skipped": "another retention cleanup is running"}
    except (RucioUnavailable, RucioRefused) as exc:  # no rule removed without a fresh check: next run
        self.log("t0-retention-rucio", logging.ERROR, error=str(exc))
        return {"refused": f"Rucio: {exc}; nothing released"}
    self.log("t0-retention", planned=len(run.delete), deleted=len(run.deleted), missing=len(run.missing),
             lost_race=len(run.lost_race), refused=len(run.refused), errors=len(run.errors), dry_run=dry_run)
    return run.as_dict()


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.streamer.sm_cleanup", autoretry_for=(), **long_limits())
def sm_cleanup(self: T0Task, mode: str = "occupancy", dry_run: bool | None = None, now: float | None = None,
               occupancy: float | None = None, force: bool = False) -> dict[str, Any]:
    """Storage Manager cleanup of the P5 copy (mode "occupancy" or "age") through the guarded deleter.

    ``occupancy`` overrides the statvfs reading of ``storage_manager.area`` (tests, operators).
    """
    from t0dqm.catalog.alarms import raise_alarm
    from t0dqm.policies import storage_manager

    settings = self.settings
    cfg = settings["storage_manager"]
    if not cfg["enabled"] and not force:
        return {"skipped": "storage_manager.enabled is false"}
    if mode not in storage_manager.MODES:
        return {"refused": f"mode must be one of {storage_manager.MODES}, got {mode!r}"}
    if not cfg["listing"]:
        self.log("sm-no-listing", logging.ERROR)
        return {"refused": "storage_manager.listing is not set"}
    if occupancy is None:
        if not cfg["area"]:
            self.log("sm-no-area", logging.ERROR)
            return {"refused": "storage_manager.area is not set"}
        occupancy = sm.occupancy(cfg["area"])
    if dry_run is None:
        dry_run = bool(settings["deletion"]["dry_run"])
    now = time.time() if now is None else float(now)
    try:
        with self.lease("sm-cleanup", seconds=settings["tasks"]["long_time_limit"]):
            try:
                files = sm.read_listing(cfg["listing"])
            except sm.ListingError as exc:
                self.log("sm-listing-refused", logging.ERROR, error=str(exc))
                return {"refused": str(exc)}
            plan = storage_manager.plan(files, occupancy, now, mode)
            ex = sm.execute(plan, dry_run=dry_run, catalog=self.catalog, settings=settings)
    except LeaseBusy:
        return {"skipped": "another storage manager cleanup is running"}
    unchecked = [d.path for d in plan.delete if d.unchecked]
    if unchecked:
        verb = "would delete" if dry_run else "deleted"
        raise_alarm(self.catalog, sm.ALARM_KEY,
                    f"Storage Manager age cleanup {verb} {len(unchecked)} files not yet checked by Tier-0 "
                    f"(occupancy {occupancy:.1%}), e.g. {unchecked[0]}", severity="critical")
    out = {**plan.as_dict(), "mode": mode, "occupancy": occupancy, "alarm": bool(unchecked),
           "execution": ex.as_dict()}
    self.log("sm-cleanup", mode=mode, occupancy=occupancy, planned=len(plan.delete), deleted=len(ex.deleted),
             bytes=ex.deleted_bytes, refused=len(ex.refused), errors=len(ex.errors), unchecked=len(unchecked),
             dry_run=dry_run)
    return out
