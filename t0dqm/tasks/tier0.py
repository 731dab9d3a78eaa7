"""Tasks: Tier-0 output placement with Rucio (t0dqm.steps.placement).

- register_output (sent by the Tier-0: ``celery -A t0dqm call t0dqm.tasks.tier0.register_output
  --kwargs '{"dataset": "/PD/Era-v1/RAW", "files": [{"path", "size", "adler32"}], "needed_by": 1}'``):
  records the files and creates the block's rules (Tier-0 disk + the policy's tape site). A refused name
  or file list returns {"refused": reason} (quarantined); Rucio down -> retries with back-off, and the
  pending rules stay in the catalog for poll_rules.
- poll_rules (beat, every ``rucio.poll_interval`` when ``rucio.url`` is set): rule states -> endpoints
  done, STUCK and vanished-rule alarms, pending rules created. Retention itself is
  t0dqm.tasks.streamer.retention_cleanup, which removes Tier-0 disk rules of released blocks.
"""

from __future__ import annotations

import logging
from typing import Any

from t0dqm.celery import app
from t0dqm.clients.rucio import RucioRefused
from t0dqm.steps import placement
from t0dqm.tasks.base import LeaseBusy, T0Task


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.tier0.register_output")
def register_output(self: T0Task, dataset: str, files: list[dict[str, Any]], needed_by: int = 0,
                    block: str | None = None) -> dict[str, Any]:
    """Record a Tier-0 output (one block of files) and create its Rucio rules; idempotent."""
    try:
        result = placement.register(self.catalog, self.settings, dataset, files, needed_by=needed_by, block=block)
    except placement.PlacementRefused as exc:
        self.log("t0-register-refused", logging.ERROR, dataset=dataset, reason=str(exc))
        return {"refused": str(exc), "dataset": dataset}
    except RucioRefused as exc:  # recorded on the rule rows, alarm raised; the poll retries later
        self.log("t0-register-rucio-refused", logging.ERROR, dataset=dataset, reason=str(exc))
        return {"rucio_refused": str(exc), "dataset": dataset}
    self.log("t0-register", dataset=dataset, block=result["block"], files=result["files"],
             site=result["placement"]["site"], notice=result.get("notice"))
    return result


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.tier0.poll_rules")
def poll_rules(self: T0Task, now: float | None = None, force: bool = False) -> dict[str, Any]:
    """Read every live rule's state from Rucio and act on it (see placement.poll)."""
    settings = self.settings
    if not settings["rucio"]["url"] and not force:
        return {"skipped": "rucio.url is not set"}
    try:
        with self.lease("t0-rules-poll", seconds=settings["tasks"]["time_limit"]):
            run = placement.poll(self.catalog, settings, now=now)
    except LeaseBusy:
        return {"skipped": "another rule poll is running"}
    self.log("t0-rules-poll", **run.as_dict())
    return run.as_dict()
