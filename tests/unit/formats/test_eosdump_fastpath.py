"""The C block scanner (and the pure-Python fallback) against a plain line-by-line reference,
malformed lines mixed in."""

from __future__ import annotations

import os
import random

import pytest

from t0dqm.formats import eosdump
from t0dqm.formats.streamer_names import parse_unit_dir

from .eosdump_helpers import DAY, NOW, scanner, write_dump  # noqa: F401 - scanner: autouse

AREA = b"/store/t0streamer/"
CUT = (NOW - 7 * DAY, 0)
TT = {"TransferTest", "TransferTestWithSafety"}


def _pair(text: bytes):
    s, dot, ns = text.partition(b".")
    return (int(s), int(ns)) if dot and s.isdigit() and ns.isdigit() else None


def reference(data: bytes) -> dict:
    """Independent line-by-line reading of the dump rules (no code shared with the fast path)."""
    out = {
        "lines": 0,
        "malformed": 0,
        "other": 0,
        "area_files": 0,
        "area_bytes": 0,
        "unrec": 0,
        "unrec_bytes": 0,
        "units": {},
    }
    for raw in data.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        out["lines"] += 1
        if AREA not in line:
            if line.startswith(b"path=/"):
                out["other"] += 1
            else:
                out["malformed"] += 1
            continue
        parts = line.rsplit(b" ", 4)
        ok = len(parts) == 5
        if ok:
            p, sz, ck, ct, mt = parts
            ok = (
                p.startswith(b"path=/")
                and sz.startswith(b"size=")
                and sz[5:].isdigit()
                and ck.startswith(b"checksum=")
                and ct.startswith(b"ctime=")
                and mt.startswith(b"mtime=")
                and _pair(ct[6:]) is not None
                and _pair(mt[6:]) is not None
            )
        if not ok:
            out["malformed"] += 1
            continue
        size, mtime = int(sz[5:]), _pair(mt[6:])
        d = p[5 : p.rfind(b"/")]
        if AREA not in d:
            out["other"] += 1
            continue
        out["area_files"] += 1
        out["area_bytes"] += size
        unit = parse_unit_dir(d.decode("utf-8", "surrogateescape"))
        if unit is None:
            out["unrec"] += 1
            out["unrec_bytes"] += size
            continue
        u = out["units"].setdefault(unit, [0, 0, (-1, 0), 0, 0, None])
        u[0] += 1
        u[1] += size
        u[2] = max(u[2], mtime)
        if unit.label in TT and mtime < CUT:
            u[3] += 1
            u[4] += size
            u[5] = mtime if u[5] is None else max(u[5], mtime)
    return out


def summary_dict(s: eosdump.DumpSummary) -> dict:
    return {
        "lines": s.lines,
        "malformed": s.malformed,
        "other": s.other_area_files,
        "area_files": s.area_files,
        "area_bytes": s.area_bytes,
        "unrec": s.unrecognised_files,
        "unrec_bytes": s.unrecognised_bytes,
        "units": {
            u: [a.files, a.bytes, a.newest, a.old_files, a.old_bytes, a.old_newest]
            for u, a in s.units.items()
        },
    }


ODD = [
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=zz checksum=1 ctime=1.1 mtime=1.1",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=1 checksum=1 mtime=1.1",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=1 checksum=1 ctime=1x.1 mtime=1.1",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=1 checksum=1 ctime=1.1 mtime=17000000000.1",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=1 checksum=1 ctime=1.1 mtime=1.1234567890",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=123456789012345678901 checksum=1 ctime=1.1 mtime=1.1",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=1.",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=a/b ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum= ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x y size=5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=2.5\r",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=2.5 extra",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/sub/x size=5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/\xff\xfe size=5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r} size=5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5\tchecksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=-5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=2.5.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x sise=5 checksum=1 ctime=1.1 mtime=2.5",
    b"path=/eos/cms/store/t0streamer/Data/A/000/300/{r}/x size=5 checksum=1 ctime=1.1 mtime=2:5",
    b"path=/eos/cms/store/data/x size=garbage",
    b"path=/eos/cms/store/data/x checksum=/store/t0streamer/ size=1",
    b"nonsense line /store/t0streamer/ here",
    b"total nonsense",
    b"",
    b"   ",
]


