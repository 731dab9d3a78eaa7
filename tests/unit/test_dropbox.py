"""The dropbox protocol: slots, .origin format, hidden temp names, scan order, locking."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
from pathlib import Path

import pytest

from t0dqm import dropbox, naming

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


@pytest.mark.parametrize("name", ["bad name.root", "DQM_V0001_R1.txt", "foo.root",
                                  "DQM_V0001_Ecal_R000300001__A__B__C.root"])
def test_upload_refuses_bad_names(tmp_path: Path, name: str) -> None:
    src = _file(tmp_path, name)
    with pytest.raises(naming.InvalidName):
        dropbox.upload(src, tmp_path / "box")
    assert not (tmp_path / "box" / "0000").exists()


@pytest.mark.parametrize("text", ["", "md5:xyz 12 a", "crc32:12 12 a", "md5:" + "a" * 32 + " -1 src",
                                  "md5:" + "a" * 32 + " 12"])
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


def test_scan_lists_only_stale_claims(tmp_path: Path) -> None:
    import fcntl

    box = tmp_path / "box"
    target = dropbox.upload(_file(tmp_path, ONLINE), box)
    claim = target.with_name(ONLINE + ".origin.claimed")
    target.with_name(ONLINE + ".origin").rename(claim)
    fd = os.open(claim, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert dropbox.scan(box) == []  # a live receiver holds it
    finally:
        os.close(fd)
    (cand,) = dropbox.scan(box)  # its receiver died: listed again
    assert cand.claimed and cand.path == target


def _uploader(src: str, box: str, n: int, out) -> None:  # noqa: ANN001
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
