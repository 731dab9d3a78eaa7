"""Health policy: which alarms to raise and clear, with stable keys (one condition = one alarm)."""

from __future__ import annotations

import pytest

from t0dqm.policies import health as h

NOW = 1_700_000_000.0
LIMITS = h.Limits(
    canary_max_age=900,
    max_queue_depth=100,
    beat_max_age=300,
    collector_max_age=3600,
    latency=h.latency_limits(5 * 3600, 86400),
)


def facts(**kw) -> h.HealthFacts:
    base = dict(now=NOW, beat_heartbeat_at=NOW - 10, quarantined=0)
    base.update(kw)
    return h.HealthFacts(**base)


def q(
    name: str = "archive",
    canary: str = h.CANARY_OK,
    waited: float = 0.0,
    consumers=("w1@x",),
    depth: int | None = 0,
) -> h.QueueFacts:
    return h.QueueFacts(name, canary, waited, None if consumers is None else tuple(consumers), depth)


# -- all well ---------------------------------------------------------------------------------------


def test_healthy_when_every_fact_is_good() -> None:
    d = h.decide(facts(queues=[q("receive"), q("archive"), q("ops", h.CANARY_SELF)]), LIMITS)
    assert d.healthy and d.raise_ == () and d.clear == ()


def test_healthy_clears_every_active_health_alarm_it_has_evidence_for() -> None:
    active = [
        "health:queue:archive",
        "health:beat",
        "health:latency:zip",
        "health:backlog:archive",
        "health:broker",
        "health:quarantine",
        "archive:trouble",
    ]
    d = h.decide(facts(queues=[q("archive")], active_keys=active), LIMITS)
    assert d.healthy
    assert set(d.clear) == {
        "health:queue:archive",
        "health:beat",
        "health:latency:zip",
        "health:backlog:archive",
        "health:broker",
        "health:quarantine",
    }  # never another module's alarm


# -- queues -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("canary", [h.CANARY_OK, h.CANARY_PROGRESS, h.CANARY_SELF])
def test_answered_canary_is_healthy_even_without_listed_consumers(canary: str) -> None:
    assert h.queue_alarm(q(canary=canary, consumers=()), LIMITS) is None


def test_unanswered_canary_without_consumers_alarms_at_once() -> None:
    a = h.queue_alarm(q(canary=h.CANARY_UNANSWERED, waited=10, consumers=()), LIMITS)
    assert a is not None and a.key == "health:queue:archive" and a.severity == "critical"
    assert "no worker" in a.message


def test_unanswered_canary_with_listeners_waits_for_max_age() -> None:
    young = q(canary=h.CANARY_UNANSWERED, waited=899, consumers=("w1@x",))
    old = q(canary=h.CANARY_UNANSWERED, waited=900, consumers=("w1@x",))
    assert h.queue_alarm(young, LIMITS) is None
    a = h.queue_alarm(old, LIMITS)
    assert a is not None and "w1@x" in a.message and a.key == "health:queue:archive"


def test_unanswered_canary_inspection_unknown_waits_for_max_age() -> None:
    assert h.queue_alarm(q(canary=h.CANARY_UNANSWERED, waited=10, consumers=None), LIMITS) is None
    a = h.queue_alarm(q(canary=h.CANARY_UNANSWERED, waited=1000, consumers=None), LIMITS)
    assert a is not None and "unknown workers" in a.message


def test_unknown_canary_neither_raises_nor_clears() -> None:
    d = h.decide(
        facts(queues=[q(canary=h.CANARY_UNKNOWN, consumers=())], active_keys=["health:queue:archive"]), LIMITS
    )
    assert "health:queue:archive" not in d.keys and d.clear == ()


def test_one_alarm_per_queue_and_stable_key_across_runs() -> None:
    stopped = q("archive", h.CANARY_UNANSWERED, 10, ())
    first = h.decide(facts(queues=[q("receive"), stopped]), LIMITS)
    again = h.decide(
        facts(queues=[q("receive"), q("archive", h.CANARY_UNANSWERED, 310, ())], active_keys=first.keys),
        LIMITS,
    )
    assert first.keys == again.keys == ("health:queue:archive",)
    assert again.clear == ()


def test_queue_recovers_clears_alarm() -> None:
    d = h.decide(facts(queues=[q("archive")], active_keys=["health:queue:archive"]), LIMITS)
    assert d.clear == ("health:queue:archive",)


