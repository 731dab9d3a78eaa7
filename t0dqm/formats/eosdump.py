"""Streaming reader of the EOS namespace dump (``eos_files.txt.gz``).

Lines: ``path=<abs> size=<bytes> checksum=<hex> ctime=<s>.<ns> mtime=<s>.<ns>`` (nanoseconds not
zero-padded, so times are parsed as two integers, never as a float).

The dump is never loaded whole: a child process (``t0dqm.formats.gzinflate``, ISA-L) inflates it into a
pipe, so inflating overlaps parsing on another CPU; pieces of ``BLOCK_SIZE`` bytes of complete lines
are read into one reused buffer and walked once by the C scanner ``t0dqm.formats._dumpscan``, which
sums lines of the strict shape per run of consecutive lines in the same folder and hands back every
other line that mentions the streamer area; those go to the line-by-line parser, so the result is
the same as parsing every line with ``parse_line``. Without the compiled scanner (installed without a
compiler) every line goes through the Python parser: same result, much slower (logged once).

Refusals (``DumpError``, nothing should be deleted): truncated or corrupt gzip, dump older than the
allowed age, no line in the streamer area. Malformed lines are counted, never fatal alone.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from t0dqm.formats.streamer_names import AREA, TRANSFERTEST_LABELS, StreamerUnit, parse_unit_dir

try:
    from t0dqm.formats._dumpscan import scan as _scan
except ImportError:  # pragma: no cover - built without a C compiler
    _scan = None

log = logging.getLogger(__name__)
Mtime = tuple[int, int]
DEFAULT_MAX_AGE = 48 * 3600
BLOCK_SIZE = 8 << 20
_AREA_B = AREA.encode()
_I64 = (-(2**63), 2**63 - 1)
_warned = False


def _warn_slow() -> None:
    global _warned
    if _scan is None and not _warned:
        _warned = True
        log.warning(
            "t0dqm.formats._dumpscan is not built (no C compiler at install?): reading the dump "
            "with the pure-Python parser, several times slower"
        )


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
        return {
            "dump": self.path,
            "dump_mtime": self.dump_mtime,
            "lines": self.lines,
            "malformed": self.malformed,
            "area_files": self.area_files,
            "area_bytes": self.area_bytes,
            "other_area_files": self.other_area_files,
            "units": len(self.units),
            "unrecognised_files": self.unrecognised_files,
            "unrecognised_bytes": self.unrecognised_bytes,
        }


# ---------------------------------------------------------------------------------------- input checks


def check_dump(
    path: str | os.PathLike[str], *, max_age: float | None = DEFAULT_MAX_AGE, now: float | None = None
) -> float:
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


def _blocks(fd: int, block: int | None = None) -> Iterator[memoryview]:
    """Complete lines read from ``fd`` in pieces of about ``block`` bytes (a last unterminated line
    gets a newline). Each piece is a view of one reused buffer, valid until the next one is asked
    for (copy it to keep it); a line longer than the buffer grows it."""
    buf = bytearray(block or BLOCK_SIZE)
    have = 0
    eof = False
    while not eof:
        with memoryview(buf) as mv:
            while have < len(buf):
                n = os.readv(fd, [mv[have:]])
                if not n:
                    eof = True
                    break
                have += n
            if eof:
                if have and buf[have - 1] != 0x0A:
                    if have == len(buf):
                        mv.release()
                        buf.append(0x0A)
                    else:
                        buf[have] = 0x0A
                    have += 1
                cut = have
            else:
                cut = buf.rfind(b"\n", 0, have) + 1
            if cut:
                with memoryview(buf) as whole, whole[:cut] as piece:
                    yield piece
                rest = have - cut
                buf[:rest] = buf[cut:have]
                have = rest
        if not cut and not eof:  # one line longer than the buffer: read on into a larger one
            buf.extend(bytes(len(buf)))


class _Inflater:
    """The child process inflating the dump (``t0dqm.formats.gzinflate``) into a pipe (``read_fd``)."""

    def __init__(self, path: str | os.PathLike[str]):
        if not os.path.exists(path):
            raise DumpError(f"dump {path} cannot be read: no such file")
        self.path = path
        r, w = os.pipe()
        _set_pipe_size(r)
        self.read_fd = r
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "t0dqm.formats.gzinflate", os.fspath(path), str(w)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=[w],
            )
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
    """Complete lines of the inflated dump in pieces of about ``block`` bytes. Inflated by a child process while the caller parses (ISA-L holds the GIL, so a thread
    would not overlap). DumpError when the gzip stream is truncated or corrupt, raised before the
    last piece is handed out."""
    inf = _Inflater(path)
    try:
        pending = None
        for piece in _blocks(inf.read_fd, block):
            if pending is not None:
                yield pending
            pending = bytes(piece)
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
    if not (
        p.startswith(b"path=/")
        and sz.startswith(b"size=")
        and ck.startswith(b"checksum=")
        and ct.startswith(b"ctime=")
        and mt.startswith(b"mtime=")
    ):
        return None
    size = sz[5:]
    if not size.isdigit():
        return None
    ctime = _pair(ct[6:])
    mtime = _pair(mt[6:])
    if ctime is None or mtime is None:
        return None
    return Record(
        path=p[5:].decode("utf-8", "surrogateescape"),
        size=int(size),
        checksum=ck[9:].decode("ascii", "replace"),
        ctime=ctime,
        mtime=mtime,
    )


def iter_records(
    path: str | os.PathLike[str],
    *,
    max_age: float | None = DEFAULT_MAX_AGE,
    now: float | None = None,
    malformed: list[int] | None = None,
) -> Iterator[Record]:
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
        agg.newest = max(agg.newest, mtime)
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
            self.add(p[: p.rfind(b"/")], rec.size, rec.mtime)

    def finish(self) -> DumpSummary:
        """Drop folders looked up for lines that all turned out malformed."""
        for unit in [u for u, a in self.s.units.items() if not a.files]:
            del self.s.units[unit]
        return self.s

    def chunk(self, c: bytes | bytearray | memoryview) -> None:
        """Complete lines (a piece from ``_blocks``): the C scanner, or line by line without it."""
        if _scan is None:
            self.slow(bytes(c))
            return
        cut = self.split_cutoff
        if cut is None:
            runs, odd, other, malformed = _scan(c, _AREA_B, None, 0)
        else:
            runs, odd, other, malformed = _scan(
                c, _AREA_B, min(max(cut[0], _I64[0]), _I64[1]), min(max(cut[1], _I64[0]), _I64[1])
            )
        self.merge(runs, other, malformed)
        for line in odd:
            self.slow(line)

    def merge(
        self, runs: list[tuple[bytes, int, int, int, int, int, int, int, int]], other: int, malformed: int
    ) -> None:
        """Fold the scanner's runs (folder, files, bytes, newest s, ns, and files / bytes / newest s,
        ns of those before the split cutoff, newest s -1 when none) and line counts into the summary."""
        s = self.s
        s.lines += other + malformed
        s.other_area_files += other
        s.malformed += malformed
        for d, m, size, ms, mns, old_m, old_size, old_s, old_ns in runs:
            unit, ua, split = self._dir(d)
            s.lines += m
            if ua is None:  # pragma: no cover - the scanner only makes runs of folders in the area
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
            ua.newest = max(ua.newest, (ms, mns))
            if split and old_m:
                ua.old_files += old_m
                ua.old_bytes += old_size
                if ua.old_newest is None or (old_s, old_ns) > ua.old_newest:
                    ua.old_newest = (old_s, old_ns)


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
    ``split_cutoff`` for ``split_labels``). DumpError on truncation, age, or no line in the area.

    The inflater child writes to a pipe; pieces of ``BLOCK_SIZE`` bytes of complete lines are scanned
    here (``_Aggregator.chunk``) while the child inflates the next ones."""
    mtime = check_dump(path, max_age=max_age, now=now)
    summary = DumpSummary(path=os.fspath(path), dump_mtime=mtime)
    agg = _Aggregator(summary, split_cutoff, split_labels)
    _warn_slow()
    inf = _Inflater(path)
    try:
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
        raise DumpError(
            f"dump {path} has no file under {AREA} ({summary.lines} lines, "
            f"{summary.malformed} malformed): refusing to act on it"
        )
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
            d = line[5 : line.rfind(b"/", 0, sp)] if sp > 0 else b""
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
            if sel is True or rec.mtime < cast(Mtime, sel):  # sel: True or a cutoff here
                yield unit, rec
