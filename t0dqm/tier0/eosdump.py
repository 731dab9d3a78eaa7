"""Streaming reader of the EOS namespace dump (``eos_files.txt.gz``).

Lines: ``path=<abs> size=<bytes> checksum=<hex> ctime=<s>.<ns> mtime=<s>.<ns>`` (nanoseconds not
zero-padded, so times are parsed as two integers, never as a float).

The dump is never loaded whole: a child process (``t0dqm.tier0.gzinflate``, ISA-L) inflates it and deals
complete-line segments to this process and to ``default_workers()`` parser processes; each parses 8 MiB
blocks with numpy (``_Block``) and the per-folder aggregates are merged. Anything unusual falls back to
the line-by-line parser, so the result is the same as parsing every line with ``parse_line``.

Refusals (``DumpError``, nothing should be deleted): truncated or corrupt gzip, dump older than the
allowed age, no line in the streamer area. Malformed lines are counted, never fatal alone.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from t0dqm.tier0.streamer_names import AREA, TRANSFERTEST_LABELS, StreamerUnit, parse_unit_dir

Mtime = tuple[int, int]
DEFAULT_MAX_AGE = 48 * 3600
BLOCK_SIZE = 8 << 20
_AREA_B = AREA.encode()


class DumpError(Exception):
    """The dump cannot be trusted (truncated, too old, empty for the area): nothing may be deleted."""


@dataclass(frozen=True)
class Record:
    path: str
    size: int
    checksum: str
    ctime: Mtime
    mtime: Mtime


@dataclass
class UnitAgg:
    """Running aggregate of one folder (``old_*``: files strictly older than the split cutoff)."""

    files: int = 0
    bytes: int = 0
    newest: Mtime = (-1, 0)
    old_files: int = 0
    old_bytes: int = 0
    old_newest: Mtime | None = None


@dataclass
class DumpSummary:
    """What one pass over a dump found."""

    path: str
    dump_mtime: float
    units: dict[StreamerUnit, UnitAgg] = field(default_factory=dict)
    lines: int = 0
    malformed: int = 0
    area_files: int = 0
    area_bytes: int = 0
    other_area_files: int = 0
    unrecognised_files: int = 0  # in the streamer area but not in a unit folder
    unrecognised_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"dump": self.path, "dump_mtime": self.dump_mtime, "lines": self.lines,
                "malformed": self.malformed, "area_files": self.area_files, "area_bytes": self.area_bytes,
                "other_area_files": self.other_area_files, "units": len(self.units),
                "unrecognised_files": self.unrecognised_files, "unrecognised_bytes": self.unrecognised_bytes}


# ---------------------------------------------------------------------------------------- input checks

def check_dump(path: str | os.PathLike[str], *, max_age: float | None = DEFAULT_MAX_AGE,
               now: float | None = None) -> float:
    """Return the dump's mtime (symlinks followed); DumpError if missing or older than ``max_age`` s."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DumpError(f"dump {path} cannot be read: {exc.strerror or exc}") from None
    now = time.time() if now is None else now
    if max_age is not None and now - st.st_mtime > max_age:
        hours = (now - st.st_mtime) / 3600
        raise DumpError(f"dump {path} is too old: written {hours:.1f} h ago, limit {max_age / 3600:.1f} h")
    return st.st_mtime


def _set_pipe_size(fd: int, size: int = 1 << 20) -> None:
    try:  # Linux F_SETPIPE_SZ: fewer, larger transfers from the inflater
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (OSError, ImportError, ValueError):  # pragma: no cover - not Linux, or above the limit
        pass


def _blocks(fd: int, block: int | None = None) -> Iterator[bytes]:
    """Complete lines read from ``fd`` in pieces of about ``block`` bytes, each starting with a newline
    (so every line, the first included, is preceded by one); a last unterminated line gets one."""
    block = block or BLOCK_SIZE
    rest = b"\n"
    while True:
        parts = [rest]
        size = len(rest)
        eof = False
        want = block if len(rest) < block else len(rest) + block  # a line longer than a block: read on
        while size < want:
            data = os.read(fd, want - size)
            if not data:
                eof = True
                break
            parts.append(data)
            size += len(data)
        piece = b"".join(parts)
        if eof:
            if len(piece) > 1:
                yield piece if piece.endswith(b"\n") else piece + b"\n"
            return
        cut = piece.rfind(b"\n") + 1
        if cut <= 1:  # one line longer than the block: keep reading
            rest = piece
            continue
        rest = b"\n" + piece[cut:]
        yield piece[:cut]


