"""DQM policies: version control, per-class quota, run deletion from the index."""

from __future__ import annotations

import pytest

from t0dqm.policies import quota, run_deletion, versions
from t0dqm.policies.quota import QuotaFile, plan_class, plan_quota
from t0dqm.policies.run_deletion import DAY, IndexRun, RunRule, plan_run_deletion, runs_to_delete
from t0dqm.policies.versions import VersionedFile, plan_versions

DS = "/ZeroBias/Run2024A-v1/DQMIO"


# --- versions ---------------------------------------------------------------------------------------------


def vf(version, run=1000, dataset=DS, subsystem=None, archived=False, present=True):
    return VersionedFile(
        f"p/V{version}/{run}/{subsystem}", run, dataset, subsystem, version, archived, present
    )


def test_newest_kept_older_archived_deleted():
    files = [vf(1, archived=True), vf(2, archived=True), vf(3)]
    plan = {d.file.version: d for d in plan_versions(files)}
    assert plan[3].action == versions.KEEP and not plan[3].delete
    assert plan[1].action == versions.DELETE and plan[1].delete
    assert plan[2].action == versions.DELETE
    assert "superseded by V0003" in plan[1].reason and plan[1].rule == "version-control"
    assert [d.file.version for d in versions.deletions(files)] == [1, 2]


def test_not_archived_is_not_deleted():
    files = [vf(1, archived=False), vf(2)]
    (old, new) = plan_versions(files)
    assert old.action == versions.WAIT and not old.delete
    assert "until its archive is verified" in old.reason
    assert new.action == versions.KEEP
    assert versions.deletions(files) == ()


def test_samples_are_independent():
    files = [
        vf(1, archived=True, subsystem="Ecal"),
        vf(1, archived=True, subsystem="Hcal"),
        vf(1, archived=True, run=1001),
        vf(1, archived=True, dataset="/Other/Run2024A-v1/DQMIO"),
        vf(2, subsystem="Ecal"),
    ]
    dels = versions.deletions(files)
    assert [(d.file.subsystem, d.file.version) for d in dels] == [("Ecal", 1)]


def test_removed_newest_still_supersedes_and_absent_files_get_no_decision():
    files = [vf(1, archived=True), vf(2, archived=True, present=False)]
    plan = plan_versions(files)
    assert len(plan) == 1 and plan[0].file.version == 1 and plan[0].delete


def test_single_version_kept_even_if_archived():
    assert [d.action for d in plan_versions([vf(1, archived=True)])] == [versions.KEEP]


def test_is_newest():
    files = [vf(1), vf(2)]
    assert versions.is_newest(vf(2), files)
    assert not versions.is_newest(vf(1), files)
    assert versions.is_newest(vf(3), files)
    assert versions.newest_versions(files) == {(1000, DS, ""): 2}


# --- quota ------------------------------------------------------------------------------------------------


def qf(name, size, mtime, archived=True, cls="offline_data", present=True):
    return QuotaFile(name, cls, size, mtime, archived, present)


def test_under_quota_nothing_to_do():
    plan = plan_class("offline_data", [qf("a", 40, 1), qf("b", 60, 2)], quota=100)
    assert not plan.over_quota and plan.deletions == () and plan.shortfall == 0 and not plan.alarm
    assert plan.used == 100 and plan.after == 100 and plan.freed == 0


def test_over_quota_deletes_oldest_down_to_95_percent():
    files = [qf("c", 30, 3), qf("a", 30, 1), qf("b", 30, 2), qf("d", 30, 4)]
    plan = plan_class("offline_data", files, quota=100)
    assert plan.over_quota and plan.used == 120 and plan.target == 95
    assert [d.file.path for d in plan.deletions] == ["a"]
    assert plan.after == 90 and plan.freed == 30 and plan.shortfall == 0 and not plan.alarm
    assert plan.deletions[0].rule == "quota" and "quota 100" in plan.deletions[0].reason


def test_over_quota_stops_as_soon_as_target_met():
    files = [qf(f"f{i}", 10, i) for i in range(12)]  # 120 bytes, quota 100 -> target 95 -> delete 3
    plan = plan_class("offline_data", files, quota=100)
    assert [d.file.path for d in plan.deletions] == ["f0", "f1", "f2"]
    assert plan.after == 90


