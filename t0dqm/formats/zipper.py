"""Zip archives: append one stored member, repair after a crash, rebuild from members, checksum.

A member is written with ``ZipFile.open(info, 'w')`` in MiB chunks, adler32 computed in the same pass,
then the zip is fsynced. Appending overwrites the old central directory, so a crash mid-append leaves
a zip without a valid one; nothing is lost: the catalog lists every committed member (name, size,
adler32), the members' local headers are still in place, and the members themselves are still in the
repository. :func:`repair` cuts the zip back to the catalog's members (fast, from the local headers)
and :func:`rebuild` rewrites it from the repository files when the zip itself is damaged.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from t0dqm.storage import CHUNK, Adler32, copy_stream, format_adler32, fsync_dir

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_ADLER_BASE = 65521


class ZipDamaged(RuntimeError):
    """The zip cannot be repaired from itself and no complete set of member sources was given."""


class SourceMismatch(RuntimeError):
    """A member's bytes do not have the adler32 the catalog records."""


@dataclass(frozen=True)
class Member:
    name: str
    size: int
    adler32: str


def adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """adler32 of A+B from adler32(A), adler32(B) and len(B) (zlib's adler32_combine)."""
    rem = len2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 += (adler2 & 0xFFFF) + _ADLER_BASE - 1
    sum2 += ((adler1 >> 16) & 0xFFFF) + ((adler2 >> 16) & 0xFFFF) + _ADLER_BASE - rem
    if sum1 >= _ADLER_BASE:
        sum1 -= _ADLER_BASE
    if sum1 >= _ADLER_BASE:
        sum1 -= _ADLER_BASE
    if sum2 >= _ADLER_BASE << 1:
        sum2 -= _ADLER_BASE << 1
    if sum2 >= _ADLER_BASE:
        sum2 -= _ADLER_BASE
    return sum1 | (sum2 << 16)


def _write_member(zf: zipfile.ZipFile, source: str | os.PathLike[str], name: str) -> Member:
    size = os.path.getsize(source)
    info = zipfile.ZipInfo(name, date_time=time.localtime(os.path.getmtime(source))[:6])
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size  # lets zipfile decide on zip64 up front
    info.external_attr = 0o644 << 16
    cks = Adler32()
    with open(source, "rb") as src, zf.open(info, "w") as dst:
        written = copy_stream(src, dst, checksums=[cks])
    if written != size:
        raise SourceMismatch(f"{source}: read {written} bytes, expected {size}")
    return Member(name, written, cks.hexdigest())


# -- inspection -----------------------------------------------------------------------------------


def matches(zip_path: str | os.PathLike[str], members: Sequence[Member]) -> bool:
    """True when the zip's central directory and its local headers agree and list exactly the
    catalog's members (names and sizes), all stored. An absent zip matches an empty member list."""
    path = Path(zip_path)
    if not path.exists():
        return not members
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            with open(path, "rb") as fh:
                local = _local_headers(fh, os.fstat(fh.fileno()).st_size)
    except (zipfile.BadZipFile, OSError, ValueError, struct.error):
        return False
    central = [(i.filename, i.file_size, i.header_offset) for i in infos]
    return (
        all(i.compress_type == zipfile.ZIP_STORED for i in infos)
        and central == [(loc.name, loc.size, loc.offset) for loc in local]
        and {name: size for name, size, _ in central} == {m.name: m.size for m in members}
    )


@dataclass(frozen=True)
class _Local:
    name: str
    offset: int  # of the local header
    data_offset: int
    size: int
    crc: int
    date_time: tuple[int, int, int, int, int, int]
    end: int  # offset after the data


