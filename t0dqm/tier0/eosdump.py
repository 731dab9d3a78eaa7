"""Streaming reader of the EOS namespace dump (``eos_files.txt.gz``).

Lines: ``path=<abs> size=<bytes> checksum=<hex> ctime=<s>.<ns> mtime=<s>.<ns>`` (nanoseconds not
zero-padded, so times are parsed as two integers, never as a float).

The dump is never loaded whole: it is inflated piece by piece in a helper thread (zlib, or ISA-L's
``isal`` when installed, releases the GIL) and the main thread aggregates per streamer unit on the fly.
``eos find`` lists a folder's files together, so most of the work happens on whole runs of lines of one
folder with bytes-level operations; anything unusual (interleaved folders, odd lines) falls back to a
line-by-line parser with the same result.

Refusals (``DumpError``, nothing should be deleted): truncated or corrupt gzip, dump older than the
allowed age, no line in the streamer area. Malformed lines are counted, never fatal alone.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from t0dqm.tier0.streamer_names import AREA, TRANSFERTEST_LABELS, StreamerUnit, parse_unit_dir

try:  # ISA-L inflates about 20 % faster than zlib; optional.
    from isal import isal_zlib as _zlib  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    _zlib = zlib  # type: ignore[assignment]

Mtime = tuple[int, int]
DEFAULT_MAX_AGE = 48 * 3600
READ_SIZE = 1 << 18
SLOW_PIECE = 1 << 14
_AREA_B = AREA.encode()
_MARKERS = (b" size=", b" checksum=", b" ctime=", b" mtime=")


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


def _inflate(path: str | os.PathLike[str], out: Callable[[bytes], None], stop: threading.Event) -> None:
    """Inflate a (possibly multi-member) gzip file, handing complete lines to ``out``."""
    d = _zlib.decompressobj(31)
    rest = b""
    started = False
    with open(path, "rb", buffering=0) as fh:
        while not stop.is_set():
            raw = fh.read(READ_SIZE)
            if not raw:
                break
            while raw:
                started = True
                try:
                    data = d.decompress(raw)
                except Exception as exc:  # zlib.error / isal error
                    raise DumpError(f"dump {path} is corrupt (gzip error: {exc})") from None
                if d.eof:
                    raw = d.unused_data
                    d = _zlib.decompressobj(31)
                    started = False
                    while raw[:1] == b"\x00":  # zero padding after the last member
                        raw = raw[1:]
                else:
                    raw = b""
                if data:
                    data = rest + data
                    cut = data.rfind(b"\n") + 1
                    rest = data[cut:]
                    if cut:
                        out(data[:cut])
    if stop.is_set():
        return
    if started:
        raise DumpError(f"dump {path} is truncated (gzip stream ends early)")
    if rest:
        out(rest + b"\n")


def iter_chunks(path: str | os.PathLike[str], maxsize: int = 16) -> Iterator[bytes]:
    """Complete lines of the inflated dump, in pieces, inflated in a helper thread."""
    q: queue.Queue[object] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()
    done = object()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def work() -> None:
        try:
            _inflate(path, put, stop)
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    t = threading.Thread(target=work, name="eosdump-inflate", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                if isinstance(item, DumpError):
                    raise item
                if isinstance(item, OSError):
                    raise DumpError(f"dump {path} cannot be read: {item}") from item
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        t.join(timeout=5)


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

    def chunk(self, c: bytes) -> None:
        """Complete lines; bisected down to small pieces around irregular lines."""
        if _AREA_B not in c:
            n = c.count(b"\n")
            good = c.count(b"\npath=/") + (1 if c.startswith(b"path=/") else 0)
            if c.endswith(b"\npath=/"):  # pragma: no cover - chunks end with a newline
                good -= 1
            self.s.lines += n
            self.s.other_area_files += good
            self.s.malformed += n - good
            return
        if self.fast(c):
            return
        if len(c) <= SLOW_PIECE:
            self.slow(c)
            return
        mid = c.find(b"\n", len(c) // 2) + 1
        if mid <= 0 or mid >= len(c):
            self.slow(c)
            return
        self.chunk(c[:mid])
        self.chunk(c[mid:])

    def fast(self, c: bytes) -> bool:
        """Whole piece with bytes-level operations; False (nothing counted) if any line is irregular."""
        f = c.split(b" ")
        nf = len(f)
        if nf < 5 or (nf - 1) % 4:
            return False
        n = (nf - 1) // 4
        js = b" " + b" ".join(f[1::4])
        jc = b" " + b" ".join(f[2::4])
        jt = b" " + b" ".join(f[3::4])
        if js.count(b" size=") != n or jc.count(b" checksum=") != n or jt.count(b" ctime=") != n:
            return False
        parts = b"\n".join(f[4::4]).split(b"\n")
        if len(parts) != 2 * n or parts[-1]:
            return False
        jm = b" " + b" ".join(parts[0::2])
        if jm.count(b" mtime=") != n or jm.count(b".") != n or jt.count(b".") != n:
            return False
        paths = parts[1::2]
        paths[-1] = f[0]
        first = paths.pop()
        paths.insert(0, first)
        jp = b"\n" + b"\n".join(paths)
        if jp.count(b"\npath=/") != n:
            return False
        ds = js.replace(b" size=", b" ").split()
        ts = jt.replace(b" ctime=", b" ").replace(b".", b" ").split()
        ms = jm.replace(b" mtime=", b" ").replace(b".", b" ").split()
        if len(ds) != n or len(ts) != 2 * n or len(ms) != 2 * n:
            return False
        if not (b"".join(ds).isdigit() and b"".join(ts).isdigit() and b"".join(ms).isdigit()):
            return False
        s = self.s
        s.lines += n
        sizes = list(map(int, ds))
        secs = list(map(int, ms[0::2]))
        nss = ms[1::2]
        i = 0
        while i < n:
            p = paths[i]
            prefix = p[:p.rfind(b"/") + 1]
            # gallop then bisect for the end of this folder's run of lines
            step = 1
            while i + step < n and paths[i + step].startswith(prefix):
                step *= 2
            lo, hi = i + step // 2, min(i + step, n)
            while lo + 1 < hi:
                mid = (lo + hi) // 2
                if paths[mid].startswith(prefix):
                    lo = mid
                else:
                    hi = mid
            j = hi
            m = j - i
            seg = b"\n" + b"\n".join(paths[i:j]) if m > 1 else b"\n" + p
            if seg.count(b"\n" + prefix) != m or seg.count(b"/") != m * prefix.count(b"/"):
                for k in range(i, j):  # not one folder: line by line
                    pk = paths[k]
                    if _AREA_B in pk:
                        self.add(pk[5:pk.rfind(b"/")], sizes[k], (secs[k], int(nss[k])))
                    else:
                        s.other_area_files += 1
                i = j
                continue
            self._segment(prefix[5:-1], sizes, secs, nss, i, j)
            i = j
        return True

    def _segment(self, d: bytes, sizes: list[int], secs: list[int], nss: list[bytes], i: int, j: int) -> None:
        unit, agg, split = self._dir(d)
        s = self.s
        m = j - i
        if agg is None:
            s.other_area_files += m
            return
        if split or unit is None:
            for k in range(i, j):
                self.add(d, sizes[k], (secs[k], int(nss[k])))
            return
        total = sum(sizes[i:j])
        s.area_files += m
        s.area_bytes += total
        smax = max(secs[i:j])
        best = -1
        k = secs.index(smax, i, j)
        while k >= 0:
            v = int(nss[k])
            if v > best:
                best = v
            try:
                k = secs.index(smax, k + 1, j)
            except ValueError:
                k = -1
        agg.files += m
        agg.bytes += total
        if (smax, best) > agg.newest:
            agg.newest = (smax, best)


def aggregate(
    path: str | os.PathLike[str],
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
    split_cutoff: Mtime | None = None,
    split_labels: frozenset[str] = TRANSFERTEST_LABELS,
    require_area: bool = True,
) -> DumpSummary:
    """One streaming pass: per-unit files, bytes, newest mtime (and the part older than
    ``split_cutoff`` for ``split_labels``). DumpError on truncation, age, or no line in the area."""
    mtime = check_dump(path, max_age=max_age, now=now)
    summary = DumpSummary(path=os.fspath(path), dump_mtime=mtime)
    agg = _Aggregator(summary, split_cutoff, split_labels)
    for chunk in iter_chunks(path):
        agg.chunk(chunk)
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
