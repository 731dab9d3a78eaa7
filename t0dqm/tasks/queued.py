"""At most one queued message per (step, item): a Redis marker for each message waiting in a queue.

Before a step is sent for an item (``T0Task.enqueue``, chained or from ``reconcile``), the marker
``<prefix>queued:<task>:<args>`` is created with SET NX EX; when it already exists a message for that
step and item is waiting, and nothing is sent. The worker deletes the marker when it receives the message
(``task_received``; a message with a countdown: when its task starts), so from then on the catalog decides
again: reconcile re-sends the item only once its row is stale.

Principle 2 holds: Redis is only the conveyor. A flushed Redis takes the markers with the messages, so
reconcile re-sends at once. A message lost while its marker lives (a broker crash between the two writes,
a purged queue) is re-sent once the marker expires (``reconcile.queued_ttl``, default 1 h: longer than a
consumer outage we expect to ride out, short enough to bound the delay), or sooner, when reconcile finds
it orphaned: a marker holds its set time, and one older than ``reconcile.orphan_grace`` (60 s) whose
queue (all its priority lists) is empty guards no message, since a worker that takes a message off the
queue deletes its marker. That is how a message popped by a worker killed before it recorded it (kombu
pops with BRPOP before it writes ``unacked``) is found again within a minute, not an hour; while the
queue holds messages nothing is re-sent, so an outage does not re-flood it. A marker whose message has a
countdown lives countdown + ETA_GRACE seconds, as such a message leaves the queue at once but starts later. Beat's messages
(T0Task.apply_async, header ``celery_beat_task``) share the markers, with BEAT_TTL: a periodic task whose
consumer is down holds one message, not one per tick.

Messages are counted per step in the hash ``<prefix>metrics:messages`` (``<task>:sent``, ``:deduped``,
``:received``); :func:`message_counts` turns them into the "messages per file" figure.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import redis

DEFAULT_TTL = 3600
ETA_GRACE = 60
BEAT_TTL = 300  # a beat message lost while its marker lives delays that periodic task by at most this
MESSAGES_HASH = "metrics:messages"
MAX_KEY_ARGS = 160  # longer argument lists are hashed
ORPHAN_GRACE = 60  # seconds: a younger marker is never taken for an orphan
PRIORITY_SEP = "\x06\x16"  # kombu.transport.redis.Channel.sep
PRIORITY_STEPS = (3, 6, 9)  # kombu's default steps beyond 0 (which is the plain list)
COUNTDOWN = "countdown"  # marker value of a message with a countdown: it leaves the queue at once

# Steps a file goes through (per-item and chained): their receipts make the "messages per file" figure.
CHAIN_STEPS = (
    "t0dqm.tasks.receive.receive_batch",
    "t0dqm.tasks.receive.receive_file",
    "t0dqm.tasks.index.import_file",
    "t0dqm.tasks.index.merge",
    "t0dqm.tasks.archive.zip_file",
    "t0dqm.tasks.archive.freeze",
    "t0dqm.tasks.tape.stage",
    "t0dqm.tasks.tape.verify",
)


def item_key(
    prefix: str, task_name: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
) -> str:
    """The marker of one (step, item): the task name and its JSON arguments (hashed when long)."""
    body = json.dumps([list(args), kwargs or {}], sort_keys=True, separators=(",", ":"), default=str)
    if len(body) > MAX_KEY_ARGS:
        body = "sha1:" + hashlib.sha1(body.encode()).hexdigest()
    return f"{prefix}queued:{task_name}:{body}"


def queue_lists(queue: str) -> list[str]:
    """The Redis lists of a kombu queue: the plain one and one per priority step."""
    return [queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS)]


def stamp(now: float, countdown: bool = False) -> str:
    """A marker's value: when it was set, and whether its message has a countdown (never an orphan)."""
    return f"{now:.3f}" + (f":{COUNTDOWN}" if countdown else "")


def reserve(
    client: redis.Redis, keys: Sequence[str], ttls: Sequence[int], values: Sequence[str] | None = None
) -> list[bool]:
    """SET NX EX each marker (one round trip); True where it was free (the caller sends), False where a
    message is already queued. ``values``: the markers' stamps (default: now, no countdown)."""
    values = values or [stamp(time.time())] * len(keys)
    pipe = client.pipeline(transaction=False)
    for key, ttl, value in zip(keys, ttls, values, strict=True):
        pipe.set(key, value, nx=True, ex=max(1, int(ttl)))
    return [bool(ok) for ok in pipe.execute()]


# Replace a marker only if it still holds the value read (no one took or re-set it meanwhile).
_SWAP = """if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3]) return 1 end return 0"""


def reclaim_orphans(
    client: redis.Redis,
    keys: Sequence[str],
    queues: Sequence[str],
    ttls: Sequence[int],
    now: float,
    grace: float = ORPHAN_GRACE,
) -> list[bool]:
    """For markers that are taken (``keys``, each with the queue its message goes to): True where the
    marker is an orphan, set more than ``grace`` seconds ago for a message without countdown while that
    queue is empty, and was replaced by a fresh one in the same step (the caller sends again)."""
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    distinct = sorted(set(queues))
    for queue in distinct:
        for name in queue_lists(queue):
            pipe.llen(name)
    replies = pipe.execute()
    values, lengths = replies[: len(keys)], replies[len(keys) :]
    per = 1 + len(PRIORITY_STEPS)
    empty = {q for i, q in enumerate(distinct) if not any(lengths[i * per : (i + 1) * per])}
    swap = client.register_script(_SWAP)
    out = []
    for key, queue, ttl, value in zip(keys, queues, ttls, values, strict=True):
        out.append(
            queue in empty
            and _orphan_age(value, now) > grace
            and bool(swap(keys=[key], args=[value, stamp(now), max(1, int(ttl))]))
        )
    return out


def _orphan_age(value: bytes | None, now: float) -> float:
    """Seconds since the marker was set; -1 for a countdown marker, an unstamped one or none."""
    if value is None:
        return -1.0
    text = value.decode(errors="replace")
    if text.endswith(COUNTDOWN):
        return -1.0
    try:
        return now - float(text)
    except ValueError:
        return -1.0


def count(
    client: redis.Redis, prefix: str, counts: dict[tuple[str, str], int], forget: Sequence[str] = ()
) -> None:
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
    return {
        "steps": dict(sorted(steps.items())),
        "received": received,
        "per_file": round(received / files, 3) if files else None,
    }


def queue_depths(broker_url: str, queues: list[str], timeout: float = 2.0) -> dict[str, int]:
    """Messages waiting per queue (kombu's Redis transport keeps each queue in a list of its name)."""
    from t0dqm.celery import redis_client

    client = redis_client(broker_url, timeout)
    try:
        pipe = client.pipeline(transaction=False)
        for q in queues:
            pipe.llen(q)
        return dict(zip(queues, pipe.execute(), strict=True))
    finally:
        client.close()