def _local_headers(fh: BinaryIO, file_size: int) -> list[_Local]:
    """Walk local headers from the start while they describe complete stored members."""
    out: list[_Local] = []
    offset = 0
    while offset + _LOCAL.size <= file_size:
        fh.seek(offset)
        raw = fh.read(_LOCAL.size)
        (sig, _ver, flags, method, mtime, mdate, crc, csize, usize, nlen, elen) = _LOCAL.unpack(raw)
        if sig != _LOCAL_SIG or method != zipfile.ZIP_STORED or flags & 0x08:
            break
        name_raw = fh.read(nlen)
        extra = fh.read(elen)
        if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:  # zip64: sizes in the extra field
            pos = 0
            while pos + 4 <= len(extra):
                tag, length = struct.unpack_from("<HH", extra, pos)
                if tag == 0x0001 and length >= 16:
                    usize, csize = struct.unpack_from("<QQ", extra, pos + 4)
                    break
                pos += 4 + length
        if csize != usize:
            break
        name = name_raw.decode("utf-8" if flags & 0x800 else "cp437")
        data_offset = offset + _LOCAL.size + nlen + elen
        end = data_offset + csize
        if end > file_size:
            break
        date_time = (
            (mdate >> 9) + 1980,
            (mdate >> 5) & 0xF,
            mdate & 0x1F,
            mtime >> 11,
            (mtime >> 5) & 0x3F,
            (mtime & 0x1F) * 2,
        )
        out.append(_Local(name, offset, data_offset, csize, crc, date_time, end))
        offset = end
    return out


def repair(
    zip_path: str | os.PathLike[str],
    members: Sequence[Member],
    sources: Mapping[str, str | os.PathLike[str]] | None = None,
) -> str:
    """Make the zip hold exactly the catalog's members. Returns what was done: "ok", "cut" (torn or
    uncommitted trailing members removed, central directory rewritten) or "rebuilt" (from sources).

    Cutting needs the catalog's members to be the zip's leading members, intact by their local
    headers; otherwise the zip is rebuilt from ``sources`` (name -> repository path), which raises
    ZipDamaged when sources are missing."""
    path = Path(zip_path)
    if matches(path, members):
        return "ok"
    wanted = {m.name: m for m in members}
    if path.exists():
        with open(path, "r+b") as fh:
            size = os.fstat(fh.fileno()).st_size
            lead = _local_headers(fh, size)[: len(members)]
            if (
                len(lead) == len(members)
                and len({loc.name for loc in lead}) == len(members)
                and all(loc.name in wanted and wanted[loc.name].size == loc.size for loc in lead)
            ):
                _cut(fh, lead)
        if matches(path, members):
            return "cut"
    rebuild(path, members, sources or {})
    return "rebuilt"


def _cut(fh: BinaryIO, lead: Sequence[_Local]) -> None:
    """Truncate after the last kept member and write a central directory for the kept ones."""
    cut_at = lead[-1].end if lead else 0
    fh.seek(cut_at)
    fh.truncate()
    # mode 'w' on a file object does not truncate and starts the central directory at tell()
    zf = zipfile.ZipFile(fh, mode="w", allowZip64=True)
    for loc in lead:
        info = zipfile.ZipInfo(loc.name, date_time=loc.date_time)
        info.compress_type = zipfile.ZIP_STORED
        info.file_size = info.compress_size = loc.size
        info.CRC = loc.crc
        info.header_offset = loc.offset
        info.external_attr = 0o644 << 16
        info.flag_bits = 0 if loc.name.isascii() else 0x800
        zf.filelist.append(info)
        zf.NameToInfo[info.filename] = info
    zf.close()
    fh.truncate()
    fh.flush()
    os.fsync(fh.fileno())


def rebuild(
    zip_path: str | os.PathLike[str], members: Sequence[Member], sources: Mapping[str, str | os.PathLike[str]]
) -> None:
    """Rewrite the zip from its members' repository files (temp file, fsync, atomic rename); every
    source must have the size and adler32 the catalog records."""
    path = Path(zip_path)
    missing = [m.name for m in members if m.name not in sources or not os.path.isfile(sources[m.name])]
    if missing:
        raise ZipDamaged(f"{path}: cannot rebuild, member sources missing: {', '.join(missing[:5])}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".rebuild", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            with zipfile.ZipFile(fh, mode="w", allowZip64=True) as zf:
                for m in members:
                    got = _write_member(zf, sources[m.name], m.name)
                    if got.size != m.size or got.adler32 != m.adler32:
                        raise SourceMismatch(
                            f"{sources[m.name]}: {got.size} bytes adler32 {got.adler32}, "
                            f"catalog says {m.size} bytes adler32 {m.adler32}"
                        )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = ""
        fsync_dir(path.parent)
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)


