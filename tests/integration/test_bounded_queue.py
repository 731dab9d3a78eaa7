"""At most one queued message per (step, item), against a real Redis: reconcile run over and over while
no worker consumes leaves one message per pending item; a flushed Redis or an expired marker leads to
re-sends; once a worker consumes again every item completes; messages are counted per step."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog, members, reset_catalogs
from t0dqm.celery import queue_name
from t0dqm.dev import services, simulate
from t0dqm.formats import dropbox
from t0dqm.steps.receive import Receiver
from tests.conftest import make_settings

N = 12
SMALL = 2  # besides one message per item: a merge, a freeze


@pytest.fixture
def idle_stack(tmp_path: Path, redis_server: services.Service) -> Iterator[config.Settings]:
    """The t0dqm app on the test Redis with NO worker: messages stay in their queues."""
    from t0dqm import celery as t0celery

    redis.Redis.from_url(redis_server.url).flushall()
    current = make_settings(tmp_path / "root", broker_url=redis_server.url, reconcile__stale_seconds="0")
    t0celery.reload(current)
    for module in t0celery.TASK_MODULES:  # as a worker does: every step registers its recoverer
        importlib.import_module(module)
    yield current
    reset_catalogs()
    config.reset(None)


def _pending_files(settings: config.Settings, tmp_path: Path) -> None:
    """N files received (catalog rows), each waiting for import and for zip."""
    simulate.simulate(tmp_path / "producer", N, seed=11, n_hists=10, dropbox=settings.dropbox)
    paths = [c.path for c in dropbox.scan(settings.dropbox)]
    outcomes = Receiver(settings, get_catalog(settings.catalog_url)).receive_many(paths)
    assert [o.status for o in outcomes] == ["filed"] * N


def _depths(client: redis.Redis, settings: config.Settings) -> dict[str, int]:
    return {q: int(client.llen(queue_name(q, settings))) for q in ("index", "archive", "index-merge")}


def _markers(client: redis.Redis, prefix: str, task: str = "") -> list[bytes]:
    return list(client.scan_iter(match=f"{prefix}queued:{task}*", count=1000))


def test_reconcile_keeps_one_message_per_pending_item(
    idle_stack: config.Settings, redis_server: services.Service, tmp_path: Path
) -> None:
    from celery.contrib.testing.worker import start_worker

    from t0dqm.celery import all_queues, app
    from t0dqm.status import messages
    from t0dqm.tasks.reconcile import reconcile

    settings = idle_stack
    client = redis.Redis.from_url(redis_server.url)
    prefix = app.conf.t0dqm_prefix
    _pending_files(settings, tmp_path)

    first = reconcile()
    assert first == {"index-import": N, "zip": N}
    for _ in range(30):  # beat every minute through a half-hour outage of the consumers
        reconcile()
    depths = _depths(client, settings)
    assert N <= depths["index"] <= N + SMALL and N <= depths["archive"] <= N + SMALL, depths
    counted = messages(redis_server.url, prefix, N)["steps"]
    assert counted["t0dqm.tasks.index.import_file"] == {"sent": N, "deduped": 30 * N, "received": 0}

    client.flushall()  # messages and markers gone together: reconcile re-sends at once
    assert sum(_depths(client, settings).values()) == 0
    assert reconcile() == {"index-import": N, "zip": N}
    assert _depths(client, settings)["index"] == N

    client.delete(queue_name("index", settings))  # messages lost while their markers live ...
    assert reconcile() == {}
    assert _depths(client, settings)["index"] == 0
    lost = _markers(client, prefix, "t0dqm.tasks.index.import_file:")
    assert len(lost) == N
    for key in lost:  # ... are re-sent once their markers expire (reconcile.queued_ttl)
        client.pexpire(key, 1)
    deadline = time.monotonic() + 30
    while _markers(client, prefix, "t0dqm.tasks.index.import_file:") and time.monotonic() < deadline:
        pass
    assert reconcile() == {"index-import": N}
    depths = _depths(client, settings)
    assert depths["index"] == N and N <= depths["archive"] <= N + SMALL, depths

    cat = get_catalog(settings.catalog_url)

    def done() -> tuple[int, int]:
        with cat.read() as conn:
            indexed = conn.execute(
                select(func.count()).select_from(files).where(files.c.index_state == "indexed")
            ).scalar_one()
            zipped = conn.execute(select(func.count()).select_from(members)).scalar_one()
        return indexed, zipped

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=all_queues(settings),
    ):
        deadline = time.monotonic() + 120
        while done() != (N, N) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling the catalog for the outcome, not a synchronisation
    assert done() == (N, N)
    report = messages(redis_server.url, prefix, N)
    assert report["steps"]["t0dqm.tasks.index.import_file"]["received"] >= N
    assert report["steps"]["t0dqm.tasks.archive.zip_file"]["received"] >= N
    assert report["per_file"] is not None and report["per_file"] >= 2.0


def test_chained_enqueue_sends_one_message_per_item(
    idle_stack: config.Settings, redis_server: services.Service
) -> None:
    from t0dqm.celery import app
    from t0dqm.tasks.ops import noop

    client = redis.Redis.from_url(redis_server.url)
    for _ in range(5):
        assert noop.enqueue_many(
            [
                (app.signature("t0dqm.tasks.index.import_file"), (7,), {}),
                (app.signature("t0dqm.tasks.index.import_file"), (8,), {}),
            ]
        ) in (0, 2)
    assert _depths(client, idle_stack)["index"] == 2
    for _ in range(5):  # a countdown message (merge) keeps one marker too
        noop.enqueue(app.signature("t0dqm.tasks.index.merge", countdown=0.5))
    assert _depths(client, idle_stack)["index-merge"] == 1


def test_beat_ticks_keep_one_message_while_the_consumer_is_down(
    idle_stack: config.Settings, redis_server: services.Service
) -> None:
    """Beat's own send path (celery.beat.Scheduler.apply_async, which marks its messages): one scan waits,
    not one per tick; once a worker took it off the queue, the next tick is sent."""
    from celery.beat import ScheduleEntry, Scheduler
    from celery.schedules import schedule

    from t0dqm.celery import app
    from t0dqm.status import messages
    from t0dqm.tasks.base import _message_received

    client = redis.Redis.from_url(redis_server.url)
    scheduler = Scheduler(app, lazy=True)
    entry = ScheduleEntry(
        name="receive-scan", task="t0dqm.tasks.receive.scan", schedule=schedule(5.0), app=app
    )
    for _ in range(12):  # a minute of ticks
        scheduler.apply_async(entry, advance=False)
    receive_queue = queue_name("receive", idle_stack)
    assert client.llen(receive_queue) == 1

    class Received:  # what a worker's task_received hands over for that message
        name, args, kwargs, eta, task = (
            "t0dqm.tasks.receive.scan",
            [],
            {},
            None,
            app.tasks["t0dqm.tasks.receive.scan"],
        )

    _message_received(request=Received())
    scheduler.apply_async(entry, advance=False)
    assert client.llen(receive_queue) == 2
    steps = messages(redis_server.url, app.conf.t0dqm_prefix, 0)
    assert steps["steps"]["t0dqm.tasks.receive.scan"] == {"sent": 2, "deduped": 11, "received": 1}


def _age(client: redis.Redis, keys: list[bytes], seconds: float, countdown: bool = False) -> None:
    """Make markers look set ``seconds`` ago (their stamp; the TTL is kept): the clock moved on."""
    from t0dqm.tasks import queued

    for key in keys:
        client.set(key, queued.stamp(time.time() - seconds, countdown), keepttl=True)


def test_a_message_lost_with_a_killed_worker_is_resent_after_the_grace(
    idle_stack: config.Settings, redis_server: services.Service, tmp_path: Path
) -> None:
    """kombu pops a message (BRPOP) before it records it in `unacked`: a worker killed in between loses
    it while its marker lives. Reconcile takes a marker older than reconcile.orphan_grace whose queue is
    empty for an orphan and sends the step again, once; while the queue holds messages it sends nothing."""
    from t0dqm.celery import app
    from t0dqm.status import messages
    from t0dqm.tasks import queued
    from t0dqm.tasks.ops import noop
    from t0dqm.tasks.reconcile import reconcile

    settings = idle_stack
    client = redis.Redis.from_url(redis_server.url)
    prefix = app.conf.t0dqm_prefix
    grace = float(settings["reconcile"]["orphan_grace"])
    import_task = "t0dqm.tasks.index.import_file"
    index = queue_name("index", settings)
    _pending_files(settings, tmp_path)
    assert reconcile() == {"index-import": N, "zip": N}

    client.delete(index)  # every import message popped by a worker killed at once: gone, markers alive
    assert reconcile() == {}  # markers younger than the grace: nothing re-sent
    lost = sorted(_markers(client, prefix, f"{import_task}:"))
    assert len(lost) == N
    _age(client, lost[:1], grace + 1)
    assert reconcile() == {"index-import": 1}  # exactly the orphan, once
    [body] = client.lrange(index, 0, -1)
    assert import_task.encode() in body
    assert client.get(lost[0]) is not None and float(client.get(lost[0])) > time.time() - grace  # fresh

    _age(client, lost[1:], grace + 1)  # the other markers old, but the index queue holds a message: no flood
    assert reconcile() == {}
    assert client.llen(index) == 1
    assert messages(redis_server.url, prefix, N)["steps"][import_task]["orphaned"] == 1

    client.delete(index)  # lost again: the re-sent marker is young, the N - 1 others are orphans
    assert reconcile() == {"index-import": N - 1}
    assert client.llen(index) == N - 1

    merge = app.signature("t0dqm.tasks.index.merge", countdown=30)  # a countdown message leaves its
    assert noop.enqueue_many([(merge, (), {})]) == 1  # queue at once (the worker waits
    client.delete(queue_name("index-merge", settings))  # for its time): never an orphan
    _age(client, _markers(client, prefix, "t0dqm.tasks.index.merge:"), grace + 1, countdown=True)
    assert noop.enqueue_many([(merge, (), {})], orphan_grace=grace) == 0
    assert queued.reclaim_orphans(client, [], [], [], time.time()) == []


def test_tape_countdown_sends_keep_one_message_per_archive(
    idle_stack: config.Settings, redis_server: services.Service
) -> None:
    """tape._later (a stage retry, a verification after verify_delay) goes through the markers too: the
    same archive asked again and again leaves one message per step; one due too late sends nothing."""
    from t0dqm.celery import app
    from t0dqm.steps import tape
    from t0dqm.steps.next import Outcome
    from t0dqm.tasks import queued
    from t0dqm.tasks.ops import noop

    client = redis.Redis.from_url(redis_server.url)
    prefix = app.conf.t0dqm_prefix
    for _ in range(5):
        noop.send_next(Outcome(next=tape._later("t0dqm.tasks.tape.stage", 4, 30.0)))
        noop.send_next(Outcome(next=tape._later("t0dqm.tasks.tape.verify", 4, 30.0)))
        noop.send_next(
            Outcome(next=tape._later("t0dqm.tasks.tape.stage", 5, tape.SOON + 1))
        )  # found later by verify_due
    tape_queue = queue_name("tape", idle_stack)
    bodies = client.lrange(tape_queue, 0, -1)
    assert len(bodies) == 2 and all(b'"eta"' in body for body in bodies), bodies
    key = queued.item_key(prefix, "t0dqm.tasks.tape.stage", (4,))
    assert 0 < client.ttl(key) <= 30 + queued.ETA_GRACE
    assert client.get(key).endswith(queued.COUNTDOWN.encode())  # never taken for an orphan
    assert queued.item_key(prefix, "t0dqm.tasks.tape.stage", (5,)).encode() not in _markers(client, prefix)


def test_the_elected_beat_keeps_one_message_per_periodic_entry(
    idle_stack: config.Settings, redis_server: services.Service
) -> None:
    """The scheduler `celery -A t0dqm beat` runs (t0dqm.beat_election.ElectedScheduler), every entry
    made due again and again with no consumer: each periodic entry has one message waiting, not one per
    period (finding 3 of the multi-host runs)."""
    import json
    from collections import Counter
    from datetime import UTC, datetime, timedelta

    from t0dqm.beat_election import ElectedScheduler
    from t0dqm.celery import all_queues, app
    from t0dqm.tasks import queued

    client = redis.Redis.from_url(redis_server.url)
    scheduler = ElectedScheduler(app=app)
    periods = 6
    try:
        entries = scheduler.schedule
        for period in range(periods):
            for entry in entries.values():  # the clock moved on by more than every entry's period
                entry.last_run_at = datetime.now(UTC) - timedelta(days=2 + period)
            scheduler._heap = None
            for _ in range(2 * len(entries)):  # one due entry is sent per tick
                if scheduler.tick() > 0:
                    break
            assert scheduler.leading
    finally:
        scheduler.close()
    waiting: Counter[tuple[str, str]] = Counter()
    for queue in all_queues(idle_stack):
        for name in queued.queue_lists(queue):
            for raw in client.lrange(name, 0, -1):
                headers = json.loads(raw)["headers"]
                waiting[(headers["task"], headers["argsrepr"] + headers["kwargsrepr"])] += 1
    expected = {(e.task, repr(tuple(e.args)) + repr(dict(e.kwargs))) for e in entries.values()}
    assert set(waiting) == expected, set(waiting) ^ expected
    assert set(waiting.values()) == {1}, waiting
    sent = queued.message_counts(client, app.conf.t0dqm_prefix, 0)["steps"]
    assert sum(s["deduped"] for s in sent.values()) == (periods - 1) * len(expected)
