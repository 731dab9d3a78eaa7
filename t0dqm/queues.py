"""Queue names and routes of the t0dqm app (no Celery here: beat and roles read them too).

Queues are prefixed per flavour (``config.Settings.queue_prefix``); a task goes to its module's queue
(the third part of its name) unless it has a route of its own.
"""

from __future__ import annotations

from t0dqm import config

BASE_QUEUES = ("receive", "index", "index-merge", "archive", "tape", "cleanup", "sync", "ops")
# Queues whose tasks run long: one message at a time per process.
LONG_QUEUES = ("archive", "tape", "cleanup", "sync", "index-merge")

# Tasks that do not go to their module's queue.
SPECIAL_ROUTES = {
    "t0dqm.tasks.index.merge": "index-merge",
    "t0dqm.tasks.index.delete_runs": "index-merge",
    "t0dqm.tasks.streamer.streamer_cleanup": "cleanup",
}
MODULE_QUEUES = {
    "ops": "ops",
    "receive": "receive",
    "index": "index",
    "archive": "archive",
    "tape": "tape",
    "cleanup": "cleanup",
    "sync": "sync",
    "health": "ops",
    "streamer": "cleanup",
    "tier0": "ops",
    "gui": "index",
}


def queue_name(base: str, settings: config.Settings | None = None) -> str:
    settings = settings or config.get()
    return f"{settings.queue_prefix}{base}"


def collect_queue(host: str, settings: config.Settings | None = None) -> str:
    return queue_name(f"collect.{host}", settings)


def route_for_task(name: str, settings: config.Settings) -> str:
    if name in SPECIAL_ROUTES:
        return queue_name(SPECIAL_ROUTES[name], settings)
    parts = name.split(".")
    module = parts[2] if len(parts) > 2 and parts[:2] == ["t0dqm", "tasks"] else "ops"
    return queue_name(MODULE_QUEUES.get(module, "ops"), settings)


def all_queues(settings: config.Settings) -> list[str]:
    return [queue_name(q, settings) for q in BASE_QUEUES]