class _Inflater:
    """The child process inflating the dump (``t0dqm.tier0.gzinflate``) into ``outputs`` pipes."""

    def __init__(self, path: str | os.PathLike[str], outputs: int = 1):
        if not os.path.exists(path):
            raise DumpError(f"dump {path} cannot be read: no such file")
        self.path = path
        pipes = [os.pipe() for _ in range(outputs)]
        for r, _w in pipes:
            _set_pipe_size(r)
        self.read_fds = [r for r, _w in pipes]
        write_fds = [w for _r, w in pipes]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "t0dqm.tier0.gzinflate", os.fspath(path), *map(str, write_fds)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=write_fds)
        except BaseException:
            for fd in self.read_fds:
                os.close(fd)
            raise
        finally:
            for fd in write_fds:
                os.close(fd)

    def check(self) -> None:
        """Wait for the child; DumpError unless every gzip member ended cleanly."""
        assert self.proc.stderr is not None
        err = self.proc.stderr.read().decode("utf-8", "replace").strip()
        rc = self.proc.wait()
        path = self.path
        if rc == 3:
            raise DumpError(f"dump {path} is truncated ({err or 'gzip stream ends early'})")
        if rc == 4:
            raise DumpError(f"dump {path} is corrupt ({err or 'gzip error'})")
        if rc == 5:
            raise DumpError(f"dump {path} cannot be read: {err}")
        if rc != 0:
            raise DumpError(f"dump {path}: inflating failed (exit status {rc}): {err}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        for fd in self.read_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fds = []


def iter_chunks(path: str | os.PathLike[str], block: int | None = None) -> Iterator[bytes]:
    """Complete lines of the inflated dump in pieces of about ``block`` bytes, each starting with a
    newline. Inflated by a child process while the caller parses (ISA-L holds the GIL, so a thread
    would not overlap). DumpError when the gzip stream is truncated or corrupt, raised before the
    last piece is handed out."""
    inf = _Inflater(path)
    try:
        pending = None
        for piece in _blocks(inf.read_fds[0], block):
            if pending is not None:
                yield pending
            pending = piece
        inf.check()
        if pending is not None:
            yield pending
    finally:
        inf.close()


# ------------------------------------------------------------------------------------------ line parser

def _pair(text: bytes) -> Mtime | None:
    s, dot, ns = text.partition(b".")
    if not dot or not s.isdigit() or not ns.isdigit():
        return None
    return (int(s), int(ns))


def parse_line(line: bytes | str) -> Record | None:
    """One dump line as a Record; None when malformed."""
    if isinstance(line, str):
        line = line.encode("utf-8", "surrogateescape")
    line = line.rstrip(b"\r\n")
    parts = line.rsplit(b" ", 4)
    if len(parts) != 5:
        return None
    p, sz, ck, ct, mt = parts
    if not (p.startswith(b"path=/") and sz.startswith(b"size=") and ck.startswith(b"checksum=")
            and ct.startswith(b"ctime=") and mt.startswith(b"mtime=")):
        return None
    size = sz[5:]
    if not size.isdigit():
        return None
    ctime = _pair(ct[6:])
    mtime = _pair(mt[6:])
    if ctime is None or mtime is None:
        return None
    return Record(path=p[5:].decode("utf-8", "surrogateescape"), size=int(size),
                  checksum=ck[9:].decode("ascii", "replace"), ctime=ctime, mtime=mtime)


def iter_records(path: str | os.PathLike[str], *, max_age: float | None = DEFAULT_MAX_AGE,
                 now: float | None = None, malformed: list[int] | None = None) -> Iterator[Record]:
    """Generator of every well-formed record; ``malformed[0]`` (if given) counts the others."""
    check_dump(path, max_age=max_age, now=now)
    for chunk in iter_chunks(path):
        for line in chunk.split(b"\n"):
            if not line:
                continue
            rec = parse_line(line)
            if rec is None:
                if malformed is not None:
                    malformed[0] += 1
                continue
            yield rec


# ------------------------------------------------------------------------------------------- aggregator

class _Aggregator:
    def __init__(self, summary: DumpSummary, split_cutoff: Mtime | None, split_labels: frozenset[str]):
        self.s = summary
        self.split_cutoff = split_cutoff
        self.split_labels = split_labels
        self.dirs: dict[bytes, tuple[StreamerUnit | None, UnitAgg | None, bool]] = {}

    def _dir(self, d: bytes) -> tuple[StreamerUnit | None, UnitAgg | None, bool]:
        """(unit, aggregate, split per file) of a folder given as bytes (without "path=")."""
        hit = self.dirs.get(d)
        if hit is None:
            if _AREA_B not in d:
                hit = (None, None, False)
            else:
                unit = parse_unit_dir(d.decode("utf-8", "surrogateescape"))
                if unit is None:
                    hit = (None, UnitAgg(), False)  # in the area, not a unit folder
                else:
                    agg = self.s.units.setdefault(unit, UnitAgg())
                    split = self.split_cutoff is not None and unit.label in self.split_labels
                    hit = (unit, agg, split)
            self.dirs[d] = hit
        return hit

    def add(self, d: bytes, size: int, mtime: Mtime) -> None:
        unit, agg, split = self._dir(d)
        s = self.s
        if agg is None:
            s.other_area_files += 1
            return
        s.area_files += 1
        s.area_bytes += size
        if unit is None:
            s.unrecognised_files += 1
            s.unrecognised_bytes += size
            return
        agg.files += 1
        agg.bytes += size
        if mtime > agg.newest:
            agg.newest = mtime
        if split and mtime < self.split_cutoff:  # type: ignore[operator]
            agg.old_files += 1
            agg.old_bytes += size
            if agg.old_newest is None or mtime > agg.old_newest:
                agg.old_newest = mtime

    def slow(self, seg: bytes) -> None:
        """Line by line. Lines that do not mention the area are only required to start with path=/."""
        s = self.s
        for line in seg.split(b"\n"):
            if not line:
                continue
            s.lines += 1
            if _AREA_B not in line:
                if line.startswith(b"path=/"):
                    s.other_area_files += 1
                else:
                    s.malformed += 1
                continue
            rec = parse_line(line)
            if rec is None:
                s.malformed += 1
                continue
            p = rec.path.encode("utf-8", "surrogateescape")
            self.add(p[:p.rfind(b"/")], rec.size, rec.mtime)

    def finish(self) -> DumpSummary:
        """Drop folders looked up for lines that all turned out malformed."""
        for unit in [u for u, a in self.s.units.items() if not a.files]:
            del self.s.units[unit]
        return self.s

    def chunk(self, c: bytes) -> None:
        """Complete lines (``c`` starts with a newline); see ``_Block``."""
        if not c.startswith(b"\n"):
            c = b"\n" + c
        if not c.endswith(b"\n"):
            c += b"\n"
        _Block(self, c).run()


_U = np.uint64
_ONE = _U(1)
_ZEROS = _U(0x3030303030303030)  # "00000000"
_HIGH = _U(0xF0F0F0F0F0F0F0F0)
_SIX = _U(0x0606060606060606)
_M1 = _U(0x000000FF000000FF)
_MUL1 = _U(100 + (1000000 << 32))
_MUL2 = _U(1 + (10000 << 32))
_LOW32 = _U(0xFFFFFFFF)


def _word(text: bytes) -> tuple[np.uint64, np.uint64]:
    """(value, mask) of up to 8 bytes as a little-endian word, to compare with ``_loads``."""
    return _U(int.from_bytes(text.ljust(8, b"\0"), "little")), _U((1 << (8 * len(text))) - 1)


_PATH = _word(b"path=/")
_SIZE = _word(b" size=")
_CHECKSUM = _word(b"checksum")  # at space + 1, then "=" at space + 9
_CTIME = _word(b" ctime=")
_MTIME = _word(b" mtime=")


def _loads(c: bytes) -> np.ndarray:
    """Unaligned little-endian 8-byte words: ``w[i]`` holds ``c[i:i + 8]``."""
    return np.ndarray((len(c) - 7,), dtype="<u8", buffer=c, offset=0, strides=(1,))


def _has(w: np.ndarray, at: np.ndarray, word: tuple[np.uint64, np.uint64]) -> np.ndarray:
    return (w[np.minimum(at, len(w) - 1)] & word[1]) == word[0]


def _eight(x: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SWAR: the last ``length`` (0-8) bytes of each word as decimal digits: (values, all digits)."""
    fill = (_ONE << (_U(8) * (_U(8) - length.astype(np.uint64)))) - _ONE  # bytes before the field
    x = (x & ~fill) | (_ZEROS & fill)
    ok = ((x & _HIGH) == _ZEROS) & (((x + _SIX) & _HIGH) == _ZEROS)
    v = x - _ZEROS
    v = v * _U(10) + (v >> _U(8))
    v = (((v & _M1) * _MUL1) + (((v >> _U(16)) & _M1) * _MUL2)) >> _U(32)
    return v & _LOW32, ok


def _number(w: np.ndarray, end: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal field ``c[end - length:end]`` (1 to 16 digits): (int64 values, valid)."""
    valid = (length >= 1) & (length <= 16) & (end >= 16)
    length = np.clip(length, 0, 16)
    lo, ok = _eight(w[np.maximum(end - 8, 0)], np.minimum(length, 8))
    hi, ok2 = _eight(w[np.maximum(end - 16, 0)], np.maximum(length - 8, 0))
    return (hi * _U(10**8) + lo).astype(np.int64), valid & ok & ok2


class _Block:
    """One piece of complete lines (starting with a newline), parsed with numpy.

    Positions of the bytes below ``0`` (newline, space, slash, dot...) give each line's structure. A
    line is *regular* when the last six of them are the spaces before size=, checksum= and ctime=, the
    ctime dot, the space before mtime= and the mtime dot, and it starts with ``path=/``: its path is
    then exactly what ``parse_line`` takes (spaces before the last slash included) and only the path
    can contain the streamer area. Regular lines are grouped into runs of one folder (same folder length
    and last 8 bytes, then checked exactly with one ``bytes.count`` per run); folders outside the area
    only count lines. In the area, field names are checked and sizes and times parsed with SWAR digit
    arithmetic on 8-byte words. Any other line (blank lines aside) goes to the line-by-line parser,
    which defines the result, so the outcome is the same as parsing every line with ``parse_line``.
    """

    def __init__(self, agg: _Aggregator, c: bytes):
        self.agg = agg
        self.c = c
        self.a = np.frombuffer(c, np.uint8)
        self.w = _loads(c)

    def _slow(self, starts: np.ndarray, ends: np.ndarray) -> None:
        c = self.c
        self.agg.slow(b"\n".join(c[x:y] for x, y in zip(starts.tolist(), ends.tolist(), strict=True)))

    def run(self) -> None:
        a, c, w = self.a, self.c, self.w
        if len(c) < 16:
            self.agg.slow(c)
            return
        pos = np.flatnonzero(a < 48)
        kind = a[pos]
        nli = np.flatnonzero(kind == 10)
        if len(nli) < 2:
            return
        if len(kind) < 7:  # too few separators for the vector checks below (odd lines only)
            self.agg.slow(c)
            return
        e = nli[1:]
        starts = pos[nli[:-1]] + 1
        ok = (e - nli[:-1]) > 6
        ei = np.where(ok, e, 6)
        ok &= ((kind[ei - 1] == 46) & (kind[ei - 2] == 32) & (kind[ei - 3] == 46) & (kind[ei - 4] == 32)
               & (kind[ei - 5] == 32) & (kind[ei - 6] == 32))
        ok &= _has(w, starts, _PATH)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            ends = pos[e[bad]]
            nonblank = ends > starts[bad]
            if nonblank.any():
                self._slow(starts[bad][nonblank], ends[nonblank])
            reg = np.flatnonzero(ok)
            if not len(reg):
                return
            ei = ei[reg]
            starts = starts[reg]
        else:
            reg = np.arange(len(e))
        s0 = pos[ei - 6]
        slashes = pos[kind == 47]
        last = slashes[np.searchsorted(slashes, s0) - 1]  # "path=/": one before s0 in the line
        dl = last - starts
        tail = w[np.maximum(last - 8, 0)]
        brk = np.ones(len(reg), bool)
        brk[1:] = (reg[1:] != reg[:-1] + 1) | (dl[1:] != dl[:-1]) | (tail[1:] != tail[:-1])
        gstart = np.flatnonzero(brk).tolist()
        gend = gstart[1:] + [len(reg)]
        st_l = starts.tolist()
        last_l = last.tolist()
        en_l = pos[ei].tolist()
        s = self.agg.s
        area: list[tuple[int, int, StreamerUnit | None, UnitAgg, bool]] = []
        for i, j in zip(gstart, gend, strict=True):
            d = c[st_l[i] + 5:last_l[i]]
            if j - i > 1 and c.count(b"\npath=" + d + b"/", st_l[i] - 1, en_l[j - 1] + 1) != j - i:
                spans = [(k, k + 1) for k in range(i, j)]  # folders of equal length and tail: one by one
            else:
                spans = [(i, j)]
            for i2, j2 in spans:
                if i2 != i:
                    d = c[st_l[i2] + 5:last_l[i2]]
                unit, agg, split = self.agg._dir(d)
                if agg is None:
                    s.lines += j2 - i2
                    s.other_area_files += j2 - i2
                else:
                    area.append((i2, j2, unit, agg, split))
        if area:
            self._area(area, pos, ei, starts)

    def _area(self, groups: list[tuple[int, int, StreamerUnit | None, UnitAgg, bool]], pos: np.ndarray,
              ei: np.ndarray, starts: np.ndarray) -> None:
        """Lines of folders in the streamer area: field names, sizes and times, then per-folder sums."""
        w, agg = self.w, self.agg
        s = agg.s
        if len(groups) == 1:
            sel = slice(groups[0][0], groups[0][1])
        else:
            sel = np.concatenate([np.arange(i, j) for i, j, *_ in groups])
        ei = ei[sel]
        s0, s1, s2, dc, s3, dm, end = (pos[ei - k] for k in (6, 5, 4, 3, 2, 1, 0))
        ok = (_has(w, s0, _SIZE) & _has(w, s1 + 1, _CHECKSUM) & (self.a[s1 + 9] == 61)
              & _has(w, s2, _CTIME) & _has(w, s3, _MTIME))
        sizes, v = _number(w, s1, s1 - s0 - 6)
        ok &= v
        secs, v = _number(w, dm, dm - s3 - 7)
        ok &= v & (secs < 9_000_000_000)
        nss, v = _number(w, end, end - dm - 1)
        ok &= v & (end - dm - 1 <= 9)
        ok &= _number(w, dc, dc - s2 - 7)[1] & _number(w, s3, s3 - dc - 1)[1]
        key = secs * 10**9 + nss
        if not ok.all():  # odd lines (bad fields, long numbers, far future): the line parser decides
            bad = np.flatnonzero(~ok)
            self._slow(starts[sel][bad], end[bad])
            sizes[bad] = 0
            key[bad] = -1
        lens = [j - i for i, j, *_ in groups]
        offs = np.zeros(len(groups), np.int64)
        np.cumsum(lens[:-1], out=offs[1:])
        files = np.add.reduceat(ok.astype(np.int64), offs).tolist()
        if int(sizes.max()) * len(sizes) < 2**63:
            total = np.add.reduceat(sizes, offs).tolist()
        else:  # pragma: no cover - petabyte files: exact Python sums
            total = [sum(sizes[o:o + n].tolist()) for o, n in zip(offs.tolist(), lens, strict=True)]
        newest = np.maximum.reduceat(key, offs).tolist()
        cut = None
        if agg.split_cutoff is not None:
            cut = agg.split_cutoff[0] * 10**9 + agg.split_cutoff[1]
            cut = min(max(cut, -(2**63)), 2**63 - 1)
        for g, (_i, _j, unit, ua, split) in enumerate(groups):
            m = files[g]
            if not m:
                continue
            size = total[g]
            s.lines += m
            s.area_files += m
            s.area_bytes += size
            if unit is None:
                s.unrecognised_files += m
                s.unrecognised_bytes += size
                continue
            ua.files += m
            ua.bytes += size
            best = divmod(newest[g], 10**9)
            if best > ua.newest:
                ua.newest = best
            if split and cut is not None:
                o = int(offs[g])
                kg = key[o:o + lens[g]]
                old = ok[o:o + lens[g]] & (kg < cut)
                if old.any():
                    ua.old_files += int(old.sum())
                    ua.old_bytes += sum(sizes[o:o + lens[g]][old].tolist())
                    t = divmod(int(kg[old].max()), 10**9)
                    if ua.old_newest is None or t > ua.old_newest:
                        ua.old_newest = t


def _merge(into: DumpSummary, part: DumpSummary) -> None:
    for name in ("lines", "malformed", "area_files", "area_bytes", "other_area_files", "unrecognised_files",
                 "unrecognised_bytes"):
        setattr(into, name, getattr(into, name) + getattr(part, name))
    for unit, a in part.units.items():
        b = into.units.get(unit)
        if b is None:
            into.units[unit] = a
            continue
        b.files += a.files
        b.bytes += a.bytes
        b.newest = max(b.newest, a.newest)
        b.old_files += a.old_files
        b.old_bytes += a.old_bytes
        if a.old_newest is not None and (b.old_newest is None or a.old_newest > b.old_newest):
            b.old_newest = a.old_newest


def default_workers() -> int:
    """Parser processes besides the caller: one per CPU beyond the two (inflater and caller), at least
    one when there are two CPUs (the inflater needs less than a core)."""
    env = os.environ.get("T0DQM_DUMP_WORKERS")
    if env:
        return max(0, int(env))
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if n < 2 else min(max(1, n - 2), 7)


def aggregate(
    path: str | os.PathLike[str],
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
    split_cutoff: Mtime | None = None,
    split_labels: frozenset[str] = TRANSFERTEST_LABELS,
    require_area: bool = True,
    workers: int | None = None,
) -> DumpSummary:
    """One streaming pass: per-unit files, bytes, newest mtime (and the part older than
    ``split_cutoff`` for ``split_labels``). DumpError on truncation, age, or no line in the area.

    The inflater child deals complete lines to this process and to ``workers`` parser processes
    (default ``default_workers()``); their aggregates are merged (sums and maxima, so the result does
    not depend on how the lines were dealt)."""
    mtime = check_dump(path, max_age=max_age, now=now)
    summary = DumpSummary(path=os.fspath(path), dump_mtime=mtime)
    agg = _Aggregator(summary, split_cutoff, split_labels)
    workers = default_workers() if workers is None else workers
    inf = _Inflater(path, outputs=1 + workers)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        cut = [] if split_cutoff is None else [str(split_cutoff[0]), str(split_cutoff[1])]
        for fd in inf.read_fds[1:]:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "t0dqm.tier0.eosdump", "worker", ",".join(sorted(split_labels)), *cut],
                stdin=fd, stdout=subprocess.PIPE))
            os.close(fd)
        del inf.read_fds[1:]
        for chunk in _blocks(inf.read_fds[0]):
            agg.chunk(chunk)
        agg.finish()
        inf.check()
        for proc in procs:
            assert proc.stdout is not None
            data = proc.stdout.read()
            if proc.wait() != 0:
                raise DumpError(f"dump {path}: a parser process failed (exit status {proc.returncode})")
            _merge(summary, pickle.loads(data))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        inf.close()
    for a in summary.units.values():
        if a.newest == (-1, 0):  # pragma: no cover - a unit always has a file
            a.newest = (0, 0)
    if require_area and summary.area_files == 0:
        raise DumpError(f"dump {path} has no file under {AREA} ({summary.lines} lines, "
                        f"{summary.malformed} malformed): refusing to act on it")
    return summary