def make_dump(seed: int, lines: int = 40000) -> bytes:
    rnd = random.Random(seed)
    out: list[bytes] = []
    run = 300000
    while len(out) < lines:
        r = rnd.random()
        if r < 0.6:
            run += rnd.choice([1, 3, 1000])  # equal-length neighbouring folders
            label = rnd.choice(
                ["Data", "Data", "Minidaq", "TransferTest", "TransferTestWithSafety", "PrivateData"]
            )
            stream = rnd.choice(["A", "B", "PhysicsMuons", "Express"])
            prefix = rnd.choice(["/eos/cms", "/eos/cms", "", "/x y/eos"])
            d = f"{prefix}/store/t0streamer/{label}/{stream}/000/{run // 1000 % 1000:03d}/{run % 1000:03d}"
            for ls in range(rnd.randint(1, 400)):
                m = NOW - rnd.randint(0, 20 * DAY)
                ns = rnd.choice([0, 5, 40, rnd.randint(0, 10**9 - 1)])
                size = rnd.choice([0, 1, rnd.randint(0, 10**10), rnd.randint(0, 10**16 - 1)])
                ext = rnd.choice(["dat", "jsn"])
                out.append(
                    f"path={d}/run{run}_ls{ls:04d}_stream{stream}_StorageManager.{ext} size={size} "
                    f"checksum={rnd.getrandbits(32):08x} ctime={m}.{rnd.randint(0, 999)} "
                    f"mtime={m}.{ns}".encode()
                )
        elif r < 0.9:
            d = rnd.choice(
                ["/eos/cms/store/data/Run2023C/Muon0", "/eos/cms/store/user/x", "/eos/cms/store/mc"]
            )
            for _ in range(rnd.randint(1, 300)):
                out.append(
                    f"path={d}/{rnd.getrandbits(40):x}.root size={rnd.randint(0, 10**9)} checksum=ab "
                    f"ctime=1.1 mtime={NOW}.{rnd.randint(0, 9)}".encode()
                )
        else:
            for _ in range(rnd.randint(1, 5)):
                at = rnd.randrange(len(out) + 1)
                out.insert(at, rnd.choice(ODD).replace(b"{r}", f"{run % 1000:03d}".encode()))
    return b"\n".join(out) + rnd.choice([b"\n", b""])


def feed(data: bytes, rnd: random.Random) -> eosdump.DumpSummary:
    """Chunks cut at random line ends, some tiny, some with a leading newline or none at the end."""
    s = eosdump.DumpSummary(path="mem", dump_mtime=0.0)
    agg = eosdump._Aggregator(s, CUT, eosdump.TRANSFERTEST_LABELS)
    if not data.endswith(b"\n"):
        data += b"\n"
    i = 0
    while i < len(data):
        j = data.find(b"\n", min(len(data) - 1, i + rnd.choice([1, 50, 4096, 100000])))
        piece = data[i : j + 1]
        agg.chunk(rnd.choice([piece, b"\n" + piece, piece[:-1], bytearray(piece), memoryview(piece)]))
        i = j + 1
    return agg.finish()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_block_parser_matches_reference(seed):
    data = make_dump(seed)
    ref = reference(data)
    assert ref["malformed"] > 0 and ref["unrec"] > 0 and ref["other"] > 0
    got = summary_dict(feed(data, random.Random(seed)))
    assert got == ref


@pytest.mark.parametrize("seed,block", [(10, 1 << 16), (11, None), (12, 1 << 20), (13, 300)])
def test_aggregate_matches_reference(tmp_path, monkeypatch, seed, block):
    """Through the inflater child; lines cut across reads and blocks (300 B: lines longer than the
    buffer); multi-member gzip."""
    data = make_dump(seed, lines=120000 if block != 300 else 20000)
    p = write_dump(tmp_path / "d.gz", data, members=3)
    if block:
        monkeypatch.setattr(eosdump, "BLOCK_SIZE", block)
    s = eosdump.aggregate(p, max_age=None, split_cutoff=CUT)
    assert summary_dict(s) == reference(data)


def test_blocks_cut_lines_across_reads():
    r, w = os.pipe()
    data = b"".join(b"line %d %s\n" % (i, b"x" * (i % 97)) for i in range(20000)) + b"last"
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(r)
        rnd = random.Random(5)
        i = 0
        while i < len(data):
            n = rnd.choice([1, 7, 1000, 65536])
            os.write(w, data[i : i + n])
            i += n
        os._exit(0)
    os.close(w)
    try:
        pieces = [bytes(p) for p in eosdump._blocks(r, 5000)]
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert all(p.endswith(b"\n") for p in pieces) and len(pieces) > 100
    assert b"".join(pieces) == data + b"\n"


# ------------------------------------------------------------------------ edge cases of the C scanner

GOOD = b"path=/eos/cms/store/t0streamer/Data/A/000/300/001/f size=7 checksum=ab ctime=1.2 mtime=1700000000.5"


