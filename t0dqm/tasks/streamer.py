"""Tasks: Tier-0 streamer cleanup (daily 05:00 when ``streamer.enabled``).

A thin adapter: read the EOS dump, call the pure policy, delete through the guarded deleter (an audit
row per file), record the deleted units in the catalog. A refused dump deletes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select

from t0dqm.catalog import streamer_units
from t0dqm.celery import app
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits
from t0dqm.tier0 import cleanup, eosdump


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