def test_queue_alarm_for_queue_no_longer_checked_is_cleared_when_broker_ok() -> None:
    d = h.decide(facts(queues=[q("receive")], active_keys=["health:queue:gone"]), LIMITS)
    assert d.clear == ("health:queue:gone",)


def test_broker_down_raises_broker_alarm_and_keeps_queue_alarms() -> None:
    d = h.decide(
        facts(
            broker_error="Connection refused",
            queues=[q(canary=h.CANARY_UNKNOWN, consumers=None, depth=None)],
            active_keys=["health:queue:archive", "health:backlog:archive"],
        ),
        LIMITS,
    )
    assert d.keys == ("health:broker",)
    assert "Connection refused" in d.raise_[0].message
    assert d.clear == ()


def test_backlog_over_limit_only() -> None:
    assert h.backlog_alarm(q(depth=100), LIMITS) is None
    assert h.backlog_alarm(q(depth=None), LIMITS) is None
    a = h.backlog_alarm(q(depth=101), LIMITS)
    assert (
        a is not None and a.key == "health:backlog:archive" and a.severity == "warning" and "101" in a.message
    )


def test_backlog_unknown_depth_keeps_alarm() -> None:
    d = h.decide(facts(queues=[q(depth=None)], active_keys=["health:backlog:archive"]), LIMITS)
    assert d.clear == ()


def test_not_consumed_and_backlog_are_two_conditions() -> None:
    d = h.decide(facts(queues=[q(canary=h.CANARY_UNANSWERED, consumers=(), depth=500)]), LIMITS)
    assert d.keys == ("health:queue:archive", "health:backlog:archive")


# -- beat -------------------------------------------------------------------------------------------


def test_beat_never_seen_alarms() -> None:
    a = h.beat_alarm(facts(beat_heartbeat_at=None), LIMITS)
    assert a is not None and a.key == "health:beat" and "no beat heartbeat" in a.message


def test_beat_age_limit() -> None:
    assert h.beat_alarm(facts(beat_heartbeat_at=NOW - 300), LIMITS) is None
    a = h.beat_alarm(facts(beat_heartbeat_at=NOW - 301), LIMITS)
    assert a is not None and a.severity == "critical"


def test_beat_unknown_neither_raises_nor_clears() -> None:
    d = h.decide(facts(beat_known=False, beat_heartbeat_at=None, active_keys=["health:beat"]), LIMITS)
    assert d.keys == () and d.clear == ()


# -- latency ----------------------------------------------------------------------------------------


def test_latency_limit_is_strictly_greater() -> None:
    at_limit = h.WaitingItem("index", "a.root", NOW - 5 * 3600)
    over = h.WaitingItem("index", "b.root", NOW - 5 * 3600 - 1)
    assert h.latency_alarms(facts(waiting=[at_limit]), LIMITS) == []
    alarms = h.latency_alarms(facts(waiting=[at_limit, over]), LIMITS)
    assert [a.key for a in alarms] == ["health:latency:index"]
    assert "1 item(s)" in alarms[0].message and "b.root" in alarms[0].message


def test_latency_one_alarm_per_step_names_the_oldest() -> None:
    items = [h.WaitingItem("zip", f"f{i}.root", NOW - 6 * 3600 - i) for i in range(50)]
    items += [h.WaitingItem("receive", "u.root", NOW - 10 * 3600)]
    alarms = h.latency_alarms(facts(waiting=items), LIMITS)
    assert [a.key for a in alarms] == ["health:latency:receive", "health:latency:zip"]
    assert "50 item(s)" in alarms[1].message and "f49.root" in alarms[1].message


def test_latency_totals_raise_the_count() -> None:
    items = [h.WaitingItem("zip", "f.root", NOW - 6 * 3600)]
    alarms = h.latency_alarms(facts(waiting=items, waiting_totals={"zip": 1234}), LIMITS)
    assert "1234 item(s)" in alarms[0].message


