"""Tasks: collect producer files and clean producer disks (fileCollector2, producerFileCleaner).

Both run on the producer host itself, consuming its own queue ``collect.<host>``
(:func:`t0dqm.celery.collect_queue`); :func:`producer_schedule` gives the beat entries, one pair per
configured producer host.
"""

from __future__ import annotations

from typing import Any

from t0dqm.celery import app, collect_queue
from t0dqm.steps import collect as collector
from t0dqm.tasks.base import LeaseBusy, T0Task


def send(task_name: str, host: str) -> Any:
    """Enqueue a collect/clean_producer task on the host's own queue (explicit routing)."""
    return app.signature(task_name, args=(host,)).apply_async(queue=collect_queue(host))


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.collect.collect", soft_time_limit=600, time_limit=660)
def collect(self: T0Task, host: str) -> dict[str, Any]:
    """One collection cycle for every producer of ``host`` (single runner per producer via a lease)."""
    out: dict[str, Any] = {}
    for producer in collector.producers(self.settings, host):
        try:
            with self.lease(f"collect:{producer.key}", 900):
                report = collector.Collector(producer, self.settings).run_once()
        except LeaseBusy:
            out[str(producer.dir)] = "busy"
            continue
        if report.uploaded or report.bad or report.failed or report.placeholders:
            self.log("collected", producer=str(producer.dir), **report.as_dict())
        out[str(producer.dir)] = report.as_dict()
    self.catalog.acquire_lease(f"heartbeat:collect:{host}", host, 86400)  # health: collector alive
    return out


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.collect.clean_producer", soft_time_limit=1800,
          time_limit=1860)
def clean_producer(self: T0Task, host: str) -> dict[str, Any]:
    """Producer disk cleaner for every producer of ``host``: >= 90 % use -> done files down to 50 %."""
    out: dict[str, Any] = {}
    for producer in collector.producers(self.settings, host):
        try:
            with self.lease(f"clean-producer:{producer.key}", 1800):
                report = collector.clean_once(producer, self.settings, catalog=self.catalog)
        except LeaseBusy:
            out[str(producer.dir)] = "busy"
            continue
        if report.act:
            self.log("producer-clean", producer=str(producer.dir), **report.as_dict())
        out[str(producer.dir)] = report.as_dict()
    return out
