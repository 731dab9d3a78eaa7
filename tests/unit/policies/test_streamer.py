from __future__ import annotations

import pytest

from t0dqm.policies import streamer as p

NOW = 1_700_000_000
DAY = 86400


def U(label, stream, run, size, mtime, files=1, **kw):
    m = mtime if isinstance(mtime, tuple) else (mtime, 0)
    return p.UnitStats(label, stream, run, files, size, m, **kw)


def test_older_than_is_strict():
    assert not p.older_than((NOW - 7 * DAY, 0), NOW, 7 * DAY)
    assert p.older_than((NOW - 7 * DAY - 1, 999_999_999), NOW, 7 * DAY)
    assert not p.older_than((NOW - 7 * DAY, 1), (NOW, 1), 7 * DAY)
    assert p.older_than((NOW - 7 * DAY, 0), (NOW, 1), 7 * DAY)


def test_as_mtime_and_format():
    assert p.as_mtime(5) == (5, 0)
    assert p.as_mtime(5.5) == (5, 500_000_000)
    assert p.format_mtime((12, 5)) == "12.000000005"


def test_under_quota_nothing_but_transfertest():
    tt_old = U(
        "TransferTest",
        "A",
        10,
        100,
        NOW - 1,
        files=3,
        old_files=2,
        old_bytes=60,
        old_newest_mtime=(NOW - 8 * DAY, 0),
    )
    data = U("Data", "A", 5, 100, NOW - 400 * DAY)
    plan = p.plan_streamer_cleanup([data, tt_old], now=NOW, quota_bytes=1000)
    assert [d.rule for d in plan.delete] == ["transfertest-age"]
    assert plan.delete[0].files == 2 and plan.delete[0].bytes == 60
    assert plan.total_bytes == 140 and plan.after_bytes == 140


def test_transfertest_listed_first_and_removed_from_total():
    tt = U(
        "TransferTestWithSafety",
        "S",
        99,
        50,
        NOW,
        files=2,
        old_files=1,
        old_bytes=30,
        old_newest_mtime=(NOW - 8 * DAY, 0),
    )
    a = U("Data", "A", 1, 100, NOW - 400 * DAY)
    plan = p.plan_streamer_cleanup([a, tt], now=NOW, quota_bytes=10)
    assert [d.rule for d in plan.delete] == ["transfertest-age", "age"]
    assert plan.total_bytes == 120  # 100 + 50 - 30
    assert plan.after_bytes == 20


def test_transfertest_old_part_must_be_old():
    bad = U("TransferTest", "S", 1, 50, NOW, old_files=1, old_bytes=50, old_newest_mtime=(NOW - 7 * DAY, 0))
    with pytest.raises(ValueError):
        p.plan_streamer_cleanup([bad], now=NOW, quota_bytes=0)


def test_stop_as_soon_as_under_quota():
    units = [U("Data", "A", r, 100, NOW - 400 * DAY) for r in (1, 2, 3, 4)]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=250)
    assert [d.run for d in plan.delete] == [1, 2]
    assert plan.after_bytes == 200


def test_equal_to_quota_is_not_over():
    units = [U("Data", "A", r, 100, NOW - 400 * DAY) for r in (1, 2)]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=200)
    assert plan.delete == ()
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=199)
    assert [d.run for d in plan.delete] == [1] and plan.after_bytes == 100


def test_not_eligible_is_passed_over():
    units = [
        U("Data", "A", 1, 100, NOW - DAY),
        U("Data", "A", 2, 100, NOW - 400 * DAY),
        U("Minidaq", "B", 3, 100, NOW - DAY),
    ]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=0, done=lambda r, s: r == 3)
    assert [(d.run, d.rule) for d in plan.delete] == [(2, "age"), (3, "done")]
    assert plan.not_eligible_units == 1
    assert plan.after_bytes == 100


def test_age_365_days_strict():
    exactly = U("Data", "A", 1, 100, NOW - 365 * DAY)
    more = U("Data", "A", 2, 100, (NOW - 365 * DAY - 1, 999_999_999))
    plan = p.plan_streamer_cleanup([exactly, more], now=NOW, quota_bytes=0)
    assert [d.run for d in plan.delete] == [2]


def test_skip_runs_count_but_never_deleted():
    units = [U("Data", "A", 1, 100, NOW - 400 * DAY), U("Data", "A", 2, 100, NOW - 400 * DAY)]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=50, skip_runs=[1])
    assert [d.run for d in plan.delete] == [2]
    assert plan.total_bytes == 200 and plan.after_bytes == 100
    assert plan.skipped_runs_bytes == 100


def test_ties_ordering_run_then_stream_then_label():
    units = [
        U("Minidaq", "B", 7, 1, NOW - 400 * DAY),
        U("Data", "B", 7, 1, NOW - 400 * DAY),
        U("Data", "A", 7, 1, NOW - 400 * DAY),
        U("Data", "Z", 6, 1, NOW - 400 * DAY),
    ]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=0)
    assert [(d.run, d.stream, d.label) for d in plan.delete] == [
        (6, "Z", "Data"),
        (7, "A", "Data"),
        (7, "B", "Data"),
        (7, "B", "Minidaq"),
    ]


def test_no_done_predicate_means_not_done():
    plan = p.plan_streamer_cleanup([U("Data", "A", 1, 100, NOW)], now=NOW, quota_bytes=0)
    assert plan.delete == ()


def test_done_not_asked_when_under_quota_or_age_applies():
    asked = []

    def done(run, stream):
        asked.append(run)
        return True

    units = [
        U("Data", "A", 1, 100, NOW - 400 * DAY),
        U("Data", "A", 2, 100, NOW),
        U("Data", "A", 3, 100, NOW),
    ]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=150, done=done)
    assert [d.run for d in plan.delete] == [1, 2]
    assert asked == [2]


def test_other_labels_and_recent_transfertest_count():
    units = [
        U("PrivateData", "A", 1, 100, NOW - 400 * DAY),
        U("TransferTest", "A", 2, 100, NOW),
        U("Data", "A", 3, 100, NOW - 400 * DAY),
    ]
    plan = p.plan_streamer_cleanup(units, now=NOW, quota_bytes=0, other_bytes=7)
    assert plan.total_bytes == 307
    assert [d.run for d in plan.delete] == [3]
    assert plan.after_bytes == 207


def test_as_dict_keys():
    plan = p.plan_streamer_cleanup([U("Data", "A", 1, 100, NOW - 400 * DAY)], now=NOW, quota_bytes=0)
    d = plan.as_dict()
    assert list(d) == ["total_bytes", "quota_bytes", "after_bytes", "delete"]
    assert list(d["delete"][0]) == ["label", "stream", "run", "files", "bytes", "newest_mtime", "rule"]


def test_walk_candidates():
    units = [
        U("Data", "B", 2, 1, NOW),
        U("TransferTest", "A", 1, 1, NOW),
        U("Data", "A", 2, 1, NOW),
        U("Minidaq", "A", 3, 1, NOW),
    ]
    assert [(u.run, u.stream) for u in p.walk_candidates(units, skip_runs=[3])] == [(2, "A"), (2, "B")]
