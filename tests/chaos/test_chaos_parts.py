"""Pure parts of the multi-host chaos run: the host layout, counters that survive a Redis wipe, messages
per file, the beat log reader and the result table."""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from t0dqm.dev.chaos import render
from t0dqm.dev.chaos_layout import BEAT, HOST_KINDS, ROLE_QUEUES, SINGLETONS, host_name, layout, queues_of
from t0dqm.dev.chaos_measure import Counters, first_send_after, item_messages, messages_per_file, send_times

ALL_ROLES = {role for kind in HOST_KINDS for role in kind}


def test_three_hosts_split_as_operators_do() -> None:
    hosts = layout(3)
    assert [h.name for h in hosts] == ["hostA", "hostB", "hostC"]
    assert set(hosts[0].roles) == {"receive", "index"}
    assert set(hosts[1].roles) == {"archive", "tape"}
    assert set(hosts[2].roles) == {"index-merge", "ops", "cleanup", "sync", BEAT}
    assert all(not h.standby for h in hosts)


def test_three_hosts_with_standbys_put_the_second_singletons_elsewhere() -> None:
    hosts = layout(3, standbys=True)
    assert set(hosts[0].standby) == set(SINGLETONS)
    for role in SINGLETONS:
        assert [h.name for h in hosts if role in h.all_roles] == ["hostA", "hostC"]


@pytest.mark.parametrize("n", range(1, 9))
@pytest.mark.parametrize("standbys", [False, True])
def test_every_role_runs_and_singletons_run_once_or_twice(n: int, standbys: bool) -> None:
    hosts = layout(n, standbys)
    assert len({h.name for h in hosts}) == n
    assert set().union(*(h.all_roles for h in hosts)) == ALL_ROLES
    for role in SINGLETONS:
        where = [h.name for h in hosts if role in h.all_roles]
        assert len(where) == (2 if standbys and n > 1 else 1)
        assert len(set(where)) == len(where)
    for h in hosts:
        assert len(set(h.all_roles)) == len(h.all_roles)


def test_layout_needs_a_host() -> None:
    with pytest.raises(ValueError):
        layout(0)


def test_host_names_continue_past_z() -> None:
    assert [host_name(i) for i in (0, 3, 25, 26, 27)] == ["hostA", "hostD", "hostZ", "hostAA", "hostAB"]


def test_queues_of_roles_are_prefixed_and_skip_beat() -> None:
    assert queues_of(("archive", BEAT, "tape"), "offline.") == ["offline.archive", "offline.tape"]
    assert set(ROLE_QUEUES) | {BEAT} == ALL_ROLES


def test_counters_survive_a_wipe() -> None:
    c = Counters()
    c.update({"a": 3.0, "b": 1.0})
    c.update({"a": 5.0, "b": 1.0})
    c.update({"a": 1.0})  # Redis restarted empty, then one more run of a
    c.update({"a": 2.0, "b": 4.0})
    assert c.totals() == {"a": 7.0, "b": 5.0}


def test_messages_per_file_from_task_and_message_hashes() -> None:
    totals = {
        "t0dqm:dev:metrics:tasks": {
            "t0dqm.tasks.tape.stage:ok": 10.0,
            "t0dqm.tasks.tape.stage:error": 2.0,
            "t0dqm.tasks.tape.stage:seconds": 99.0,
            "t0dqm.tasks.ops.reconcile:ok": 8.0,
        },
        "t0dqm:dev:metrics:messages": {
            "t0dqm.tasks.tape.stage:received": 12.0,
            "t0dqm.tasks.tape.stage:sent": 12.0,
            "t0dqm.tasks.tape.stage:deduped": 30.0,
            "t0dqm.tasks.ops.reconcile:sent": 4.0,
        },
    }
    out = messages_per_file(totals, 4)
    assert out["task runs"] == {"stage": 3.0, "all tasks": 5.0}
    assert out["messages received"] == {"stage": 3.0, "chain steps": 3.0}
    assert out["messages sent"] == {"stage": 3.0, "chain steps": 3.0}
    assert out["messages not sent (already queued)"] == {"stage": 7.5, "chain steps": 7.5}


def test_beat_log_send_times(tmp_path: Path) -> None:
    log = tmp_path / "beat.log"
    log.write_text(
        "[2026-11-29 23:30:01,250: INFO/MainProcess] Scheduler: Sending due task reconcile (x)\n"
        "[2026-11-29 23:30:02,000: INFO/MainProcess] beat: Starting...\n"
        "[2026-11-29 23:30:04,500: INFO/MainProcess] Scheduler: Sending due task receive-scan (y)\n"
    )
    first = datetime(2026, 11, 29, 23, 30, 1).timestamp() + 0.25  # noqa: DTZ001 - the log's local time
    assert send_times(log) == [first, first + 3.25]
    assert first_send_after([log, tmp_path / "missing.log"], first + 1) == 2.2
    assert first_send_after([log], first + 10) is None


def test_render_flattens_nested_measures() -> None:
    text = render({"lost": 0, "queues": {"tape": {"max depth": 3}}, "faults": {"host-kill": 1}, "ok": True})
    assert "queues: tape: max depth" in text and "fault: host-kill" in text
    assert text.splitlines()[-1].endswith("yes")


def test_item_messages_counts_chain_steps_in_a_real_queue(redis_server: Any) -> None:
    """Messages published by Celery to a Redis queue nobody consumes: the chain steps are counted, the
    periodic tasks are not, in the plain list and in the priority lists."""
    import redis
    from celery import Celery

    queue = f"chaos-test-{uuid.uuid4().hex[:8]}"
    app = Celery(broker=redis_server.url)
    app.conf.update(task_serializer="json", accept_content=["json"])
    try:
        for archive_id in range(3):
            app.send_task("t0dqm.tasks.tape.stage", args=(archive_id,), queue=queue)
        app.send_task("t0dqm.tasks.tape.verify", args=(7,), queue=queue, priority=6)
        for _ in range(4):
            app.send_task("t0dqm.tasks.tape.verify_due", queue=queue)
        client = redis.Redis.from_url(redis_server.url)
        assert item_messages(client, queue) == 4
        client.close()
    finally:
        app.close()
