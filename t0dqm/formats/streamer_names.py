"""Streamer paths and names at Tier-0 (NOTES.md, "Streamer inputs").

Layout: ``<prefix>/store/t0streamer/<Label>/<Stream>/000/<ddd>/<ddd>/`` where the three folders are
run // 10**6, (run % 10**6) // 1000 and run % 1000, each %03d; files are
``run<run>_ls<%04d>_stream<Stream>_StorageManager.{dat,jsn}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AREA = "/store/t0streamer/"
LABELS = ("Data", "Minidaq", "TransferTest", "TransferTestWithSafety")
TRANSFERTEST_LABELS = frozenset({"TransferTest", "TransferTestWithSafety"})
DELETABLE_LABELS = frozenset({"Data", "Minidaq"})

RUN_RE = re.compile(r"^[1-9][0-9]{1,6}$")
STREAM_RE = re.compile(r"^[0-9_a-zA-Z]+$")
_LABEL_RE = re.compile(r"^[0-9_a-zA-Z]+$")
_NAME_RE = re.compile(r"^run([1-9][0-9]*)_ls([0-9]{4,})_stream([0-9A-Za-z_]+?)_StorageManager\.(dat|jsn)$")
_DDD_RE = re.compile(r"^[0-9]{3}$")


@dataclass(frozen=True, order=True)
class StreamerUnit:
    """One deletion unit: (label, stream, run)."""

    label: str
    stream: str
    run: int


@dataclass(frozen=True)
class StreamerFile:
    """A parsed streamer file name."""

    run: int
    lumi: int
    stream: str
    ext: str


def run_dirs(run: int) -> str:
    """``000/357/902`` for run 357902."""
    if run < 0 or run >= 10**9:
        raise ValueError(f"run out of range: {run}")
    return f"{run // 10**6:03d}/{(run % 10**6) // 1000:03d}/{run % 1000:03d}"


def unit_dir(label: str, stream: str, run: int, prefix: str = "") -> str:
    """Directory of a unit: ``<prefix>/store/t0streamer/<label>/<stream>/000/ddd/ddd``."""
    if not _LABEL_RE.match(label) or not STREAM_RE.match(stream):
        raise ValueError(f"bad label or stream: {label!r} {stream!r}")
    return f"{prefix.rstrip('/')}{AREA}{label}/{stream}/{run_dirs(run)}"


def file_name(run: int, lumi: int, stream: str, ext: str = "dat") -> str:
    """``run<run>_ls<%04d>_stream<stream>_StorageManager.<ext>``."""
    if ext not in ("dat", "jsn"):
        raise ValueError(f"extension must be dat or jsn, got {ext!r}")
    if not STREAM_RE.match(stream) or run <= 0 or lumi < 0:
        raise ValueError(f"bad run, lumi or stream: {run} {lumi} {stream!r}")
    return f"run{run}_ls{lumi:04d}_stream{stream}_StorageManager.{ext}"


def file_path(label: str, stream: str, run: int, lumi: int, ext: str = "dat", prefix: str = "") -> str:
    """Full path of a streamer file."""
    return f"{unit_dir(label, stream, run, prefix)}/{file_name(run, lumi, stream, ext)}"


def parse_file_name(name: str) -> StreamerFile | None:
    """Parse a streamer file name; None when it is not one (EoR, BoLS, index files ...)."""
    m = _NAME_RE.match(name)
    if not m:
        return None
    return StreamerFile(run=int(m.group(1)), lumi=int(m.group(2)), stream=m.group(3), ext=m.group(4))


def parse_unit_dir(directory: str) -> StreamerUnit | None:
    """Unit of a directory path containing ``/store/t0streamer/``; None if it is not a unit folder."""
    i = directory.find(AREA)
    if i < 0:
        return None
    parts = directory[i + len(AREA) :].rstrip("/").split("/")
    if len(parts) != 5:
        return None
    label, stream, d1, d2, d3 = parts
    if not (_LABEL_RE.match(label) and STREAM_RE.match(stream)):
        return None
    if not (_DDD_RE.match(d1) and _DDD_RE.match(d2) and _DDD_RE.match(d3)):
        return None
    run = int(d1) * 10**6 + int(d2) * 1000 + int(d3)
    if run <= 0:
        return None
    return StreamerUnit(label=label, stream=stream, run=run)


def parse_path(path: str) -> tuple[StreamerUnit, str] | None:
    """(unit, file name) of a file path in the streamer area, or None."""
    head, sep, name = path.rpartition("/")
    if not sep:
        return None
    unit = parse_unit_dir(head)
    return (unit, name) if unit else None


def in_area(path: str) -> bool:
    return AREA in path
