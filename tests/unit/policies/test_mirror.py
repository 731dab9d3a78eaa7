"""Partial mirror (AFS sync) decisions (pure)."""

from __future__ import annotations

import pytest

from t0dqm.policies import mirror as pm
from t0dqm.policies.mirror import FileInfo

ON = "OnlineData/00000xxxx/0000123xx"


def test_quotas_explicit_remainder_and_safety() -> None:
    q = pm.folder_quotas({"A": 1000, "B": None, "C": None}, total=3000)
    assert q == {"A": 990, "B": 990, "C": 990}
    assert pm.folder_quotas({"A": 100}, total=None, safety=0) == {"A": 100}
    assert pm.folder_quotas({"A": 5000, "B": None}, total=3000)["B"] == 0
    with pytest.raises(ValueError):
        pm.folder_quotas({"A": None}, total=None)


def test_folder_of_longest_prefix() -> None:
    assert pm.folder_of("OnlineData/x/y.root", ["OnlineData", "OnlineData/x"]) == "OnlineData/x"
    assert pm.folder_of("OfflineData/y.root", ["OnlineData"]) is None
    assert pm.folder_of("OnlineDataX/y.root", ["OnlineData"]) is None


def test_newest_versions_only() -> None:
    files = [
        FileInfo(f"{ON}/DQM_V0001_Ecal_R000012345.root", 10, 1),
        FileInfo(f"{ON}/DQM_V0003_Ecal_R000012345.root", 10, 2),
        FileInfo(f"{ON}/DQM_V0002_Ecal_R000012345.root", 10, 3),
        FileInfo(f"{ON}/DQM_V0001_Hcal_R000012345.root", 10, 1),
        FileInfo(
            "OfflineData/Run2023/ZeroBias/0003579xx/DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root",
            10,
            1,
        ),
        FileInfo(
            "OfflineData/Run2023/ZeroBias/0003579xx/DQM_V0002_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root",
            10,
            1,
        ),
        FileInfo(f"{ON}/DQM_V0001_Ecal_R000012345.root.dqminfo", 1, 1),  # not a DQM file
    ]
    kept = sorted(f.path.rsplit("/", 1)[1] for f in pm.newest_versions(files))
    assert kept == [
        "DQM_V0001_Hcal_R000012345.root",
        "DQM_V0002_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root",
        "DQM_V0003_Ecal_R000012345.root",
    ]


def _online(run: int, sub: str = "Ecal", v: int = 1) -> str:
    return f"OnlineData/{run // 10000:05d}xxxx/{run // 100:07d}xx/DQM_V{v:04d}_{sub}_R{run:09d}.root"


def test_plan_newest_first_within_quota_and_diff() -> None:
    source = [FileInfo(_online(20000 + i), 100, 1000 + i) for i in range(10)]
    source.append(FileInfo("Other/x.root", 5, 1))  # not in a configured folder
    dest = [
        FileInfo(_online(20009), 100, 1009),  # up to date
        FileInfo(_online(20008), 99, 1008),  # size differs
        FileInfo(_online(20007), 100, 999),  # mtime differs
        FileInfo(_online(20000), 100, 1000),  # no longer selected
        FileInfo("OnlineData/stray.root", 1, 1),
    ]
    plan = pm.plan_mirror(source, dest, {"OnlineData": 400}, safety=0.01)  # 396 bytes: 3 files of 100
    assert plan.selected == tuple(sorted(_online(20000 + i) for i in (7, 8, 9)))
    assert set(plan.copy) == {_online(20008), _online(20007)}
    assert set(plan.delete) == {_online(20000), "OnlineData/stray.root"}
    assert plan.used == {"OnlineData": 300} and plan.quotas == {"OnlineData": 396}


def test_plan_stops_at_first_file_that_does_not_fit() -> None:
    source = [
        FileInfo(_online(20001), 50, 3),
        FileInfo(_online(20002), 500, 2),
        FileInfo(_online(20003), 10, 1),
    ]
    plan = pm.plan_mirror(source, [], {"OnlineData": 1000}, safety=0.5)
    assert plan.selected == (_online(20001),)


def test_plan_only_highest_version_is_mirrored_and_old_version_removed() -> None:
    source = [FileInfo(_online(20001, v=1), 10, 1), FileInfo(_online(20001, v=2), 10, 2)]
    dest = [FileInfo(_online(20001, v=1), 10, 1)]
    plan = pm.plan_mirror(source, dest, {"OnlineData": None}, total=1000)
    assert plan.selected == (_online(20001, v=2),)
    assert plan.copy == (_online(20001, v=2),) and plan.delete == (_online(20001, v=1),)


def test_online_sync_action() -> None:
    local = FileInfo("a.root", 100, 1000.4)
    assert pm.online_sync_action(None, 100, 1000, info_exists=False) == pm.DOWNLOAD
    assert pm.online_sync_action(None, 100, 1000, info_exists=True) == pm.SKIP_ARCHIVED
    assert pm.online_sync_action(local, 100, 1000.0, info_exists=True) == pm.UP_TO_DATE
    assert pm.online_sync_action(local, 101, 1000.0, info_exists=True) == pm.DOWNLOAD
    assert pm.online_sync_action(local, 100, 1001.0, info_exists=False) == pm.DOWNLOAD
    assert pm.online_sync_action(local, None, None, info_exists=False) == pm.UP_TO_DATE
