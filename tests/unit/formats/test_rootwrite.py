"""The record writer (t0dqm.formats.rootwrite) and simulated files shaped as CMSSW writes them, walked record by
record as ROOT's TFile::Map does (tests/rootmap.py)."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import uproot

from t0dqm.dev import simulate
from t0dqm.formats import naming, rootcheck, rootkeys, rootwrite
from tests import rootmap


def _walk(path: Path) -> list[rootmap.Record]:
    data = path.read_bytes()
    records = rootmap.walk(data)
    rootmap.parents_resolve(records, rootmap.header(data)["begin"])
    return records


def test_every_simulated_kind_walks_record_by_record(tmp_path):
    manifest = simulate.simulate(tmp_path / "out", 16, seed=3, broken=len(simulate.BROKEN_KINDS), n_hists=30)
    classes, gapped = set(), 0
    for entry in manifest:
        path = Path(entry["file"])
        if entry["broken"] == "truncated":
            with pytest.raises(rootmap.MapError, match="fEND"):
                _walk(path)
            continue
        if entry["broken"] == "bad_magic":
            with pytest.raises(rootmap.MapError, match="bad magic"):
                _walk(path)
            continue
        records = _walk(path)  # no zero-length record, no unmarked or short gap, free list consistent
        gaps = [r for r in records if r.nbytes < 0]
        gapped += bool(gaps)
        assert all(-g.nbytes >= 4 for g in gaps)
        if entry["broken"] is None:
            info = naming.classify(path.name)
            classes.add(info.class_ if info.subsystem is None else "online_sub")
            assert bool(gaps) <= simulate.saved_twice(path.name)
        strings = [r for r in records if r.classname == "TObjString"]
        assert strings and all(rootcheck.RX_SCALAR.match(r.name) for r in strings)
        assert {r.name for r in records if r.classname == "TObjString" and r.name.startswith("<iRun>")} == {
            f"<iRun>i={rootcheck.run_numbers(path)[0]}</iRun>"
        }
        # what the GUI's importer needs: objects below DQMData/Run N/<subsystem>/Run summary
        assert any(r.classname == "TDirectory" and r.name == "Run summary" for r in records) == (
            entry["broken"] != "no_run_summary"
        )
    assert classes == set(naming.CLASSES) | {"online_sub"}
    assert gapped >= 2  # the saved-twice files carry marked gaps


def test_saved_twice_leaves_marked_gaps_listed_in_the_free_segments(tmp_path):
    path = tmp_path / "DQM_V0001_R000367013.root"
    simulate.write_dqm_file(
        path, 367013, ["Ecal", "Hcal", "Pixel"], n_hists=90, strict=True, saved_twice=True
    )
    data = path.read_bytes()
    records = _walk(path)
    gaps = [(r.seek, r.seek - r.nbytes - 1) for r in records if r.nbytes < 0]
    assert gaps and rootmap.free_segments(data)[:-1] == gaps
    for first, last in gaps:
        assert struct.unpack_from(">i", data, first)[0] == -(last - first + 1)
    once = tmp_path / "once.root"
    simulate.write_dqm_file(once, 367013, ["Ecal", "Hcal", "Pixel"], n_hists=90, strict=True)
    assert [r for r in _walk(once) if r.nbytes < 0] == []
    assert rootcheck.inspect(path, True) == rootcheck.inspect(once, True)


def test_tag_named_and_element_named_scalars_read_alike(tmp_path):
    new, old = tmp_path / "new.root", tmp_path / "old.root"
    for fn, path in ((simulate.write_dqm_file, new), (simulate.write_dqm_file_uproot, old)):
        fn(path, 222333, ["Pixel", "Ecal"], n_hists=40, strict=True, lumi=7, events=999)
    with pytest.raises(rootmap.MapError, match="zero-length record"):  # the old form: zeroed free space
        rootmap.walk(old.read_bytes())
    old_names = {r.name for r in rootcheck._walk(uproot.open(old))}
    assert "iRun" in old_names and "<iRun>i=222333</iRun>" not in old_names
    for strict in (True, False, None):
        found = rootcheck.inspect(new, strict)
        assert found == rootcheck.inspect(old, strict)
        assert found == rootcheck._examine_uproot(new, strict, True)  # native reader and uproot agree
    assert rootcheck.check_root_file(new, True) == "VERIFY: Good to go; R=222333:L=7:E=999"


def test_uproot_reads_the_objects_back(tmp_path):
    path = tmp_path / "f.root"
    simulate.write_dqm_file(path, 5, ["Ecal"], n_hists=12, strict=True)
    ones, twos = simulate._templates()
    with uproot.open(path) as f:
        folder = f["DQMData/Run 5/Ecal/Run summary/Occupancy"]
        h = folder["Ecal_h0"]
        assert h.classname == "TH1D" and h.name == "Ecal_h0"
        assert np.array_equal(h.values(flow=True), ones[0].values(flow=True))
        assert np.array_equal(folder["Ecal_map_9"].values(), twos[0].values())
        info = f["DQMData/Run 5/Ecal/Run summary/EventInfo"]
        (tag,) = [k for k in info._keys if k.fName == "<iRun>i=5</iRun>"]  # uproot.key() would split on "/"
        assert tag.fClassName == "TObjString" and str(tag.get()) == "<iRun>i=5</iRun>"
        assert f.file.fVersion == rootwrite.FILE_VERSION and f.file.fBEGIN == rootwrite.BEGIN


def _segments(w: rootwrite.RootWriter) -> list[list[int]]:
    return [list(s) for s in w.free]


def test_free_space_rules_of_tfree():
    w = rootwrite.RootWriter("f.root")
    seeks = [w._alloc(n) for n in (100, 50, 30, 200)]
    assert seeks == [w.end - 380 + x for x in (0, 100, 150, 180)]
    tail = w.end
    w._release(seeks[1], 50)  # a gap of 50, marked in place
    assert _segments(w)[:-1] == [[seeks[1], seeks[1] + 49]]
    assert struct.unpack_from(">i", w.buf, seeks[1])[0] == -50
    assert w._alloc(48) == tail  # would leave 2 bytes: not taken
    assert w._alloc(47) == tail + 48  # would leave 3 bytes: not taken either (ROOT wants > n + 3)
    w._release(tail + 48, 47)
    w._release(tail, 48)
    assert w.end == tail
    assert _segments(w)[:-1] == [[seeks[1], seeks[1] + 49]]
    assert w._alloc(46) == seeks[1]  # leaves exactly 4: the rest stays a marked gap
    assert _segments(w)[:-1] == [[seeks[1] + 46, seeks[1] + 49]]
    assert struct.unpack_from(">i", w.buf, seeks[1] + 46)[0] == -4
    w._release(seeks[1], 46)  # merges with the 4-byte rest
    assert _segments(w)[:-1] == [[seeks[1], seeks[1] + 49]]
    w._release(seeks[2], 30)  # adjacent to the gap before it: one gap of 80
    assert _segments(w)[:-1] == [[seeks[1], seeks[1] + 79]]
    assert w._alloc(80) == seeks[1] and _segments(w)[:-1] == []  # exact fit removes the segment
    end = w.end
    w._release(seeks[3], 200)  # the last record: the file ends where it started
    assert w.end == end - 200 == _segments(w)[-1][0]
    assert _segments(w)[-1][1] == rootwrite.START_BIG_FILE


def test_writer_file_is_consistent_after_rewrites(tmp_path):
    w = rootwrite.RootWriter("x.root", streamer_info=simulate._streamer_info())
    a = w.mkdir(w.top, "A")
    for i in range(30):
        w.put(
            a,
            "TObjString",
            f"<s{i}>i={i}</s{i}>",
            "Collectable string class",
            rootwrite.tobjstring(f"<s{i}>i={i}</s{i}>"),
        )
        if i % 7 == 0:
            w.save()  # key lists grow: old ones become gaps, later records fill them
    data = w.close()
    path = tmp_path / "x.root"
    path.write_bytes(data)
    records = _walk(path)
    assert sum(r.nbytes < 0 for r in records) >= 1
    mes = rootcheck.read_monitor_elements(path)
    assert [m.value for m in mes] == list(range(30))
    assert w.close() == data  # closing again changes nothing
    with pytest.raises(rootwrite.RootWriteError):
        w.mkdir(w.top, "late")
    with pytest.raises(rootwrite.RootWriteError):
        rootwrite.RootWriter("y.root").mkdir(w.top, "a/b")


def test_compression_follows_root_rules():
    small = bytes(200)
    assert rootwrite.compress(small, 1) == small  # 256 bytes or less: stored
    noise = random.Random(1).randbytes(1000)
    assert rootwrite.compress(noise, 1) == noise  # does not shrink: stored
    text = b"abc" * 1000
    packed = rootwrite.compress(text, 1)
    assert packed[:3] == b"ZL\x08" and len(packed) < len(text)
    assert int.from_bytes(packed[3:6], "little") == len(packed) - 9
    assert int.from_bytes(packed[6:9], "little") == len(text)
    assert zlib.decompress(packed[9:]) == text
    assert rootkeys.decompress(packed, len(text)) == text
    assert rootwrite.compress(text, 0) == text
    assert rootwrite.tstring("x" * 300)[:5] == b"\xff" + struct.pack(">i", 300)