# -- append ---------------------------------------------------------------------------------------


def append(
    zip_path: str | os.PathLike[str],
    source: str | os.PathLike[str],
    name: str,
    members: Sequence[Member],
    *,
    sources: Mapping[str, str | os.PathLike[str]] | None = None,
    expected_adler32: str | None = None,
) -> Member:
    """Append ``source`` as stored member ``name`` to the zip (created if absent) and fsync it.

    ``members`` is the catalog's list for this zip: a zip that does not match it (torn by a crash,
    or holding a member that was never committed) is repaired first. If the bytes read do not have
    ``expected_adler32`` the member is cut off again and SourceMismatch raised.
    Returns the member as written (name, size, adler32), for the catalog.
    """
    path = Path(zip_path)
    if any(m.name == name for m in members):
        raise ValueError(f"{path}: already has a member {name}")
    repair(path, members, sources)
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    with open(path, "r+b" if not created else "w+b") as fh:
        with zipfile.ZipFile(fh, mode="a", allowZip64=True) as zf:
            written = _write_member(zf, source, name)
        fh.flush()
        os.fsync(fh.fileno())
    if created:
        fsync_dir(path.parent)
    if expected_adler32 and written.adler32 != expected_adler32:
        repair(path, members, sources)
        raise SourceMismatch(f"{source}: adler32 {written.adler32} != expected {expected_adler32}")
    return written


# -- whole-file checksum --------------------------------------------------------------------------


def _adler_range(fh: BinaryIO, start: int, length: int, value: int = 1) -> int:
    fh.seek(start)
    cks = Adler32()
    cks.value = value
    left = length
    while left > 0:
        block = fh.read(min(CHUNK, left))
        if not block:
            raise ZipDamaged(f"unexpected end of file at {start + length - left}")
        cks.update(block)
        left -= len(block)
    return cks.value


def zip_adler32(zip_path: str | os.PathLike[str], members: Sequence[Member]) -> str:
    """The zip's whole-file adler32 without re-reading member data: headers and central directory are
    read, member data is folded in from the catalog's adler32 with adler32_combine. The zip must
    match ``members`` (see :func:`matches`); the end-to-end check at the endpoint catches any
    difference between what the catalog says and the bytes on disk."""
    by_name = {m.name: m for m in members}
    with open(zip_path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        locals_ = _local_headers(fh, size)
        if {loc.name for loc in locals_} != set(by_name) or len(locals_) != len(by_name):
            raise ZipDamaged(f"{zip_path}: local headers do not match the catalog's members")
        value = 1
        pos = 0
        for loc in locals_:
            member = by_name[loc.name]
            if member.size != loc.size:
                raise ZipDamaged(f"{zip_path}: {loc.name} is {loc.size} bytes, catalog says {member.size}")
            value = _adler_range(fh, pos, loc.data_offset - pos, value)
            value = adler32_combine(value, int(member.adler32, 16), loc.size)
            pos = loc.end
        value = _adler_range(fh, pos, size - pos, value)
    return format_adler32(value)


def extract(zip_path: str | os.PathLike[str], name: str, dest: str | os.PathLike[str]) -> Member:
    """Extract one member to ``dest`` (temp file + fsync + rename), returning its size and adler32."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        cks = Adler32()
        with zipfile.ZipFile(zip_path) as zf, zf.open(name) as src, os.fdopen(fd, "wb") as out:
            size = copy_stream(src, out, checksums=[cks])  # type: ignore[arg-type]
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
        tmp = ""
        return Member(name, size, cks.hexdigest())
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
