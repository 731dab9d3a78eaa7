from __future__ import annotations

import pytest

from t0dqm.policies import storage_manager as sm

NOW = 1_700_000_000.0
H = 3600
D = 86400


def F(path, age, checked=True, repacked=False, run=1, tier0_off=False, size=10):
    return sm.SMFile(
        path=path,
        run=run,
        size=size,
        mtime=NOW - age,
        checked=checked,
        repacked=repacked,
        tier0_off=tier0_off,
    )


@pytest.mark.parametrize(
    "occ,limit",
    [
        (0.0, None),
        (0.3999, None),
        (0.40, 3 * D),
        (0.4999, 3 * D),
        (0.50, 2 * D),
        (0.60, D),
        (0.70, 12 * H),
        (0.80, 6 * H),
        (0.90, 3 * H),
        (1.0, 3 * H),
    ],
)
def test_occupancy_tiers(occ, limit):
    assert sm.occupancy_age_limit(occ) == limit


@pytest.mark.parametrize(
    "occ,limit", [(0.40, 3 * D), (0.50, 2 * D), (0.60, D), (0.70, 12 * H), (0.80, 6 * H), (0.90, 3 * H)]
)
def test_checked_not_repacked_strictly_older(occ, limit):
    files = [F("/a/equal", limit), F("/a/older", limit + 1)]
    plan = sm.plan_occupancy(files, occ, NOW)
    assert [d.path for d in plan.delete] == ["/a/older"]
    assert plan.delete[0].rule == "occupancy"


def test_unchecked_never_by_occupancy():
    plan = sm.plan_occupancy([F("/a", 100 * D, checked=False, repacked=True)], 1.0, NOW)
    assert plan.delete == ()


def test_repacked_always_deletable_and_below_40_kept():
    files = [F("/b/rep", 0, repacked=True), F("/a/old", 100 * D)]
    plan = sm.plan_occupancy(files, 0.1, NOW)
    assert [(d.path, d.rule) for d in plan.delete] == [("/b/rep", "repacked")]


def test_sorted_by_path_and_bytes():
    files = [F("/z", 10 * D, size=5), F("/a", 10 * D, size=7)]
    plan = sm.plan_occupancy(files, 0.5, NOW)
    assert plan.as_dict() == {
        "delete": [
            {"path": "/a", "rule": "occupancy", "unchecked": False},
            {"path": "/z", "rule": "occupancy", "unchecked": False},
        ],
        "bytes": 12,
    }


@pytest.mark.parametrize(
    "occ,t0off,limit",
    [
        (0.0, False, 30 * D),
        (0.2999, False, 30 * D),
        (0.30, False, 15 * D),
        (0.30, True, 12 * D),
        (0.3999, True, 12 * D),
        (0.40, False, 7 * D),
        (0.40, True, 7 * D),
        (0.95, False, 7 * D),
    ],
)
def test_run_age_limits(occ, t0off, limit):
    assert sm.run_age_limit(occ, t0off) == limit


def test_age_mode_by_run_newest_file_and_unchecked_flag():
    files = [
        F("/r1/a", 8 * D, run=1, checked=False),
        F("/r1/b", 7 * D + 1, run=1),
        F("/r2/a", 30 * D, run=2),
        F("/r2/b", 7 * D, run=2),
    ]
    plan = sm.plan_age(files, 0.45, NOW)
    assert [(d.path, d.unchecked) for d in plan.delete] == [("/r1/a", True), ("/r1/b", False)]
    assert plan.alarm
    assert all(d.rule == "run-age" for d in plan.delete)


def test_age_mode_tier0_off():
    files = [F("/r1/a", 13 * D, run=1, tier0_off=True), F("/r2/a", 13 * D, run=2)]
    plan = sm.plan_age(files, 0.35, NOW)
    assert [d.path for d in plan.delete] == ["/r1/a"]
    assert not plan.alarm


def test_bad_inputs():
    with pytest.raises(ValueError):
        sm.occupancy_age_limit(1.5)
    with pytest.raises(ValueError):
        sm.plan([], 0.5, NOW, mode="x")