def test_verify_step_gets_the_verify_delay() -> None:
    limits = h.latency_limits(5 * 3600, 86400)
    assert limits["verify"] == 5 * 3600 + 86400 and limits["stage"] == 5 * 3600
    copied_a_day_ago = h.WaitingItem("verify", "z.zip", NOW - 86400 - 60)
    assert h.latency_alarms(facts(waiting=[copied_a_day_ago]), LIMITS) == []
    late = h.WaitingItem("verify", "z.zip", NOW - 86400 - 5 * 3600 - 1)
    assert [a.key for a in h.latency_alarms(facts(waiting=[late]), LIMITS)] == ["health:latency:verify"]


def test_latency_unchecked_step_ignored_and_not_cleared() -> None:
    item = h.WaitingItem("stage", "z.zip", NOW - 10 * 3600)
    d = h.decide(
        facts(
            waiting=[item],
            steps_checked=("index",),
            active_keys=["health:latency:stage", "health:latency:index"],
        ),
        LIMITS,
    )
    assert d.keys == () and d.clear == ("health:latency:index",)


def test_latency_unknown_step_ignored() -> None:
    item = h.WaitingItem("teleport", "x", NOW - 10 * 3600)
    assert h.latency_alarms(facts(waiting=[item], steps_checked=("teleport",)), LIMITS) == []


def test_latency_cleared_when_items_moved_on() -> None:
    d = h.decide(facts(waiting=[], active_keys=["health:latency:zip"]), LIMITS)
    assert d.clear == ("health:latency:zip",)


# -- collectors ------------------------------------------------------------------------------------


def test_collectors() -> None:
    f = facts(collectors={"a": NOW - 10, "b": NOW - 3601, "c": None})
    assert [a.key for a in h.collector_alarms(f, LIMITS)] == ["health:collector:b"]


def test_collector_unknown_activity_keeps_alarm_but_removed_host_clears() -> None:
    f = facts(collectors={"c": None}, active_keys=["health:collector:c", "health:collector:gone"])
    assert h.decide(f, LIMITS).clear == ("health:collector:gone",)


# -- quarantine -------------------------------------------------------------------------------------


def test_quarantine() -> None:
    assert h.quarantine_alarm(facts(quarantined=0)) is None
    assert h.quarantine_alarm(facts(quarantined=None)) is None
    a = h.quarantine_alarm(facts(quarantined=3))
    assert a is not None and a.key == "health:quarantine" and "3 upload(s)" in a.message
    d = h.decide(facts(quarantined=None, active_keys=["health:quarantine"]), LIMITS)
    assert d.clear == ()


# -- helpers ----------------------------------------------------------------------------------------


def test_unknown_health_family_is_never_cleared() -> None:
    assert h.decide(facts(active_keys=["health:mystery:x"]), LIMITS).clear == ()


def test_family_and_subject() -> None:
    assert h.family("health:queue:collect.host1") == "queue"
    assert h.subject("health:queue:collect.host1") == "collect.host1"
    assert h.family("health:beat") == "beat" and h.subject("health:beat") == ""
    assert h.family("archive:trouble") == ""


@pytest.mark.parametrize(
    "seconds,text",
    [(5, "5 s"), (119, "119 s"), (600, "10 min"), (5 * 3600, "5.0 h"), (3 * 86400, "3.0 d"), (-3, "0 s")],
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert h.human_seconds(seconds) == text


def test_limits_from_defaults_and_overrides() -> None:
    limits = h.limits_from({"beat_max_age": 60}, 3600, 100)
    assert limits.beat_max_age == 60 and limits.canary_max_age == h.DEFAULTS["canary_max_age"]
    assert limits.latency["index"] == 3600 and limits.latency["verify"] == 3700


def test_queues_to_check() -> None:
    base = ["receive", "archive", "sync", "ops"]
    assert h.queues_to_check(base, {}, []) == base
    assert h.queues_to_check(base, {"skip_queues": ["sync"]}, ["h2", "h1"]) == [
        "receive",
        "archive",
        "ops",
        "collect.h1",
        "collect.h2",
    ]
    assert h.queues_to_check(base, {"queues": ["ops"], "skip_queues": ["collect.h1"]}, ["h1"]) == ["ops"]


def test_decision_orders_queue_alarms_by_name() -> None:
    d = h.decide(
        facts(
            queues=[
                q("tape", h.CANARY_UNANSWERED, consumers=()),
                q("archive", h.CANARY_UNANSWERED, consumers=()),
            ]
        ),
        LIMITS,
    )
    assert d.keys == ("health:queue:archive", "health:queue:tape")
    assert not d.healthy