def _worker(args: list[str]) -> int:
    """``worker LABELS [CUT_S CUT_NS]``: aggregate the lines on stdin, pickle the summary to stdout."""
    labels = frozenset(x for x in args[0].split(",") if x)
    cut = (int(args[1]), int(args[2])) if len(args) >= 3 else None
    summary = DumpSummary(path="", dump_mtime=0.0)
    agg = _Aggregator(summary, cut, labels)
    for chunk in _blocks(0):
        agg.chunk(chunk)
    agg.finish()
    sys.stdout.buffer.write(pickle.dumps(summary, protocol=pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


def iter_unit_files(
    path: str | os.PathLike[str],
    select: Callable[[StreamerUnit], bool | Mtime | None],
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
) -> Iterator[tuple[StreamerUnit, Record]]:
    """Second pass: records of the files of selected units. ``select(unit)`` returns False/None to
    skip the unit, True for all its files, or an mtime cutoff to yield only files strictly older."""
    check_dump(path, max_age=max_age, now=now)
    cache: dict[bytes, tuple[StreamerUnit | None, bool | Mtime | None]] = {}
    for chunk in iter_chunks(path):
        if _AREA_B not in chunk:
            continue
        for line in chunk.split(b"\n"):
            if _AREA_B not in line:
                continue
            sp = line.rfind(b" size=")
            d = line[5:line.rfind(b"/", 0, sp)] if sp > 0 else b""
            hit = cache.get(d)
            if hit is None:
                unit = parse_unit_dir(d.decode("utf-8", "surrogateescape")) if d else None
                hit = (unit, select(unit) if unit else None)
                cache[d] = hit
            unit, sel = hit
            if unit is None or not sel:
                continue
            rec = parse_line(line)
            if rec is None:
                continue
            if sel is True or rec.mtime < sel:
                yield unit, rec


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        from t0dqm.tier0.eosdump import _worker as worker  # pickled classes from the module, not __main__

        sys.exit(worker(sys.argv[2:]))
    sys.exit("usage: python -m t0dqm.tier0.eosdump worker LABELS [CUT_S CUT_NS]")
