"""Placement's checks of a registration: LFNs, the file list, stable block names (t0dqm.steps.placement)."""

from __future__ import annotations

import itertools

import pytest

from t0dqm.steps import placement


def test_lfn_and_file_checks() -> None:
    assert (
        placement.lfn_of("/eos/cms/tier0/store/data/Run2024A/ZeroBias/RAW/v1/a.root")
        == "/store/data/Run2024A/ZeroBias/RAW/v1/a.root"
    )
    assert placement.lfn_of("root://eoscms.cern.ch//eos/cms/store/t0/a.root") == "/store/t0/a.root"
    with pytest.raises(placement.PlacementRefused, match="no /store/"):
        placement.lfn_of("/data/a.root")
    good = {"path": "/d/store/a.root", "size": 3, "adler32": "1a2b"}
    files = placement.parse_files([good])
    assert files[0].adler32 == "00001a2b" and files[0].lfn == "/store/a.root"
    for bad, needle in [
        ({"path": "/d/store/a.root", "size": -1, "adler32": "1"}, "size"),
        ({"path": "/d/store/a.root", "size": True, "adler32": "1"}, "size"),
        ({"path": "/d/store/a.root", "size": 1, "adler32": "xyz"}, "adler32"),
        ({"path": "/d/store/a.root", "size": 1, "adler32": "123456789"}, "adler32"),
        ({"size": 1, "adler32": "1"}, "missing path"),
        ("/d/store/a.root", "expected an object"),
    ]:
        with pytest.raises(placement.PlacementRefused, match=needle):
            placement.parse_files([bad])
    with pytest.raises(placement.PlacementRefused, match="appears twice"):
        placement.parse_files([good, dict(good, path="/other/store/a.root")])
    with pytest.raises(placement.PlacementRefused, match="no files"):
        placement.parse_files([])


def test_block_name_is_stable_and_order_free() -> None:
    files = placement.parse_files(
        [{"path": f"/d/store/{i}.root", "size": 1, "adler32": "1"} for i in range(3)]
    )
    names = {placement.block_name("/A/B-v1/RAW", list(p)) for p in itertools.permutations(files)}
    assert len(names) == 1 and next(iter(names)).startswith("/A/B-v1/RAW#")
    assert placement.block_name("/A/B-v1/RAW", files[:2]) not in names
