from __future__ import annotations

import gzip
import os
import random

import pytest

from t0dqm.formats import eosdump
from t0dqm.formats.streamer_names import StreamerUnit, file_path

from .eosdump_helpers import DAY, NOW, line, scanner, unit_lines, write_dump  # noqa: F401 - scanner: autouse


def agg(path, **kw):
    kw.setdefault("max_age", None)
    return eosdump.aggregate(path, **kw)


def test_parse_line_two_ints():
    rec = eosdump.parse_line("path=/a/b size=12 checksum=ff ctime=1.5 mtime=1700000000.123456789")
    assert rec.ctime == (1, 5) and rec.mtime == (1700000000, 123456789) and rec.size == 12
    assert eosdump.parse_line("path=/a/b size=x checksum=ff ctime=1.5 mtime=1.2") is None
    assert eosdump.parse_line("path=/a/b size=1 checksum=ff ctime=1.5 mtime=12") is None
    assert eosdump.parse_line("garbage") is None


def test_aggregate_units_and_newest(tmp_path):
    lines = unit_lines("Data", "A", 300001, [10, 20], NOW - DAY) + unit_lines("Data", "B", 300001, [5], NOW)
    lines.append(line(file_path("Data", "A", 300001, 9), 1, (NOW - DAY, 5)))
    lines.append(line(file_path("Data", "A", 300001, 10), 1, (NOW - DAY, 40)))
    lines.append(line("/eos/cms/store/data/Run2022/x.root", 999, NOW))
    s = agg(write_dump(tmp_path / "d.gz", lines))
    a = s.units[StreamerUnit("Data", "A", 300001)]
    assert (a.files, a.bytes, a.newest) == (4, 32, (NOW - DAY, 40))
    assert s.units[StreamerUnit("Data", "B", 300001)].bytes == 5
    assert s.lines == 6 and s.other_area_files == 1 and s.area_bytes == 37 and s.malformed == 0


def test_unpadded_nanoseconds_not_float(tmp_path):
    # 0.9 (900 ms) vs 0.10 (10 ns... printed unpadded as ".10"): as floats 0.9 > 0.10 too, so use 5 vs 40
    lines = [
        line(file_path("Data", "A", 5000, 1), 1, (NOW, 5)),
        line(file_path("Data", "A", 5000, 2), 1, (NOW, 40)),
    ]
    s = agg(write_dump(tmp_path / "d.gz", lines))
    assert s.units[StreamerUnit("Data", "A", 5000)].newest == (NOW, 40)
    raw = (
        b"path=/eos/cms/store/t0streamer/Data/A/000/005/000/f size=1 checksum=a ctime=1.9 mtime=100.9\n"
        b"path=/eos/cms/store/t0streamer/Data/A/000/005/000/g size=1 checksum=a ctime=1.9 mtime=100.10\n"
    )
    s = agg(write_dump(tmp_path / "e.gz", raw))
    assert s.units[StreamerUnit("Data", "A", 5000)].newest == (100, 10)


def test_malformed_counted_not_fatal(tmp_path):
    lines = unit_lines("Data", "A", 300001, [10] * 50, NOW)
    lines.insert(
        10, "path=/eos/cms/store/t0streamer/Data/A/000/300/001/x size=zz checksum=1 ctime=1.1 mtime=1.1"
    )
    lines.insert(20, "total nonsense")
    lines.insert(30, "path=/eos/cms/store/t0streamer/Data/A/000/300/001/y size=1 checksum=1 mtime=1.1")
    s = agg(write_dump(tmp_path / "d.gz", lines))
    assert s.malformed == 3
    assert s.units[StreamerUnit("Data", "A", 300001)].files == 50


def test_truncated_refused(tmp_path):
    lines = unit_lines("Data", "A", 300001, [10] * 2000, NOW)
    p = write_dump(tmp_path / "d.gz", lines)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(eosdump.DumpError, match="truncated"):
        agg(p)
    p.write_bytes(data[:-4])  # missing part of the trailer
    with pytest.raises(eosdump.DumpError):
        agg(p)


def test_corrupt_refused(tmp_path):
    p = tmp_path / "d.gz"
    p.write_bytes(b"this is not gzip at all" * 10)
    with pytest.raises(eosdump.DumpError, match="corrupt"):
        agg(p)


