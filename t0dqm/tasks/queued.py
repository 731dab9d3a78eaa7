"""At most one queued message per (step, item): a Redis marker for each message waiting in a queue.

Before a step is sent for an item (``T0Task.enqueue``, chained or from ``reconcile``), the marker
``<prefix>queued:<task>:<args>`` is created with SET NX EX; when it already exists a message for that
step and item is waiting, and nothing is sent. The worker deletes the marker when it receives the message
(``task_received``; a message with a countdown: when its task starts), so from then on the catalog decides
again: reconcile re-sends the item only once its row is stale.

Principle 2 holds: Redis is only the conveyor. A flushed Redis takes the markers with the messages, so
reconcile re-sends at once. A message lost while its marker lives (a broker crash between the two writes,
a purged queue) is re-sent once the marker expires (``reconcile.queued_ttl``, default 1 h: longer than a
consumer outage we expect to ride out, short enough to bound the delay). A marker whose message has a
countdown lives countdown + ETA_GRACE seconds, as such a message leaves the queue at once but starts later. Beat's messages
(T0Task.apply_async, header ``celery_beat_task``) share the markers, with BEAT_TTL: a periodic task whose
consumer is down holds one message, not one per tick.

Messages are counted per step in the hash ``<prefix>metrics:messages`` (``<task>:sent``, ``:deduped``,
``:received``); :func:`message_counts` turns them into the "messages per file" figure.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import redis

DEFAULT_TTL = 3600
ETA_GRACE = 60
BEAT_TTL = 300  # a beat message lost while its marker lives delays that periodic task by at most this
MESSAGES_HASH = "metrics:messages"
MAX_KEY_ARGS = 160  # longer argument lists are hashed

# Steps a file goes through (per-item and chained): their receipts make the "messages per file" figure.
CHAIN_STEPS = (
    "t0dqm.tasks.receive.receive_batch", "t0dqm.tasks.receive.receive_file", "t0dqm.tasks.index.import_file",
    "t0dqm.tasks.index.merge", "t0dqm.tasks.archive.zip_file", "t0dqm.tasks.archive.freeze",
    "t0dqm.tasks.tape.stage", "t0dqm.tasks.tape.verify",
)


def item_key(prefix: str, task_name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> str:
    """The marker of one (step, item): the task name and its JSON arguments (hashed when long)."""
    body = json.dumps([list(args), kwargs or {}], sort_keys=True, separators=(",", ":"), default=str)
    if len(body) > MAX_KEY_ARGS:
        body = "sha1:" + hashlib.sha1(body.encode()).hexdigest()
    return f"{prefix}queued:{task_name}:{body}"


def reserve(client: redis.Redis, keys: Sequence[str], ttls: Sequence[int]) -> list[bool]:
    """SET NX EX each marker (one round trip); True where it was free (the caller sends), False where a
    message is already queued."""
    pipe = client.pipeline(transaction=False)
    for key, ttl in zip(keys, ttls, strict=True):
        pipe.set(key, "1", nx=True, ex=max(1, int(ttl)))
    return [bool(ok) for ok in pipe.execute()]


def count(client: redis.Redis, prefix: str, counts: dict[tuple[str, str], int],
          forget: Sequence[str] = ()) -> None:
    """Add {(task, kind): n} to the message counters and delete the ``forget`` markers (one round trip)."""
    pipe = client.pipeline(transaction=False)
    if forget:
        pipe.delete(*forget)
    for (task, kind), n in counts.items():
        if n:
            pipe.hincrby(f"{prefix}{MESSAGES_HASH}", f"{task}:{kind}", n)
    pipe.execute()


def message_counts(client: redis.Redis, prefix: str, files: int) -> dict[str, Any]:
    """{"steps": {task: {sent, deduped, received}}, "received": total over CHAIN_STEPS, "per_file":
    received / files (None without files)}."""
    steps: dict[str, dict[str, int]] = {}
    for field, value in (client.hgetall(f"{prefix}{MESSAGES_HASH}") or {}).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        task, _, kind = name.rpartition(":")
        if task:
            steps.setdefault(task, {"sent": 0, "deduped": 0, "received": 0})[kind] = int(value)
    received = sum(steps.get(task, {}).get("received", 0) for task in CHAIN_STEPS)
    return {"steps": dict(sorted(steps.items())), "received": received,
            "per_file": round(received / files, 3) if files else None}
