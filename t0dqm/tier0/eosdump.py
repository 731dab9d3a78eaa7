"""Streaming reader of the EOS namespace dump (``eos_files.txt.gz``).

Lines: ``path=<abs> size=<bytes> checksum=<hex> ctime=<s>.<ns> mtime=<s>.<ns>`` (nanoseconds not
zero-padded, so times are parsed as two integers, never as a float).

The dump is never loaded whole: a child process (``t0dqm.tier0.gzinflate``, ISA-L) inflates it into a
pipe; 4 MiB pieces of complete lines are read by pyarrow's CSV reader and grouped by folder with
pyarrow compute functions in ``default_workers()`` threads (``_parse_block``), and the small per-folder
aggregates are merged here. Anything unusual goes to the line-by-line parser, so the result is the
same as parsing every line with ``parse_line``.

Refusals (``DumpError``, nothing should be deleted): truncated or corrupt gzip, dump older than the
allowed age, no line in the streamer area. Malformed lines are counted, never fatal alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from t0dqm.tier0.streamer_names import AREA, TRANSFERTEST_LABELS, StreamerUnit, parse_unit_dir

Mtime = tuple[int, int]
DEFAULT_MAX_AGE = 48 * 3600
BLOCK_SIZE = 4 << 20
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
    """The child process inflating the dump (``t0dqm.tier0.gzinflate``) into a pipe (``read_fd``)."""

    def __init__(self, path: str | os.PathLike[str]):
        if not os.path.exists(path):
            raise DumpError(f"dump {path} cannot be read: no such file")
        self.path = path
        r, w = os.pipe()
        _set_pipe_size(r)
        self.read_fd = r
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "t0dqm.tier0.gzinflate", os.fspath(path), str(w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=[w])
        except BaseException:
            os.close(r)
            raise
        finally:
            os.close(w)

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
        if self.read_fd >= 0:
            os.close(self.read_fd)
            self.read_fd = -1


def iter_chunks(path: str | os.PathLike[str], block: int | None = None) -> Iterator[bytes]:
    """Complete lines of the inflated dump in pieces of about ``block`` bytes, each starting with a
    newline. Inflated by a child process while the caller parses (ISA-L holds the GIL, so a thread
    would not overlap). DumpError when the gzip stream is truncated or corrupt, raised before the
    last piece is handed out."""
    inf = _Inflater(path)
    try:
        pending = None
        for piece in _blocks(inf.read_fd, block):
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
        """Complete lines (a piece from ``_blocks``); see ``_parse_block``."""
        self.merge(_parse_block(c, self.split_key()))

    def split_key(self) -> int | None:
        """The split cutoff as ``s * 10**9 + ns``, clipped to int64 (keys are below 9 * 10**18)."""
        if self.split_cutoff is None:
            return None
        cut = self.split_cutoff[0] * 10**9 + self.split_cutoff[1]
        return min(max(cut, -(2**63)), 2**63 - 1)

    def merge(self, part: _Part) -> None:
        """Fold one piece's per-folder aggregates (and its odd lines, line by line) into the summary."""
        s = self.s
        s.lines += part.other + part.malformed
        s.other_area_files += part.other
        s.malformed += part.malformed
        for d, m, size, newest, old_m, old_size, old_newest in part.groups:
            unit, ua, split = self._dir(d)
            s.lines += m
            if ua is None:
                s.other_area_files += m
                continue
            s.area_files += m
            s.area_bytes += size
            if unit is None:
                s.unrecognised_files += m
                s.unrecognised_bytes += size
                continue
            ua.files += m
            ua.bytes += size
            best = divmod(newest, 10**9)
            if best > ua.newest:
                ua.newest = best
            if split and old_m:
                ua.old_files += old_m
                ua.old_bytes += old_size
                t = divmod(old_newest, 10**9)
                if ua.old_newest is None or t > ua.old_newest:
                    ua.old_newest = t
        for line in part.slow:
            self.slow(line)


# ---------------------------------------------------------------------------- native (pyarrow) block parser

_COLUMNS = ["p", "s", "k", "c", "m"]  # path=, size=, checksum=, ctime=, mtime=
_READ = pcsv.ReadOptions(column_names=_COLUMNS, use_threads=False, block_size=1 << 26)
_CONVERT = pcsv.ConvertOptions(column_types=dict.fromkeys(_COLUMNS, pa.string()), check_utf8=False,
                               strings_can_be_null=False, quoted_strings_can_be_null=False)
_AREA_S = AREA
_CTIME_RE = r"^ctime=[0-9]{1,18}\.[0-9]{1,18}$"  # as _pair_digits checks them
_MTIME_RE = r"^mtime=[0-9]{1,18}\.[0-9]{1,18}$"
_LOW = (1 << 32) - 1


@dataclass
class _Part:
    """What one piece of lines gave: counts of lines outside the area (``other``: starting with path=/,
    ``malformed``: not), per-folder aggregates of strict lines mentioning the area in their path
    (folder bytes with "path=" cut, files, bytes, newest key, and files / bytes / newest key of those
    older than the split cutoff), and the lines left to the line-by-line parser."""

    other: int = 0
    malformed: int = 0
    groups: list[tuple[bytes, int, int, int, int, int, int]] = field(default_factory=list)
    slow: list[bytes] = field(default_factory=list)