def _check(data: bytes) -> dict:
    got = summary_dict(feed(data, random.Random(0)))
    assert got == reference(data)
    return got


def test_line_exactly_at_block_end():
    s = eosdump.DumpSummary(path="mem", dump_mtime=0.0)
    agg = eosdump._Aggregator(s, CUT, eosdump.TRANSFERTEST_LABELS)
    agg.chunk(GOOD)  # no newline: the buffer end ends the line
    agg.chunk(GOOD + b"\n")
    agg.chunk(b"\n\n" + GOOD + b"\n\n")
    agg.finish()
    assert s.lines == 3 and s.area_files == 3 and s.area_bytes == 21 and s.malformed == 0


def test_very_long_path():
    d = b"/eos/cms/store/t0streamer/Data/A/000/300/001"
    long_dir = b"/eos" + b"/x" * 50000 + b"/store/t0streamer/Data/A/000/300/002"
    data = b"\n".join(
        [
            GOOD,
            b"path=" + d + b"/" + b"y" * 200000 + b" size=3 checksum=1 ctime=1.1 mtime=2.2",
            b"path=" + long_dir + b"/f size=4 checksum=1 ctime=1.1 mtime=2.2",
            GOOD,
        ]
    )
    got = _check(data)
    assert got["area_files"] == 4 and got["malformed"] == 0


@pytest.mark.parametrize("field", [b"size=", b"ctime=", b"ctime=1.", b"mtime=", b"mtime=1."])
def test_long_numbers_not_overflowed(field):
    """19+ digit numbers (and over 9 nanosecond digits) are left to the line parser, exactly."""
    lines = [GOOD]
    for n in (18, 19, 20, 40):
        digits = b"9" * n
        line = GOOD
        if field == b"size=":
            line = line.replace(b"size=7", b"size=" + digits)
        elif field == b"ctime=":
            line = line.replace(b"ctime=1.2", b"ctime=" + digits + b".2")
        elif field == b"ctime=1.":
            line = line.replace(b"ctime=1.2", b"ctime=1." + digits)
        elif field == b"mtime=":
            line = line.replace(b"mtime=1700000000.5", b"mtime=" + digits + b".5")
        else:
            line = line.replace(b"mtime=1700000000.5", b"mtime=1700000000." + digits)
        lines.append(line)
    got = _check(b"\n".join(lines))
    assert got["area_files"] == 5 and got["malformed"] == 0


def test_byte_sum_beyond_64_bits():
    big = GOOD.replace(b"size=7", b"size=999999999999999999")
    got = _check(b"\n".join([big] * 40 + [GOOD]))
    assert got["area_bytes"] == 40 * 999999999999999999 + 7


def test_embedded_nul_and_odd_bytes():
    lines = [
        GOOD,
        GOOD.replace(b"/f ", b"/f\x00g "),
        GOOD.replace(b"checksum=ab", b"checksum=a\x00b"),
        GOOD + b"\x00",
        b"\x00" + GOOD,
        b"path=/eos/cms/store/data/x\x00 size=1",
        b"\x00",
        GOOD.replace(b"/f ", b"/\xc3\xa9 "),
        GOOD.replace(b"/f ", b"/f\x7f "),
        GOOD + b"\r",
        GOOD.replace(b" size", b"  size"),
        GOOD.replace(b"checksum=ab", b"checksum=" + b"a" * 200),
        GOOD.replace(b"Data/A", b"Data/A/../B"),
    ]
    got = _check(b"\n".join(lines))
    assert got["area_files"] >= 3


def test_area_only_in_file_name_and_cut_extremes():
    lines = [
        b"path=/eos/cms/store/data/store/t0streamer/ size=1 checksum=1 ctime=1.1 mtime=2.2",
        b"path=/eos/cms/store/data/x/store/t0streamer/f size=1 checksum=1 ctime=1.1 mtime=2.2",
        b"path=/store/t0streamer/ size=1 checksum=1 ctime=1.1 mtime=2.2",
        GOOD,
    ]
    data = b"\n".join(lines)
    _check(data)
    for cut in [(2**70, 0), (-(2**70), 0), (1700000000, 2**70), (1700000000, 5), (1700000000, 6)]:
        s = eosdump.DumpSummary(path="mem", dump_mtime=0.0)
        agg = eosdump._Aggregator(s, cut, frozenset({"Data"}))
        agg.chunk(data)
        a = next(iter(agg.finish().units.values()))
        assert a.old_files == int(cut > (1700000000, 5))
