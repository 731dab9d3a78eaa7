"""Test helper: walk a ROOT file's records one after another, as ROOT's TFile::Map does.

From ``fBEGIN`` each record starts with its length: positive, a key record (its header must say it sits
where it is found); negative, a free gap of that many bytes. A zero length is the "TKey(... fNbytes: 0)
is corrupted" of the DQM GUI's reader. :func:`walk` raises :class:`MapError` on any such defect, on a
gap under 4 bytes, on a walk that does not end exactly at ``fEND``, and when the free segments list
(``fSeekFree``) does not list exactly the gaps found plus the tail segment that starts at ``fEND``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_KEY = struct.Struct(">ihiIhhii")
_KEY_BIG = struct.Struct(">ihiIhhqq")


class MapError(AssertionError):
    """The file is not a clean sequence of records."""


@dataclass(frozen=True)
class Record:
    seek: int
    nbytes: int  # negative for a gap
    classname: str = ""
    name: str = ""
    title: str = ""
    objlen: int = 0
    keylen: int = 0
    pdir: int = 0


def _string(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    pos += 1
    if n == 255:
        n = struct.unpack_from(">i", data, pos)[0]
        pos += 4
    return data[pos : pos + n].decode(errors="replace"), pos + n


def header(data: bytes) -> dict[str, int]:
    if data[:4] != b"root":
        raise MapError("bad magic")
    version, begin = struct.unpack_from(">ii", data, 4)
    big = version >= 1000000
    if big:
        end, seek_free = struct.unpack_from(">qq", data, 12)
        nbytes_free, nfree, nbytes_name = struct.unpack_from(">iii", data, 28)
        seek_info = struct.unpack_from(">q", data, 45)[0]
    else:
        end, seek_free, nbytes_free, nfree, nbytes_name = struct.unpack_from(">iiiii", data, 12)
        seek_info = struct.unpack_from(">i", data, 37)[0]
    return {
        "version": version,
        "begin": begin,
        "end": end,
        "seek_free": seek_free,
        "nbytes_free": nbytes_free,
        "nfree": nfree,
        "nbytes_name": nbytes_name,
        "seek_info": seek_info,
    }


def walk(data: bytes) -> list[Record]:
    """Every record from fBEGIN to fEND in file order; MapError on the first defect."""
    head = header(data)
    begin, end = head["begin"], head["end"]
    if len(data) < end:
        raise MapError(f"file has {len(data)} bytes, header says fEND={end}")
    out: list[Record] = []
    pos = begin
    while pos < end:
        if pos + 4 > end:
            raise MapError(f"{end - pos} stray bytes before fEND at {pos}")
        (nbytes,) = struct.unpack_from(">i", data, pos)
        if nbytes == 0:
            raise MapError(f"zero-length record at {pos}")
        if nbytes < 0:
            if -nbytes < 4:
                raise MapError(f"gap of {-nbytes} bytes at {pos}")
            out.append(Record(pos, nbytes))
            pos -= nbytes
            continue
        version = struct.unpack_from(">h", data, pos + 4)[0]
        fields = (_KEY_BIG if version > 1000 else _KEY).unpack_from(data, pos)
        _n, _v, objlen, _dt, keylen, _cycle, seek, pdir = fields
        if seek != pos:
            raise MapError(f"key at {pos} says fSeekKey={seek}")
        if keylen <= 0 or nbytes < keylen or pos + nbytes > end:
            raise MapError(f"key at {pos}: fNbytes={nbytes} fKeylen={keylen} (fEND={end})")
        at = pos + (_KEY_BIG if version > 1000 else _KEY).size
        classname, at = _string(data, at)
        name, at = _string(data, at)
        title, at = _string(data, at)
        if at - pos != keylen:
            raise MapError(f"key at {pos}: strings end at {at - pos}, fKeylen={keylen}")
        out.append(Record(pos, nbytes, classname, name, title, objlen, keylen, pdir))
        pos += nbytes
    if pos != end:
        raise MapError(f"last record runs to {pos}, past fEND={end}")
    check_free_list(data, head, [r for r in out if r.nbytes < 0])
    return out


def free_segments(data: bytes, head: dict[str, int] | None = None) -> list[tuple[int, int]]:
    """The (first, last) segments of the FreeSegments record (padding after them ignored)."""
    head = head or header(data)
    seek = head["seek_free"]
    if not seek:
        raise MapError("no free segments record")
    keylen = struct.unpack_from(">h", data, seek + 14)[0]
    nbytes = struct.unpack_from(">i", data, seek)[0]
    pos, stop = seek + keylen, seek + nbytes
    out = []
    for _ in range(head["nfree"]):
        version = struct.unpack_from(">h", data, pos)[0]
        if version > 1000:
            first, last = struct.unpack_from(">qq", data, pos + 2)
            pos += 18
        else:
            first, last = struct.unpack_from(">ii", data, pos + 2)
            pos += 10
        if pos > stop:
            raise MapError("free segments run past their record")
        out.append((first, last))
    return out


def check_free_list(data: bytes, head: dict[str, int], gaps: list[Record]) -> None:
    segments = free_segments(data, head)
    if not segments or segments[-1][0] != head["end"]:
        raise MapError(f"last free segment {segments[-1:]} does not start at fEND={head['end']}")
    listed = sorted(segments[:-1])
    found = sorted((g.seek, g.seek - g.nbytes - 1) for g in gaps)
    if listed != found:
        raise MapError(f"free list {listed} does not match the gaps in the file {found}")


def parents_resolve(records: list[Record], top: int) -> None:
    """Every key's fSeekPdir is 0 (the TFile key only) or the seek of a directory key (or the top)."""
    dirs = {r.seek for r in records if r.classname in ("TDirectory", "TDirectoryFile")} | {top}
    for r in records:
        if r.nbytes > 0 and r.pdir not in dirs and not (r.seek == top and r.pdir == 0):
            raise MapError(f"key {r.name!r} at {r.seek}: parent {r.pdir} is not a directory")
