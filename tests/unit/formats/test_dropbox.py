"""The dropbox protocol: slots (link-based, no lock), .origin format, hidden temp names, scan order."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from t0dqm.formats import dropbox, naming

ONLINE = "DQM_V0001_Ecal_R000300001.root"
ONLINE_NEWER = "DQM_V0001_Hcal_R000300002.root"
OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
RELVAL_OLD = "DQM_V0001_R000300002__JetHT__CMSSW_13_0_10-RelVal_data_v1__DQMIO.root"
RELVAL_NEW = "DQM_V0001_R000300002__JetHT__CMSSW_14_0_1-RelVal_data_v1__DQMIO.root"


def _file(tmp_path: Path, name: str, data: bytes = b"root\0payload") -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / name
    path.write_bytes(data)
    return path


def test_upload_writes_file_and_origin(tmp_path: Path) -> None:
    box = tmp_path / "box"
    src = _file(tmp_path, ONLINE, b"root\0" + b"x" * 5000)
    target = dropbox.upload(src, box)
    assert target == box / "0000" / ONLINE
    assert target.read_bytes() == src.read_bytes()
    assert os.stat(target).st_mtime_ns == os.stat(src).st_mtime_ns
    origin = dropbox.read_origin(target.with_name(ONLINE + ".origin"))
    assert origin == dropbox.Origin(hashlib.md5(src.read_bytes()).hexdigest(), 5005, str(src.resolve()))
    text = target.with_name(ONLINE + ".origin").read_text()
    assert text.endswith("\n") and text.startswith("md5:")
    assert list((box / ".uploading").iterdir()) == []


def test_same_name_goes_to_next_free_slot(tmp_path: Path) -> None:
    box = tmp_path / "box"
    src = _file(tmp_path, ONLINE)
    paths = [dropbox.upload(src, box) for _ in range(3)]
    assert [p.parent.name for p in paths] == ["0000", "0001", "0002"]
    # a quarantined or claimed upload still occupies its slot
    (box / "0000" / ONLINE).unlink()
    os.rename(box / "0000" / (ONLINE + ".origin"), box / "0000" / (ONLINE + ".origin.bad"))
    assert dropbox.upload(src, box).parent.name == "0003"
    (box / "0001" / (ONLINE + ".origin")).rename(box / "0001" / (ONLINE + ".origin.claimed"))
    (box / "0001" / ONLINE).unlink()
    assert dropbox.upload(src, box).parent.name == "0004"
    # a fully received slot (file and .origin gone) is free again
    for suffix in ("", ".origin"):
        (box / "0002" / (ONLINE + suffix)).unlink()
    assert dropbox.upload(src, box).parent.name == "0002"


def test_declared_size_and_source(tmp_path: Path) -> None:
    src = _file(tmp_path, ONLINE)
    target = dropbox.upload(src, tmp_path / "box", declared_size=999, source="producer:/a/b")
    origin = dropbox.read_origin(target.with_name(ONLINE + ".origin"))
    assert (origin.size, origin.source) == (999, "producer:/a/b")


@pytest.mark.parametrize(
    "name", ["bad name.root", "DQM_V0001_R1.txt", "foo.root", "DQM_V0001_Ecal_R000300001__A__B__C.root"]
)
def test_upload_refuses_bad_names(tmp_path: Path, name: str) -> None:
    src = _file(tmp_path, name)
    with pytest.raises(naming.InvalidName):
        dropbox.upload(src, tmp_path / "box")
    assert not (tmp_path / "box" / "0000").exists()


@pytest.mark.parametrize(
    "text", ["", "md5:xyz 12 a", "crc32:12 12 a", "md5:" + "a" * 32 + " -1 src", "md5:" + "a" * 32 + " 12"]
)
def test_parse_origin_rejects(text: str) -> None:
    with pytest.raises(dropbox.OriginError):
        dropbox.parse_origin(text)


def test_parse_origin_source_with_spaces() -> None:
    origin = dropbox.parse_origin("md5:" + "0" * 32 + " 12 /path with spaces/f.root\n")
    assert origin.size == 12 and origin.source == "/path with spaces/f.root"


def test_partial_upload_is_not_a_candidate(tmp_path: Path) -> None:
    box = tmp_path / "box"
    (box / "0000").mkdir(parents=True)
    (box / "0000" / ONLINE).write_bytes(b"root\0")  # file renamed in, .origin not written yet
    (box / ".uploading").mkdir()
    (box / ".uploading" / (ONLINE + ".abc")).write_bytes(b"root\0")
    (box / "0000" / f".{ONLINE}.origin.1234.tmp").write_text("md5:...")  # origin being written
    assert dropbox.scan(box) == []
    dropbox.write_atomic(box / "0000" / (ONLINE + ".origin"), b"md5:" + b"0" * 32 + b" 5 x\n")
    assert [c.name for c in dropbox.scan(box)] == [ONLINE]


def test_scan_order_and_limit(tmp_path: Path) -> None:
    box = tmp_path / "box"
    for name in (ONLINE, OFFLINE, RELVAL_OLD, RELVAL_NEW, ONLINE_NEWER, "junk.root"):
        src = _file(tmp_path, name)
        folder = box / "0000"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(src.read_bytes())
        dropbox.write_atomic(folder / (name + ".origin"), b"md5:" + b"0" * 32 + b" 12 x\n")
    names = [c.name for c in dropbox.scan(box)]
    # run desc; then release desc and dataset desc; names that do not classify last
    assert names[0] in (OFFLINE, RELVAL_NEW, RELVAL_OLD, ONLINE_NEWER)
    assert names.index(RELVAL_NEW) < names.index(RELVAL_OLD)
    assert names.index(ONLINE_NEWER) < names.index(ONLINE)
    assert names.index(OFFLINE) < names.index(ONLINE_NEWER)  # /ZeroBias > /JetHT > /Global (desc)
    assert names[-1] == "junk.root"
    assert [c.info is None for c in dropbox.scan(box)][-1]
    assert len(dropbox.scan(box, limit=2)) == 2


def test_scan_lists_claims_for_the_catalog_to_judge(tmp_path: Path) -> None:
    box = tmp_path / "box"
    target = dropbox.upload(_file(tmp_path, ONLINE), box)
    target.with_name(ONLINE + ".origin").rename(target.with_name(ONLINE + ".origin.claimed"))
    (cand,) = dropbox.scan(box)  # alive or dead, receive's catalog lease decides (no flock)
    assert cand.claimed and cand.path == target
    assert cand.origin == target.with_name(ONLINE + ".origin.claimed")


def test_place_backs_off_from_an_older_upload_still_being_received(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The slot check and the link are not one step without a lock: an older upload of the name may be
    placed and claimed in between (its file gone, its claim still there). Our link then goes back."""
    box = tmp_path / "box"
    older = box / "0000" / (ONLINE + ".origin.claimed")
    older.parent.mkdir(parents=True)
    older.write_text("md5:" + "0" * 32 + " 12 x\n")
    seen: list[str] = []

    def checked_before_the_older_upload(folder: Path, name: str) -> bool:
        seen.append(folder.name)
        return False

    monkeypatch.setattr(dropbox, "slot_taken", checked_before_the_older_upload)
    target = dropbox.upload(_file(tmp_path, ONLINE), box)
    assert target.parent.name == "0001" and seen[:2] == ["0000", "0001"]
    assert sorted(p.name for p in (box / "0000").iterdir()) == [ONLINE + ".origin.claimed"]
    assert list((box / ".uploading").iterdir()) == []


def test_place_moves_on_when_another_uploader_links_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = tmp_path / "box"
    (box / "0000").mkdir(parents=True)
    (box / "0000" / ONLINE).write_bytes(b"another host's upload")
    monkeypatch.setattr(dropbox, "slot_taken", lambda folder, name: False)  # it checked before that link
    target = dropbox.upload(_file(tmp_path, ONLINE), box)
    assert target.parent.name == "0001"
    assert (box / "0000" / ONLINE).read_bytes() == b"another host's upload"


def _uploader(src: str, box: str, n: int, out) -> None:
    out.put([str(dropbox.upload(src, box)) for _ in range(n)])


def test_concurrent_uploaders_get_distinct_slots(tmp_path: Path) -> None:
    src = _file(tmp_path, ONLINE)
    box = tmp_path / "box"
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_uploader, args=(str(src), str(box), 10, out)) for _ in range(4)]
    for p in procs:
        p.start()
    paths = [p for _ in procs for p in out.get(timeout=60)]
    for p in procs:
        p.join(30)
    assert len(paths) == len(set(paths)) == 40
    assert sorted(Path(p).parent.name for p in paths) == [f"{i:04d}" for i in range(40)]
