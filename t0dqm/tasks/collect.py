"""Tasks: collect producer files and clean producer disks (fileCollector2, producerFileCleaner).

Both run on the producer host itself, consuming its own queue ``collect.<host>``
(:func:`t0dqm.celery.collect_queue`); the beat entries are one pair per configured producer host
(:mod:`t0dqm.beat`). The work is in :mod:`t0dqm.steps.collect`.
"""

from __future__ import annotations

from typing import Any

from t0dqm.celery import app, collect_queue
from t0dqm.steps import collect as collector
from t0dqm.steps.collect import CLEAN_TASK, COLLECT_TASK
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task

__all__ = ["clean_producer", "collect", "send"]


def send(task_name: str, host: str) -> Any:
    """Enqueue a collect/clean_producer task on the host's own queue (explicit routing)."""
    return app.signature(task_name, args=(host,)).apply_async(queue=collect_queue(host))


@app.task(base=T0Task, bind=True, name=COLLECT_TASK, soft_time_limit=600, time_limit=660)
def collect(self: T0Task, host: str) -> Outcome:
    """One collection cycle for every producer of ``host`` (single runner per producer via a lease)."""
    return collector.collect(self.context, host)


@app.task(base=T0Task, bind=True, name=CLEAN_TASK, soft_time_limit=1800, time_limit=1860)
def clean_producer(self: T0Task, host: str) -> Outcome:
    """Producer disk cleaner for every producer of ``host``: >= 90 % use -> done files down to 50 %."""
    return collector.clean_producer(self.context, host)
