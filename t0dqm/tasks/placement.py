"""Tasks: Tier-0 output placement with Rucio (t0dqm.steps.placement); names ``t0dqm.tasks.tier0.*``.

- register_output (sent by the Tier-0: ``celery -A t0dqm call t0dqm.tasks.tier0.register_output
  --kwargs '{"dataset": "/PD/Era-v1/RAW", "files": [{"path", "size", "adler32"}], "needed_by": 1}'``):
  records the files and creates the block's rules (Tier-0 disk + the policy's tape site). A refused name
  or file list returns {"refused": reason} (quarantined); Rucio down -> retries with back-off, and the
  pending rules stay in the catalog for poll_rules.
- poll_rules (beat, every ``rucio.poll_interval`` when ``rucio.url`` is set): rule states -> endpoints
  done, STUCK and vanished-rule alarms, pending rules created. Retention itself is
  t0dqm.tasks.streamer.retention_cleanup (t0dqm.tasks.retention), which removes Tier-0 disk rules of
  released blocks.
"""

from __future__ import annotations

from typing import Any

from t0dqm.celery import app
from t0dqm.steps import placement
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task


@app.task(base=T0Task, bind=True, name=placement.REGISTER_TASK)
def register_output(
    self: T0Task, dataset: str, files: list[dict[str, Any]], needed_by: int = 0, block: str | None = None
) -> Outcome:
    """Record a Tier-0 output (one block of files) and create its Rucio rules; idempotent."""
    return placement.register_output(self.context, dataset, files, needed_by=needed_by, block=block)


@app.task(base=T0Task, bind=True, name=placement.POLL_TASK)
def poll_rules(self: T0Task, now: float | None = None, force: bool = False) -> Outcome:
    """Read every live rule's state from Rucio and act on it (see placement.poll)."""
    return placement.poll_rules(self.context, now=now, force=force)