def test_not_archived_not_deleted_newer_archived_taken_instead():
    files = [qf("old", 30, 1, archived=False), qf("mid", 30, 2), qf("new", 30, 3), qf("newest", 30, 4)]
    plan = plan_class("offline_data", files, quota=100)
    assert [d.file.path for d in plan.deletions] == ["mid"]
    assert [f.path for f in plan.blocked] == ["old"]
    assert not plan.alarm


def test_quota_cannot_be_met_reports_shortfall_and_alarm():
    files = [qf("a", 50, 1, archived=False), qf("b", 50, 2, archived=False), qf("c", 20, 3)]
    plan = plan_class("offline_data", files, quota=100)
    assert [d.file.path for d in plan.deletions] == ["c"]
    assert all(d.file.path not in ("a", "b") for d in plan.deletions)
    assert plan.after == 100 and plan.shortfall == 5 and plan.alarm
    nothing = plan_class("offline_data", [qf("a", 200, 1, archived=False)], quota=100)
    assert nothing.deletions == () and nothing.shortfall == 105 and nothing.alarm


def test_absent_and_other_class_files_ignored():
    files = [qf("gone", 500, 0, present=False), qf("other", 500, 0, cls="online_data"), qf("a", 90, 1)]
    plan = plan_class("offline_data", files, quota=100)
    assert plan.used == 90 and plan.deletions == ()


def test_plan_quota_per_class():
    files = [
        qf("o1", 60, 1, cls="online_data"),
        qf("o2", 60, 2, cls="online_data"),
        qf("x", 10, 1, cls="relval_mc"),
        qf("nq", 10**9, 1, cls="no_quota_class"),
    ]
    plans = plan_quota(files, {"online_data": 100, "relval_mc": 100})
    assert set(plans) == {"online_data", "relval_mc"}
    assert [d.file.path for d in plans["online_data"].deletions] == ["o1"]
    assert plans["relval_mc"].deletions == ()


def test_quota_arguments_validated():
    with pytest.raises(ValueError):
        plan_class("x", [], quota=0)
    with pytest.raises(ValueError):
        plan_class("x", [], quota=10, fraction=1.5)
    assert quota.DEFAULT_FRACTION == 0.95


# --- run deletion -----------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def run(n, rtype, lumis, days_ago, dataset="/Global/Online/ALL", **kw):
    return IndexRun(n, dataset, rtype, lumis, start_time=None, end_time=NOW - days_ago * DAY, **kw)


def decisions(runs, **kw):
    return {(d.run, d.dataset): d for d in plan_run_deletion(runs, NOW, **kw)}


def test_default_rules_table():
    newest = [run(999, t, 10, 0) for t in run_deletion.RUN_TYPES]
    runs = [
        run(1, "COLLISIONS", 500, 700),
        run(2, "COLLISIONS", 500, 731),
        run(10, "COSMICS", 60, 170),
        run(11, "COSMICS", 60, 190),
        run(12, "COSMICS", 30, 80),
        run(13, "COSMICS", 30, 100),
        run(14, "COSMICS", 10, 20),
        run(15, "COSMICS", 10, 40),
        run(20, "TEST", 150, 15),
        run(21, "TEST", 150, 25),
        run(22, "TEST", 50, 5),
        run(23, "TEST", 50, 11),
        run(24, "TEST", 0, 0.5),
        run(25, "TEST", 0, 2),
        run(30, "OTHER", 5, 700),
    ]
    d = decisions(runs + newest)
    deleted = sorted(r for (r, _), dec in d.items() if dec.delete)
    assert deleted == [2, 11, 13, 15, 21, 23, 25]
    assert d[(2, "/Global/Online/ALL")].rule == "max-age"
    assert d[(11, "/Global/Online/ALL")].rule == "COSMICS>=50lumis:180d"
    assert d[(30, "/Global/Online/ALL")].rule == "no-rule" and not d[(30, "/Global/Online/ALL")].delete


def test_lumi_threshold_is_inclusive_and_longest_rule_wins():
    runs = [run(1, "COSMICS", 50, 170), run(2, "COSMICS", 49, 170), run(9, "COSMICS", 1, 0)]
    d = decisions(runs)
    assert not d[(1, "/Global/Online/ALL")].delete  # 50 lumis -> 180 days
    assert d[(2, "/Global/Online/ALL")].delete and "90 days" in d[(2, "/Global/Online/ALL")].reason


