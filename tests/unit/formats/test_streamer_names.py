"""Tier-0 streamer paths and file names (t0dqm.formats.streamer_names)."""

from __future__ import annotations

import pytest

from t0dqm.formats import streamer_names as sn


def test_streamer_paths_roundtrip():
    p = sn.file_path("Data", "PhysicsMuons", 357902, 123, "dat", "/eos/cms")
    assert p == (
        "/eos/cms/store/t0streamer/Data/PhysicsMuons/000/357/902/"
        "run357902_ls0123_streamPhysicsMuons_StorageManager.dat"
    )
    unit, name = sn.parse_path(p)
    assert unit == sn.StreamerUnit("Data", "PhysicsMuons", 357902)
    assert sn.parse_file_name(name) == sn.StreamerFile(357902, 123, "PhysicsMuons", "dat")
    assert sn.run_dirs(1234567) == "001/234/567"


@pytest.mark.parametrize(
    "path",
    [
        "/eos/cms/store/data/x",
        "/store/t0streamer/Data/S/000/357",
        "/store/t0streamer/Data/S/000/357/9x2",
        "/store/t0streamer/Data/S/000/000/000",
        "/store/t0streamer/Da-ta/S/000/001/002",
        "/store/t0streamer/Data/S/000/001/002/sub",
    ],
)
def test_not_unit_dirs(path):
    assert sn.parse_unit_dir(path) is None


def test_file_names():
    assert sn.parse_file_name("run1_ls0001_streamA_StorageManager.jsn").ext == "jsn"
    assert sn.parse_file_name("run1_ls0000_streamA_StorageManager_EoR.jsn") is None
    with pytest.raises(ValueError):
        sn.file_name(1, 1, "A", "txt")
