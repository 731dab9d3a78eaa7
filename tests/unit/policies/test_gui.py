"""DQM GUI registration decisions (pure)."""

from __future__ import annotations

import pytest

from t0dqm.policies import gui as policy
from t0dqm.policies.gui import FileFacts

ONLINE, SUB = "/Global/Online/ALL", "/Global/Online/{subsystem}"


def facts(
    i: int,
    cls: str = "offline_data",
    run: int = 300002,
    version: int = 1,
    dataset: str = "/ZeroBias/Run2024A-PromptReco-v1/DQMIO",
    subsystem: str | None = None,
    **kw: bool,
) -> FileFacts:
    return FileFacts(
        id=i,
        path=f"OfflineData/f{i}_V{version:04d}.root",
        cls=cls,
        run=run,
        version=version,
        dataset=dataset,
        subsystem=subsystem,
        **kw,
    )


def plan(cands, group=(), **kw):
    return policy.plan(
        cands, group, repository="/data/repo", online_dataset=ONLINE, online_subsystem_dataset=SUB, **kw
    )


def test_gui_dataset_per_class():
    assert policy.gui_dataset(facts(1), ONLINE, SUB) == "/ZeroBias/Run2024A-PromptReco-v1/DQMIO"
    merged = facts(2, "online_data", dataset="/Global/Online/ALL")
    assert policy.gui_dataset(merged, ONLINE, SUB) == ONLINE
    sub = facts(3, "online_data", dataset="/Global/Online/ALL", subsystem="Ecal")
    assert policy.gui_dataset(sub, ONLINE, SUB) == "/Global/Online/Ecal"
    assert policy.gui_dataset(sub, ONLINE, ONLINE) == ONLINE  # one dataset for all: no placeholder
    with pytest.raises(policy.BadDataset, match="online_dataset"):
        policy.gui_dataset(merged, "/Global/Online", SUB)
    with pytest.raises(policy.BadDataset):
        policy.gui_dataset(facts(4, dataset="/only/two"), ONLINE, SUB)


def test_sample_payload_and_paths():
    (sample,) = plan([facts(1)]).send
    assert sample.payload() == {
        "dataset": "/ZeroBias/Run2024A-PromptReco-v1/DQMIO",
        "run": 300002,
        "lumi": 0,
        "file": "/data/repo/OfflineData/f1_V0001.root",
        "fileformat": 1,
    }
    (prefixed,) = plan([facts(1)], prefix="root://eoscms.cern.ch//eos/dqm/").send
    assert prefixed.file == "root://eoscms.cern.ch//eos/dqm/OfflineData/f1_V0001.root"
    assert policy.archive_url_path(367013, ONLINE) == "/api/v1/archive/367013/Global/Online/ALL/"


def test_newest_version_wins_whoever_comes_first():
    v1, v2 = facts(1, version=1), facts(2, version=2)
    p = plan([v1, v2])
    assert [s.file_id for s in p.send] == [2] and p.skip == ((1, "superseded by version 2 (file 2)"),)
    # v2 already registered; v1 arrives late (or is re-sent): never sent, it would replace v2 in the GUI
    p = plan([v1], [FileFacts(**{**v2.__dict__, "registered": True})], force=True)
    assert p.send == () and p.skip[0][0] == 1
    # v1 registered, v2 arrives: v2 is sent
    p = plan([v2], [FileFacts(**{**v1.__dict__, "registered": True})])
    assert [s.file_id for s in p.send] == [2] and p.skip == ()
    # the newest version's ROOT file was removed: the older one present is what the GUI can read
    p = plan([v1], [facts(2, version=2, removed=True)])
    assert [s.file_id for s in p.send] == [1]


def test_one_key_per_file_across_subsystems_and_runs():
    subs = [
        facts(i, "online_data", run=300001, dataset=ONLINE, subsystem=s)
        for i, s in enumerate(("Ecal", "Hcal", "Pixel"), 1)
    ]
    merged = facts(9, "online_data", run=300001, dataset=ONLINE)
    p = plan([*subs, merged])
    assert sorted(s.dataset for s in p.send) == [
        "/Global/Online/ALL",
        "/Global/Online/Ecal",
        "/Global/Online/Hcal",
        "/Global/Online/Pixel",
    ]
    other_run = facts(10, run=300003)
    assert len(plan([facts(1), other_run]).send) == 2


def test_what_is_not_sent_and_why():
    p = plan(
        [
            facts(1, removed=True),
            facts(2, run=5, indexed=False),
            facts(3, run=6, registered=True),
            facts(4, run=7, dataset="/bad"),
        ]
    )
    assert p.send == ()
    reasons = dict(p.skip)
    assert reasons[1] == "ROOT file removed" and "not for the index" in reasons[2]
    assert 3 not in reasons  # registered: nothing to do (sent again only with force)
    assert "is not /<primary>/<processed>/<tier>" in reasons[4]
    assert [s.file_id for s in plan([facts(3, run=6, registered=True)], force=True).send] == [3]


def test_batches_and_backoff():
    samples = list(plan([facts(i, run=i) for i in range(1, 8)]).send)
    assert [len(b) for b in policy.batches(samples, 3)] == [3, 3, 1]
    assert [len(b) for b in policy.batches(samples, 0)] == [1] * 7
    assert [policy.retry_delay(n, 5, 30) for n in range(5)] == [5, 10, 20, 30, 30]