def _odd_lines(c: bytes) -> tuple[bytes, list[bytes]]:
    """Split off lines the CSV reader would read differently from ``parse_line`` (a carriage return
    is a line end to it) or could not hand back exactly (non-ASCII bytes)."""
    keep: list[bytes] = []
    odd: list[bytes] = []
    for line in c.split(b"\n"):
        if line:
            (odd if b"\r" in line or not line.isascii() else keep).append(line)
    return b"\n".join(keep) + b"\n", odd


def _sum64(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """int64 values as (high, low) 32-bit halves, so that per-group sums cannot overflow."""
    return pc.shift_right(values, 32), pc.bit_wise_and(values, _LOW)


def _parse_block(c: bytes, cut: int | None) -> _Part:
    """One piece of complete lines, read and grouped by pyarrow (no Python work per line).

    The CSV reader splits lines at single spaces (no quoting, empty lines skipped); rows without
    exactly 5 fields come back through the invalid-row handler and go to the line parser. A row
    whose path does not contain the streamer area only needs the ``path=/`` test (the line parser
    does no more) unless another field mentions the area. A row whose path does is *strict* when
    every field has exactly the expected shape (regular expressions on the whole field): its
    folder, size and mtime are then what ``parse_line`` gives, and it is grouped by folder with
    sums and maxima in native code. Every other row is joined back (its 4 spaces) and goes to the
    line parser, which defines the result."""
    part = _Part()
    if b"\r" in c or not c.isascii():
        c, part.slow = _odd_lines(c)
    bad: list[str] = []

    def invalid(row: pcsv.InvalidRow) -> str:
        bad.append(row.text)
        return "skip"

    parse = pcsv.ParseOptions(delimiter=" ", quote_char=False, escape_char=False, double_quote=False,
                              newlines_in_values=False, ignore_empty_lines=True, invalid_row_handler=invalid)
    t = pcsv.read_csv(pa.py_buffer(c), read_options=_READ, parse_options=parse, convert_options=_CONVERT)
    part.slow.extend(x.encode() for x in bad)
    if not t.num_rows:
        return part
    t = t.combine_chunks()
    p = t.column("p")
    inp = pc.match_substring_regex(p, re.escape(_AREA_S))
    n_in = pc.sum(inp).as_py() or 0
    # The area in another field? Only possible when the piece mentions it more often than those paths.
    maybe = c.count(_AREA_B) - sum(x.count(_AREA_S) for x in bad) > n_in
    if n_in < t.num_rows:  # lines outside the area: no copy, masks over the whole piece
        out = pc.invert(inp)
        n_else = 0
        if maybe:
            elsewhere = pc.and_(out, pc.or_(pc.or_(pc.match_substring(t.column("s"), _AREA_S),
                                                   pc.match_substring(t.column("k"), _AREA_S)),
                                            pc.or_(pc.match_substring(t.column("c"), _AREA_S),
                                                   pc.match_substring(t.column("m"), _AREA_S))))
            n_else = pc.sum(elsewhere).as_py() or 0
        if n_else:
            _to_slow(part, t.filter(elsewhere))
            out = pc.and_(out, pc.invert(elsewhere))
        other = pc.sum(pc.and_(out, pc.starts_with(p, "path=/"))).as_py() or 0
        part.other += other
        part.malformed += t.num_rows - n_in - n_else - other
        if not n_in:
            return part
        t = t.filter(inp)
    _strict(part, t, cut)
    return part


def _pair_digits(col: pa.ChunkedArray | pa.Array, skip: int) -> tuple[np.ndarray, pa.Array] | None:
    """``<name>=S.N`` fields (name ``skip - 1`` long): (valid rows, S and N of each row as strings,
    flat), when every row has exactly one dot; None otherwise (then the caller uses a regex)."""
    st = pc.split_pattern(pc.utf8_slice_codeunits(col, skip), ".", max_splits=1)
    if pc.min(pc.list_value_length(st)).as_py() != 2:
        return None
    flat = pc.list_flatten(st)
    ok = pc.and_(pc.ascii_is_decimal(flat), pc.less_equal(pc.binary_length(flat), 18))
    return ok.to_numpy(zero_copy_only=False).reshape(-1, 2).all(axis=1), flat


def _strict(part: _Part, t: pa.Table, cut: int | None) -> None:
    """Rows whose path mentions the area: strict ones grouped by folder, the others to the line
    parser (then the strict ones again, which all pass)."""
    p, s, k, cc, m = (t.column(x) for x in _COLUMNS)
    ok = pc.and_(pc.and_(pc.starts_with(p, "path=/"), pc.starts_with(k, "checksum=")),
                 pc.and_(pc.starts_with(s, "size="), pc.starts_with(cc, "ctime=")))
    ok = pc.and_(ok, pc.starts_with(m, "mtime="))
    sz = pc.utf8_slice_codeunits(s, 5)  # up to 18 digits: fits int64
    ok = pc.and_(ok, pc.and_(pc.ascii_is_decimal(sz), pc.less_equal(pc.binary_length(sz), 18)))
    good = ok.to_numpy(zero_copy_only=False)
    ct = _pair_digits(cc, 6)
    mt = _pair_digits(m, 6)
    if ct is None or mt is None:  # a time without its dot: decide these rows with regular expressions
        good &= pc.match_substring_regex(cc, _CTIME_RE).to_numpy(zero_copy_only=False)
        good &= pc.match_substring_regex(m, _MTIME_RE).to_numpy(zero_copy_only=False)
        if good.all():  # pragma: no cover - the split above found a row without a dot
            raise AssertionError("time fields without a dot passed the regular expressions")
    else:
        good &= ct[0] & mt[0]
        if good.all():
            sn = pc.cast(mt[1], pa.int64()).to_numpy().reshape(-1, 2)
            secs, nss = sn[:, 0], sn[:, 1]
            good &= (secs < 9_000_000_000) & (nss < 10**9)  # key = s * 10**9 + ns orders as (s, ns)
    if not good.all():
        bad = pa.array(~good)
        _to_slow(part, t.filter(bad))
        if good.any():
            _strict(part, t.filter(pa.array(good)), cut)
        return
    key = pa.array(secs * 10**9 + nss)
    size = pc.cast(sz, pa.int64())
    d = pc.list_element(pc.split_pattern(p, "/", max_splits=1, reverse=True), 0)
    hi, lo = _sum64(size)
    cols = {"d": d, "hi": hi, "lo": lo, "key": key}
    aggs = [("hi", "sum"), ("lo", "sum"), ("key", "max"), ("key", "count")]
    if cut is not None:
        old = pc.less(key, cut)
        zero = pa.scalar(0, pa.int64())
        cols.update(old=pc.cast(old, pa.int64()), ohi=pc.if_else(old, hi, zero), olo=pc.if_else(old, lo, zero),
                    okey=pc.if_else(old, key, pa.scalar(-1, pa.int64())))
        aggs += [("old", "sum"), ("ohi", "sum"), ("olo", "sum"), ("okey", "max")]
    g = pa.table(cols).group_by("d", use_threads=False).aggregate(aggs).to_pydict()
    dirs = g["d"]
    files = g["key_count"]
    total = [(a << 32) + b for a, b in zip(g["hi_sum"], g["lo_sum"], strict=True)]
    newest = g["key_max"]
    if cut is None:
        zeros = [0] * len(dirs)
        old_files, old_total, old_newest = zeros, zeros, zeros
    else:
        old_files = g["old_sum"]
        old_total = [(a << 32) + b for a, b in zip(g["ohi_sum"], g["olo_sum"], strict=True)]
        old_newest = g["okey_max"]
    part.groups.extend((x[5:].encode(), *rest) for x, *rest in
                       zip(dirs, files, total, newest, old_files, old_total, old_newest, strict=True))


def _to_slow(part: _Part, rows: pa.Table) -> None:
    """Rows back to their lines (single spaces between the 5 fields) for the line parser."""
    part.slow.extend(" ".join(r).encode() for r in zip(*(rows.column(x).to_pylist() for x in _COLUMNS),
                                                        strict=True))


def default_workers() -> int:
    """Parser threads (pyarrow releases the GIL): one per CPU, at most 4 (``T0DQM_DUMP_WORKERS``)."""
    env = os.environ.get("T0DQM_DUMP_WORKERS")
    if env:
        return max(0, int(env))
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(max(1, n), 4)


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

    The inflater child writes complete lines to a pipe; pieces of ``BLOCK_SIZE`` (4 MiB) are parsed by
    ``workers`` threads (default ``default_workers()``; 0: in this thread), at most ``workers``
    pieces in flight, and their aggregates merged here (sums and maxima, so the result does not
    depend on the order)."""
    mtime = check_dump(path, max_age=max_age, now=now)
    summary = DumpSummary(path=os.fspath(path), dump_mtime=mtime)
    agg = _Aggregator(summary, split_cutoff, split_labels)
    cut = agg.split_key()
    workers = default_workers() if workers is None else workers
    inf = _Inflater(path)
    try:
        if workers:
            with ThreadPoolExecutor(workers, thread_name_prefix="eosdump") as pool:
                pending: deque[Future[_Part]] = deque()
                for chunk in _blocks(inf.read_fd):
                    pending.append(pool.submit(_parse_block, chunk, cut))
                    while len(pending) >= workers or (pending and pending[0].done()):
                        agg.merge(pending.popleft().result())
                while pending:
                    agg.merge(pending.popleft().result())
        else:
            for chunk in _blocks(inf.read_fd):
                agg.chunk(chunk)
        agg.finish()
        inf.check()
    finally:
        inf.close()
    for a in summary.units.values():
        if a.newest == (-1, 0):  # pragma: no cover - a unit always has a file
            a.newest = (0, 0)
    if require_area and summary.area_files == 0:
        raise DumpError(f"dump {path} has no file under {AREA} ({summary.lines} lines, "
                        f"{summary.malformed} malformed): refusing to act on it")
    return summary


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