def test_too_old_refused(tmp_path):
    p = write_dump(tmp_path / "d.gz", unit_lines("Data", "A", 300001, [10], NOW))
    os.utime(p, (NOW - 48 * 3600 - 1, NOW - 48 * 3600 - 1))
    with pytest.raises(eosdump.DumpError, match="too old"):
        eosdump.aggregate(p, now=NOW)
    os.utime(p, (NOW - 48 * 3600, NOW - 48 * 3600))
    assert eosdump.aggregate(p, now=NOW).area_files == 1


def test_missing_refused(tmp_path):
    with pytest.raises(eosdump.DumpError):
        agg(tmp_path / "none.gz")


def test_empty_for_area_refused(tmp_path):
    p = write_dump(tmp_path / "d.gz", [line("/eos/cms/store/data/x", 1, NOW)])
    with pytest.raises(eosdump.DumpError, match="no file under"):
        agg(p)
    p = write_dump(tmp_path / "e.gz", b"")
    with pytest.raises(eosdump.DumpError):
        agg(p)


def test_multi_member_gzip(tmp_path):
    lines = unit_lines("Data", "A", 300001, list(range(1, 3001)), NOW)
    s = agg(write_dump(tmp_path / "d.gz", lines, members=4))
    assert s.units[StreamerUnit("Data", "A", 300001)].bytes == sum(range(1, 3001))


def test_transfertest_split(tmp_path):
    cut = (NOW - 7 * DAY, 0)
    lines = [
        line(file_path("TransferTest", "A", 7, 1), 10, (NOW - 7 * DAY - 1, 0)),
        line(file_path("TransferTest", "A", 7, 2), 20, (NOW - 7 * DAY, 0)),
        line(file_path("TransferTest", "A", 7, 3), 40, (NOW - 8 * DAY, 3)),
    ]
    s = agg(write_dump(tmp_path / "d.gz", lines), split_cutoff=cut)
    a = s.units[StreamerUnit("TransferTest", "A", 7)]
    assert (a.files, a.bytes, a.old_files, a.old_bytes, a.old_newest) == (
        3,
        70,
        2,
        50,
        (NOW - 7 * DAY - 1, 0),
    )


def test_fast_path_matches_record_generator(tmp_path):
    rnd = random.Random(7)
    lines = []
    for run in range(100, 160):
        for stream in ("A", "B"):
            label = rnd.choice(["Data", "Minidaq", "TransferTest"])
            for ls in range(rnd.randint(1, 300)):
                lines.append(
                    line(
                        file_path(label, stream, run, ls),
                        rnd.randint(0, 10**10),
                        (NOW - rnd.randint(0, 20 * DAY), rnd.randint(0, 10**9 - 1)),
                    )
                )
        lines.append(line(f"/eos/cms/store/data/{run}/file.root", 5, NOW))
        if run % 7 == 0:
            lines.append("broken line")
            lines.append(line(f"/eos/cms/store/t0streamer/Data/A/000/000/{run:03d}/sub/x", 3, NOW))
    # interleave a few folders
    lines[100], lines[5000] = lines[5000], lines[100]
    p = write_dump(tmp_path / "d.gz", lines)
    cut = (NOW - 7 * DAY, 0)
    s = agg(p, split_cutoff=cut)
    bad = [0]
    ref: dict = {}
    for rec in eosdump.iter_records(p, max_age=None, malformed=bad):
        from t0dqm.formats.streamer_names import parse_path

        pp = parse_path(rec.path)
        if not pp:
            continue
        a = ref.setdefault(pp[0], [0, 0, (-1, 0), 0, 0])
        a[0] += 1
        a[1] += rec.size
        a[2] = max(a[2], rec.mtime)
        if pp[0].label == "TransferTest" and rec.mtime < cut:
            a[3] += 1
            a[4] += rec.size
    assert bad[0] == s.malformed == 8
    assert s.unrecognised_files == 8 and s.other_area_files == 60
    assert {u: [a.files, a.bytes, a.newest, a.old_files, a.old_bytes] for u, a in s.units.items()} == ref


def test_iter_unit_files(tmp_path):
    lines = unit_lines("Data", "A", 1000, [1, 2], NOW) + unit_lines("Data", "B", 1000, [3], NOW)
    p = write_dump(tmp_path / "d.gz", lines)
    got = list(eosdump.iter_unit_files(p, lambda u: u.stream == "A", max_age=None))
    assert [r.size for _, r in got] == [1, 2]
    got = list(eosdump.iter_unit_files(p, lambda u: (NOW, 0), max_age=None))
    assert got == []


def test_gzip_helper_roundtrip(tmp_path):
    p = write_dump(tmp_path / "d.gz", ["a"])
    assert gzip.decompress(p.read_bytes()) == b"a\n"
