"""ROOT content checks and monitor-element listing on real ROOT files written with uproot."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import uproot

from t0dqm.dev import simulate
from t0dqm.formats import naming, rootcheck, rootkeys
from t0dqm.formats.rootcheck import ME, RootCheckError, check_root_file, read_monitor_elements


def good(tmp_path: Path, strict: bool, run: int = 123456, subsystems=("Ecal", "Hcal")) -> Path:
    path = tmp_path / f"DQM_V0001_R{run:09d}.root"
    simulate.write_dqm_file(path, run, list(subsystems), n_hists=40, strict=strict, lumi=7, events=999)
    return path


def reason(path, strict=False) -> str:
    with pytest.raises(RootCheckError) as err:
        check_root_file(path, strict)
    assert str(err.value) == err.value.reason
    return err.value.reason


def test_good_strict(tmp_path):
    path = good(tmp_path, strict=True)
    assert check_root_file(path, True) == "VERIFY: Good to go; R=123456:L=7:E=999"
    assert check_root_file(path, False) == "VERIFY: Good to go"
    assert not Path(str(path) + ".tmp").exists()


def test_good_loose_fails_strict(tmp_path):
    path = good(tmp_path, strict=False)
    assert check_root_file(path, False) == "VERIFY: Good to go"
    assert reason(path, strict=True) == "missing reportSummaryMap"


def test_bad_magic(tmp_path):
    path = good(tmp_path, strict=True)
    with open(path, "r+b") as fh:
        fh.write(b"ROOT\x01")
    assert reason(path) == "not a ROOT file (bad magic)"
    (tmp_path / "empty.root").write_bytes(b"")
    assert reason(tmp_path / "empty.root") == "not a ROOT file (bad magic)"
    (tmp_path / "text.root").write_text("hello world, not ROOT at all")
    assert reason(tmp_path / "text.root") == "not a ROOT file (bad magic)"


def test_truncated(tmp_path):
    path = good(tmp_path, strict=True)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size - 10)
    r = reason(path, strict=True)
    assert r.startswith("truncated: file has ") and f"header says {size}" in r
    with open(path, "r+b") as fh:
        fh.truncate(10)
    assert reason(path).startswith("truncated:")


def test_garbage_after_magic(tmp_path):
    path = tmp_path / "junk.root"
    path.write_bytes(b"root\0" + bytes(200))
    assert reason(path) == "corrupt ROOT header (fBEGIN=0, fEND=0)"
    # a sane header whose directory records are garbage: uproot cannot open it
    head = b"root" + (62206).to_bytes(4, "big") + (100).to_bytes(4, "big") + (300).to_bytes(4, "big")
    path.write_bytes(head + random.Random(1).randbytes(284))
    assert reason(path).startswith("cannot open: ")


def test_missing_file(tmp_path):
    assert reason(tmp_path / "nope.root").startswith("cannot open: ")


def test_no_run_summary(tmp_path):
    path = tmp_path / "f.root"
    simulate.write_dqm_file(path, 5, ["Ecal"], n_hists=10, strict=True, run_summary=False)
    assert reason(path) == "no Run summary folder"
    assert reason(path, strict=True) == "no Run summary folder"


def _write(path: Path, items: dict[str, object]) -> Path:
    import numpy as np

    with uproot.recreate(path) as f:
        f.mkdir("DQMData/Run 9/Ecal/Run summary")
        for key, value in items.items():
            obj = (np.ones(4), np.arange(5.0)) if value == "H1" else value
            f[f"DQMData/Run 9/Ecal/Run summary/{key}"] = obj
    return path


FULL = {
    "EventInfo/reportSummary": "<reportSummary>f=0.5</reportSummary>",
    "EventInfo/iRun": "<iRun>i=9</iRun>",
    "EventInfo/iEvent": "<iEvent>i=10</iEvent>",
    "EventInfo/iLumiSection": "<iLumiSection>i=11</iLumiSection>",
    "EventInfo/reportSummaryMap": "H1",
    "EventInfo/reportSummaryContents/x": "<x>f=1</x>",
}


def test_strict_minimal_ok(tmp_path):
    assert check_root_file(_write(tmp_path / "a.root", FULL), True) == "VERIFY: Good to go; R=9:L=11:E=10"


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        ("EventInfo/reportSummaryMap", "missing reportSummaryMap"),
        ("EventInfo/reportSummaryContents/x", "missing reportSummaryContents"),
        ("EventInfo/reportSummary", "missing reportSummary in EventInfo"),
        ("EventInfo/iRun", "missing iRun in EventInfo"),
        ("EventInfo/iEvent", "missing iEvent in EventInfo"),
        ("EventInfo/iLumiSection", "missing iLumiSection in EventInfo"),
    ],
)
def test_strict_each_missing_piece(tmp_path, drop, expected):
    items = {k: v for k, v in FULL.items() if k != drop}
    assert reason(_write(tmp_path / "a.root", items), strict=True) == expected
    assert check_root_file(tmp_path / "a.root", False) == "VERIFY: Good to go"


def test_strict_missing_event_info(tmp_path):
    items = {"Summary/reportSummaryMap": "H1", "Summary/reportSummaryContents/x": "<x>f=1</x>"}
    assert reason(_write(tmp_path / "a.root", items), strict=True) == "missing EventInfo"


def test_strict_scalar_with_wrong_type_does_not_count(tmp_path):
    items = dict(FULL)
    items["EventInfo/iRun"] = "<iRun>s=nine</iRun>"
    assert check_root_file(_write(tmp_path / "a.root", items), True).startswith("VERIFY: Good to go; R=nine")
    items["EventInfo/iRun"] = "not a dqm scalar"
    assert reason(_write(tmp_path / "b.root", items), strict=True) == "missing iRun in EventInfo"


def test_read_monitor_elements(tmp_path):
    path = good(tmp_path, strict=True, run=222333, subsystems=("Pixel",))
    mes = read_monitor_elements(path)
    by_path = {m.path: m for m in mes}
    assert by_path["Pixel/EventInfo/iRun"] == ME("Pixel/EventInfo/iRun", "INT", 222333)
    assert by_path["Pixel/EventInfo/iEvent"].value == 999
    assert by_path["Pixel/EventInfo/iLumiSection"].value == 7
    assert by_path["Pixel/EventInfo/reportSummary"] == ME("Pixel/EventInfo/reportSummary", "REAL", 0.97)
    assert by_path["Pixel/EventInfo/reportSummaryMap"].kind == "TH2D"
    assert by_path["Pixel/EventInfo/reportSummaryContents/PixelBarrel"].kind == "REAL"
    hists = [m for m in mes if m.kind.startswith("TH")]
    assert len(hists) == 41  # 40 histograms + reportSummaryMap
    assert all(m.value is None for m in hists)
    assert all(not m.path.startswith("DQMData") and "Run summary" not in m.path for m in mes)
    assert rootcheck.run_numbers(path) == [222333]


def test_read_monitor_elements_errors(tmp_path):
    (tmp_path / "x.root").write_bytes(b"nope")
    with pytest.raises(RootCheckError, match="bad magic"):
        read_monitor_elements(tmp_path / "x.root")


def test_other_scalar_kinds_and_plain_strings(tmp_path):
    items = {
        "F/tag": "<t1>t=17</t1>",
        "F/qr": "<h.Test>qr=st:100:1</h.Test>",
        "F/s": "<s1>s=hello</s1>",
        "F/free": "free text",
        "F/bad": "<n>i=notanint</n>",
    }
    mes = {m.path: m for m in read_monitor_elements(_write(tmp_path / "a.root", items))}
    assert mes["Ecal/F/t1"] == ME("Ecal/F/t1", "TAG", "17")
    assert mes["Ecal/F/h.Test"] == ME("Ecal/F/h.Test", "QREPORT", "st:100:1")
    assert mes["Ecal/F/s1"] == ME("Ecal/F/s1", "STRING", "hello")
    assert mes["Ecal/F/free"] == ME("Ecal/F/free", "TObjString", "free text")
    assert mes["Ecal/F/n"] == ME("Ecal/F/n", "INT", "notanint")


def test_dqm_style_key_names_are_parsed_without_reading():
    class NoRead:
        def get(self):  # pragma: no cover - must not be called
            raise AssertionError("object read")

    item = rootkeys.Key(
        ("DQMData", "Run 5", "Ecal", "Run summary", "EventInfo"), "<iRun>i=5</iRun>", "TObjString", NoRead()
    )
    assert rootcheck._scalar(item) == ("iRun", "INT", 5)
    assert rootcheck._me_path(item.folders, "iRun") == "Ecal/EventInfo/iRun"
    assert rootcheck._me_path(("DQMData", "Ecal"), "h") == "Ecal/h"
    assert rootcheck._me_path(("Other",), "h") == "Other/h"


# --- one walk, native reader against uproot ---------------------------------------------------------------


def _native_and_uproot(path: Path, strict: bool | None) -> tuple[object, object]:
    return rootcheck._examine_native(path, None, strict, True), rootcheck._examine_uproot(path, strict, True)


@pytest.mark.parametrize("strict", [True, False, None])
def test_native_reader_agrees_with_uproot(tmp_path, strict):
    files = [
        good(tmp_path, strict=True),
        _write(tmp_path / "a.root", FULL),
        _write(tmp_path / "b.root", {"F/tag": "<t1>t=17</t1>", "F/free": "free text", "F/x": "H1"}),
    ]
    sub = tmp_path / "DQM_V0001_Ecal_R000000007.root"
    simulate.write_dqm_file(sub, 7, ["Ecal"], n_hists=15, strict=False)
    files.append(sub)
    for path in files:
        try:
            native, reference = _native_and_uproot(path, strict)
        except RootCheckError as exc:  # the same verdict from both
            with pytest.raises(RootCheckError, match=exc.reason):
                rootcheck._examine_uproot(path, bool(strict), True)
            continue
        assert native == reference, path


def test_inspect_does_not_need_uproot_for_dqm_files(tmp_path, monkeypatch):
    path = good(tmp_path, strict=True, subsystems=("Ecal", "Hcal", "Pixel"))
    data = path.read_bytes()
    reference = rootcheck._examine_uproot(path, True, True)
    monkeypatch.setattr(rootcheck, "_examine_uproot", lambda *a, **k: pytest.fail("fell back to uproot"))
    found = rootcheck.inspect(path, True, data=data)
    assert found == reference and found.check == "VERIFY: Good to go; R=123456:L=7:E=999"
    assert rootcheck.inspect(path, None).mes == reference.mes and rootcheck.inspect(path, None).check is None
    assert rootcheck.inspect(path, False, mes=False) == rootcheck.Inspection("VERIFY: Good to go", [])


def test_compressed_scalars(tmp_path):
    long_text = "<long>s=" + "abc" * 3000 + "</long>"
    for compression, native_ok in ((uproot.ZLIB(6), True), (uproot.LZMA(1), False)):
        path = tmp_path / "c.root"
        with uproot.recreate(path, compression=compression) as f:
            f.mkdir("DQMData/Run 9/Ecal/Run summary")
            f["DQMData/Run 9/Ecal/Run summary/long"] = long_text
        if native_ok:
            native, reference = _native_and_uproot(path, False)
            assert native == reference
        else:
            with pytest.raises(rootkeys.Unreadable):
                rootcheck._examine_native(path, None, False, True)
        (me,) = rootcheck.inspect(path, False).mes  # uproot decides when the native reader cannot
        assert me == ME("Ecal/long", "STRING", "abc" * 3000)


def test_native_reader_refuses_loops_and_bad_records(tmp_path, monkeypatch):
    path = good(tmp_path, strict=False)
    data = path.read_bytes()
    head = data[:40]
    begin, end = rootcheck._validate_header(head, len(data))
    src = rootkeys.Source(end, data)
    top = rootkeys.top_directory(head, begin)
    assert len(rootkeys.walk(src, top)) > 40
    with pytest.raises(rootkeys.Unreadable):
        src.get(end + 1, end + 10)  # outside the file
    with pytest.raises(rootkeys.Unreadable):
        rootkeys.NativeKey(src, 100, 50, 10, 0)  # fNbytes < fKeylen
    # a directory that contains itself is refused, not walked forever
    monkeypatch.setattr(
        rootkeys, "dir_keys", lambda s, at: [("TDirectory", "again", rootkeys.NativeKey(s, top, 0, 0, 0))]
    )
    with pytest.raises(rootkeys.Unreadable, match="loop"):
        rootkeys.walk(src, top)
    # and inspect() then lets uproot decide (the real file is fine)
    assert rootcheck.inspect(path, False).check == "VERIFY: Good to go"


# --- simulation -------------------------------------------------------------------------------------------


def test_make_names_classify_and_are_deterministic():
    names = simulate.make_names(60, seed=4)
    assert names == simulate.make_names(60, seed=4)
    assert names != simulate.make_names(60, seed=5)
    assert len(set(names)) == 60
    classes = set()
    for name in names:
        info = naming.classify(name)
        classes.add(info.class_ if info.subsystem is None else "online_sub")
        naming.check_upload_name(name)
    assert classes >= set(naming.CLASSES) | {"online_sub"}
    assert {naming.classify(n).class_ for n in simulate.make_names(8, seed=0)} == set(naming.CLASSES)


def test_bad_names_fail_classification_but_pass_upload_shape():
    rng = random.Random(1)
    for i in range(6):
        name = simulate.make_bad_name(rng, i)
        naming.check_upload_name(name)
        with pytest.raises(naming.InvalidName):
            naming.classify(name)


def test_simulate_good_and_broken(tmp_path):
    manifest = simulate.simulate(tmp_path / "out", 8, seed=2, broken=5, n_hists=20)
    assert len(manifest) == 13
    seen = set()
    for entry in manifest:
        path = Path(entry["file"])
        assert path.exists() and entry["size"] == path.stat().st_size
        assert entry["md5"] == simulate.md5_of(path)
        kind = entry["broken"]
        seen.add(kind)
        info = None
        try:
            info = naming.classify(path.name)
        except naming.InvalidName as exc:
            assert kind == "bad_name" and exc.reason == entry["reason"]
            continue
        strict = info.class_ == "online_data" and info.subsystem is None
        if kind in (None, "size_mismatch"):
            assert check_root_file(path, strict).startswith("VERIFY: Good to go")
        else:
            assert entry["reason"] in reason(path, strict)
        if kind == "size_mismatch":
            origin = Path(str(path) + ".origin").read_text().split()
            assert origin[0] == "md5:" + entry["md5"]
            assert int(origin[1]) == entry["declared_size"] == entry["size"] + 17
    assert seen == {None, *simulate.BROKEN_KINDS}
    assert sorted(os.listdir(tmp_path / "out")) == sorted(
        [Path(e["file"]).name for e in manifest]
        + [Path(e["file"]).name + ".origin" for e in manifest if e["broken"] == "size_mismatch"]
    )


def test_write_broken_unknown_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown broken kind"):
        simulate.write_broken(tmp_path, "melted", random.Random(0))


def test_simulate_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from t0dqm.cli import cli

    result = CliRunner().invoke(
        cli,
        [
            "simulate",
            "--out",
            str(tmp_path / "o"),
            "--files",
            "3",
            "--seed",
            "1",
            "--broken",
            "2",
            "--hists",
            "10",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert len(lines) == 5
    assert [x["broken"] for x in lines] == [None, None, None, "truncated", "bad_magic"]


def test_simulate_into_dropbox(tmp_path):
    from t0dqm.formats import dropbox

    manifest = simulate.simulate(tmp_path / "out", 3, seed=9, broken=5, n_hists=10, dropbox=tmp_path / "box")
    assert len(manifest) == 8
    for entry in manifest:
        uploaded = Path(entry["uploaded"])
        assert uploaded.is_file() and uploaded.parent.parent == tmp_path / "box"
        origin = dropbox.read_origin(str(uploaded) + ".origin")
        assert origin.md5 == entry["md5"]
        expected = entry.get("declared_size", entry["size"])
        assert origin.size == expected and uploaded.stat().st_size == entry["size"]
    mismatched = [e for e in manifest if e["broken"] == "size_mismatch"]
    assert len(mismatched) == 1 and mismatched[0]["declared_size"] == mismatched[0]["size"] + 17
