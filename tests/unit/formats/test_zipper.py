"""Zipper: stored members with adler32 in one pass, repair after torn appends, rebuild, checksums."""

from __future__ import annotations

import os
import shutil
import zipfile
import zlib
from pathlib import Path

import pytest

from t0dqm import storage
from t0dqm.formats import zipper


def make_sources(tmp_path: Path, n: int, size: int = 300_000) -> dict[str, str]:
    out = {}
    for i in range(n):
        p = tmp_path / "repo" / f"DQM_V0001_R{i:09d}.root"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(os.urandom(size + i))
        out[p.name] = str(p)
    return out


def build(zip_path: Path, sources: dict[str, str]) -> list[zipper.Member]:
    members: list[zipper.Member] = []
    for name, path in sources.items():
        members.append(zipper.append(zip_path, path, name, members, sources=sources))
    return members


def test_adler32_combine_matches_zlib() -> None:
    for a, b in [
        (b"", b"x"),
        (b"abc", b""),
        (os.urandom(1000), os.urandom(70000)),
        (b"a" * 65521, b"b" * 65522),
    ]:
        assert zipper.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


def test_append_writes_stored_flat_members_with_their_adler32(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 3)
    zpath = tmp_path / "zips" / "P_S0001.zip"
    members = build(zpath, sources)
    assert [m.adler32 for m in members] == [storage.adler32_file(p) for p in sources.values()]
    with zipfile.ZipFile(zpath) as zf:
        assert zf.testzip() is None
        assert [i.filename for i in zf.infolist()] == list(sources)
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert zipper.matches(zpath, members)
    assert zipper.zip_adler32(zpath, members) == storage.adler32_file(zpath)


def test_append_refuses_a_name_twice(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 1)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    with pytest.raises(ValueError):
        zipper.append(zpath, next(iter(sources.values())), members[0].name, members)


def test_wrong_expected_checksum_leaves_the_zip_as_before(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    first = dict(list(sources.items())[:1])
    members = build(zpath, first)
    before = zpath.read_bytes()
    name, path = list(sources.items())[1]
    with pytest.raises(zipper.SourceMismatch):
        zipper.append(zpath, path, name, members, sources=sources, expected_adler32="00000001")
    assert zpath.read_bytes() == before


def torn_append(zpath: Path, name: str, data: bytes, keep: int) -> None:
    """Start appending and stop after ``keep`` bytes of data, as a SIGKILL would."""
    fh = open(zpath, "r+b")  # noqa: SIM115 - deliberately never closed cleanly
    zf = zipfile.ZipFile(fh, "a")
    info = zipfile.ZipInfo(name)
    info.file_size = len(data)
    w = zf.open(info, "w")
    w.write(data[:keep])
    fh.flush()
    os.fsync(fh.fileno())
    # abandon without closing: no local header update, no central directory
    os.close(os.dup(fh.fileno()))


@pytest.mark.parametrize("keep", [0, 10, 200_000])
def test_torn_append_is_cut_back_and_appending_goes_on(tmp_path: Path, keep: int) -> None:
    sources = make_sources(tmp_path, 3)
    zpath = tmp_path / "a.zip"
    members = build(zpath, dict(list(sources.items())[:2]))
    size = zpath.stat().st_size
    torn_append(zpath, "extra.root", os.urandom(300_000), keep)
    if keep:
        assert not zipper.matches(zpath, members)
    assert zipper.repair(zpath, members, sources) in ("ok", "cut")
    assert zpath.stat().st_size == size and zipper.matches(zpath, members)
    name, path = list(sources.items())[2]
    members.append(zipper.append(zpath, path, name, members, sources=sources))
    with zipfile.ZipFile(zpath) as zf:
        assert zf.testzip() is None and len(zf.infolist()) == 3
    assert zipper.zip_adler32(zpath, members) == storage.adler32_file(zpath)


def test_uncommitted_complete_member_is_removed(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    members = build(zpath, dict(list(sources.items())[:1]))
    name, path = list(sources.items())[1]
    zipper.append(zpath, path, name, members)  # appended, but the catalog never heard of it
    assert zipper.repair(zpath, members, sources) == "cut"
    assert zipper.matches(zpath, members)


def test_append_repairs_before_appending(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 3)
    zpath = tmp_path / "a.zip"
    members = build(zpath, dict(list(sources.items())[:2]))
    torn_append(zpath, "x.root", os.urandom(1000), 500)
    name, path = list(sources.items())[2]
    members.append(zipper.append(zpath, path, name, members, sources=sources))
    assert zipper.matches(zpath, members)


def test_torn_first_append_leaves_an_empty_zip(tmp_path: Path) -> None:
    zpath = tmp_path / "a.zip"
    zipfile.ZipFile(zpath, "w").close()
    torn_append(zpath, "x.root", os.urandom(1000), 500)
    assert zipper.repair(zpath, [], {}) == "cut"
    with zipfile.ZipFile(zpath) as zf:
        assert zf.infolist() == []


def test_damaged_zip_is_rebuilt_from_sources(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 3)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    with open(zpath, "r+b") as fh:  # overwrite the first local header
        fh.write(b"\0" * 40)
    assert zipper.repair(zpath, members, sources) == "rebuilt"
    with zipfile.ZipFile(zpath) as zf:
        assert zf.testzip() is None
    assert zipper.zip_adler32(zpath, members) == storage.adler32_file(zpath)


def test_missing_zip_is_rebuilt(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    zpath.unlink()
    assert zipper.repair(zpath, members, sources) == "rebuilt" and zipper.matches(zpath, members)


def test_rebuild_refuses_missing_or_changed_sources(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    zpath.unlink()
    with pytest.raises(zipper.ZipDamaged):
        zipper.repair(zpath, members, {})
    first = next(iter(sources.values()))
    Path(first).write_bytes(os.urandom(300_000))
    with pytest.raises(zipper.SourceMismatch):
        zipper.rebuild(zpath, members, sources)
    assert not zpath.exists() and not list(tmp_path.glob(".a.zip.*"))


def test_zip_adler32_detects_a_catalog_mismatch(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    with pytest.raises(zipper.ZipDamaged):
        zipper.zip_adler32(zpath, members[:1])
    wrong = [zipper.Member(members[0].name, members[0].size + 1, members[0].adler32), members[1]]
    with pytest.raises(zipper.ZipDamaged):
        zipper.zip_adler32(zpath, wrong)


def test_zip64_sized_headers_are_walked(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 1, size=1000)
    zpath = tmp_path / "z64.zip"
    name, path = next(iter(sources.items()))
    with (
        zipfile.ZipFile(zpath, "w") as zf,
        open(path, "rb") as src,
        zf.open(zipfile.ZipInfo(name), "w", force_zip64=True) as dst,
    ):
        shutil.copyfileobj(src, dst)
    member = zipper.Member(name, 1000, storage.adler32_file(path))
    assert zipper.zip_adler32(zpath, [member]) == storage.adler32_file(zpath)


def test_extract_returns_size_and_adler32(tmp_path: Path) -> None:
    sources = make_sources(tmp_path, 2)
    zpath = tmp_path / "a.zip"
    members = build(zpath, sources)
    got = zipper.extract(zpath, members[1].name, tmp_path / "out" / "x.root")
    assert got == zipper.Member(members[1].name, members[1].size, members[1].adler32)
    assert (tmp_path / "out" / "x.root").read_bytes() == Path(sources[members[1].name]).read_bytes()
