"""Tier-0 disk retention policy boundaries (pure)."""

from __future__ import annotations

from t0dqm.policies import retention

DAY = 86400
NOW = 1_700_000_000.0


def out(
    age: float,
    endpoints: tuple[str, ...] = ("T1_A", "T2_B"),
    done: tuple[str, ...] = ("T1_A", "T2_B"),
    needed: bool = False,
    name: str = "o",
) -> retention.T0Output:
    return retention.T0Output(name, NOW - age, frozenset(endpoints), frozenset(done), needed, 10)


def test_minimum_age_boundary() -> None:
    # "stays at least 7 days": one second short is kept, exactly 7 days has stayed long enough
    assert retention.decide(out(7 * DAY - 1), NOW) == retention.RetentionDecision("o", False, "minimum-age")
    assert retention.decide(out(7 * DAY), NOW) == retention.RetentionDecision("o", True, "released")
    assert retention.decide(out(7 * DAY + 1), NOW).delete
    assert retention.decide(out(0), NOW).reason == "minimum-age"
    assert not retention.decide(out(9 * DAY), NOW, min_days=10).delete
    assert retention.decide(out(10 * DAY), NOW, min_days=10).delete


def test_missing_endpoint_keeps_it_whatever_the_age() -> None:
    d = retention.decide(out(1000 * DAY, done=("T1_A",)), NOW)
    assert (d.delete, d.reason) == (False, "not-at-endpoints:T2_B")
    d = retention.decide(out(1000 * DAY, done=()), NOW)
    assert d.reason == "not-at-endpoints:T1_A,T2_B"
    # an extra endpoint reached does not replace a missing required one
    assert not retention.decide(out(8 * DAY, done=("T1_A", "T3_X")), NOW).delete
    # no endpoint at all: never released
    assert retention.decide(out(8 * DAY, endpoints=(), done=()), NOW).reason == "no-endpoints"


def test_needed_by_processing_keeps_it() -> None:
    d = retention.decide(out(30 * DAY, needed=True), NOW)
    assert (d.delete, d.reason) == (False, "needed-by-processing")


def test_plan_lists_only_released_sorted() -> None:
    outputs = [
        out(8 * DAY, name="b"),
        out(8 * DAY, name="a"),
        out(6 * DAY, name="c"),
        out(8 * DAY, needed=True, name="d"),
        out(8 * DAY, done=(), name="e"),
    ]
    assert [d.name for d in retention.plan_retention(outputs, NOW)] == ["a", "b"]


def out_days(age_days, endpoints=("T1_A",), done=("T1_A",), needed=False):
    return retention.T0Output(
        "x", 1000 * 86400 - age_days * 86400, frozenset(endpoints), frozenset(done), needed
    )


def test_retention():
    now = 1000 * 86400
    assert retention.decide(out_days(6.99), now).reason == "minimum-age"
    assert retention.decide(out_days(7), now).delete
    assert retention.decide(out_days(8, done=()), now).reason == "not-at-endpoints:T1_A"
    assert retention.decide(out_days(8, needed=True), now).reason == "needed-by-processing"
    assert retention.decide(out_days(8, endpoints=(), done=()), now).reason == "no-endpoints"
    assert [d.name for d in retention.plan_retention([out_days(8), out_days(1)], now)] == ["x"]