def test_newest_run_of_each_type_kept_even_when_ancient():
    runs = [run(5, "COSMICS", 1, 5000), run(4, "COSMICS", 1, 5000), run(3, "TEST", 0, 5000)]
    d = decisions(runs)
    assert not d[(5, "/Global/Online/ALL")].delete and d[(5, "/Global/Online/ALL")].rule == "newest-of-type"
    assert not d[(3, "/Global/Online/ALL")].delete
    assert d[(4, "/Global/Online/ALL")].delete and d[(4, "/Global/Online/ALL")].rule == "max-age"


def test_max_age_applies_to_other_and_custom_value():
    runs = [run(1, "OTHER", 5, 800), run(2, "OTHER", 5, 100), run(3, "OTHER", 5, 0)]
    assert sorted(d.run for d in runs_to_delete(runs, NOW)) == [1]
    assert sorted(d.run for d in runs_to_delete(runs, NOW, max_age_days=50)) == [1, 2]


def test_unmatched_keep_days_option():
    runs = [run(1, "OTHER", 5, 2), run(2, "OTHER", 5, 0.5), run(3, "OTHER", 5, 0)]
    d = decisions(runs, unmatched_keep_days=1)
    assert d[(1, "/Global/Online/ALL")].delete and not d[(2, "/Global/Online/ALL")].delete


def test_min_subsystems_option():
    runs = [
        run(1, "COLLISIONS", 500, 1, n_subsystems=5),
        run(2, "COLLISIONS", 500, 1, n_subsystems=20),
        run(3, "COLLISIONS", 500, 0),
    ]
    assert [d.run for d in runs_to_delete(runs, NOW)] == []
    dels = runs_to_delete(runs, NOW, min_subsystems=13)
    assert [(d.run, d.rule) for d in dels] == [(1, "min-subsystems")]


def test_incomplete_facts_kept_and_end_time_estimated():
    incomplete = IndexRun(1, "/A/B/C", "TEST", None, None)
    estimated = IndexRun(2, "/A/B/C", "TEST", 100, start_time=NOW - 3 * DAY)
    assert estimated.ended == pytest.approx(NOW - 3 * DAY + 100 * 23.31)
    d = decisions([incomplete, estimated, IndexRun(3, "/A/B/C", "TEST", 1, NOW)])
    assert d[(1, "/A/B/C")].rule == "incomplete" and not d[(1, "/A/B/C")].delete
    assert not d[(2, "/A/B/C")].delete  # 100 lumis -> 20 days


def test_configurable_rules_from_dicts():
    rules = [{"type": "collisions", "keep_days": 1, "min_lumis": 0}]
    runs = [run(1, "COLLISIONS", 5, 2), run(2, "COLLISIONS", 5, 0)]
    assert [d.run for d in runs_to_delete(runs, NOW, rules)] == [1]
    assert run_deletion.parse_rules(rules) == (RunRule("COLLISIONS", 1, 0),)


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "PHYSICS", "keep_days": 1, "min_lumis": 0},
        {"type": "TEST", "keep_days": -1},
        {"type": "TEST", "keep_days": "10"},
        {"type": "TEST", "keep_days": 1, "min_lumis": 1.5},
        {"type": "TEST", "keep_days": 1, "extra": 3},
        "TEST",
    ],
)
def test_bad_rules_rejected(bad):
    with pytest.raises(ValueError, match=r"run_deletion.rules\[0\]"):
        run_deletion.parse_rules([bad])


def test_config_defaults_parse():
    from t0dqm import config

    rules = run_deletion.parse_rules(config.DEFAULTS["run_deletion"]["rules"])
    assert rules == run_deletion.parse_rules(run_deletion.DEFAULT_RULES)


def test_run_type_from_provenance():
    assert run_deletion.run_type_from(1, "/cdaq/physics/Run2024/v1") == "COLLISIONS"
    assert run_deletion.run_type_from("0", None) == "TEST"
    assert run_deletion.run_type_from(1, "/cdaq/cosmic/Cosmics24/v3") == "COSMICS"
    assert run_deletion.run_type_from(None, None) == "OTHER"
    assert run_deletion.run_type_from("junk", "") == "OTHER"
