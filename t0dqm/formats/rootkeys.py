"""A small native reader of ROOT's directory and key records, for :mod:`t0dqm.formats.rootcheck`.

It reads only what the DQM checks need: the key lists of the directories (struct over the file's bytes, or
``pread`` for big files) and the text of TObjString objects, zlib-compressed or not. Anything else (another
compression, a record it finds inconsistent, a directory loop) raises :class:`Unreadable`, and the caller
falls back to the uproot walk, whose verdict is the reference.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any

DIR_CLASSES = ("TDirectory", "TDirectoryFile")


@dataclass
class Key:
    """One key found by a walk (native or uproot), with the folders above it."""

    folders: tuple[str, ...]  # full folder path from the file's top directory
    name: str
    classname: str
    key: Any  # uproot ReadOnlyKey or NativeKey: .get() reads the object (a str for TObjString)


_KEY_SMALL = struct.Struct(">ihiIhhii")  # fNbytes fVersion fObjlen fDatime fKeylen fCycle fSeekKey fSeekPdir
_KEY_BIG = struct.Struct(">ihiIhhqq")
_DIR_SMALL = struct.Struct(">hIIiiiii")  # fVersion fDatimeC fDatimeM fNbytesKeys fNbytesName fSeekDir ...
_DIR_BIG = struct.Struct(">hIIiiqqq")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I16 = struct.Struct(">h")
_UID_BITS = struct.Struct(">II")
_MAX_DEPTH = 64


class Unreadable(Exception):
    """The native reader cannot or will not read this; the uproot walk decides."""


class Source:
    """Byte ranges of a ROOT file (up to fEND): from a buffer with the whole file, or pread."""

    def __init__(self, end: int, data: bytes | bytearray | memoryview | None = None, fd: int = -1) -> None:
        self.end = end
        self.view = memoryview(data) if data is not None else None
        self.fd = fd

    def get(self, start: int, stop: int) -> Any:
        stop = min(stop, self.end)
        if start < 0 or stop <= start:
            raise Unreadable(f"record at {start} outside the file")
        if self.view is not None:
            return self.view[start:stop]
        out = os.pread(self.fd, stop - start, start)
        if len(out) != stop - start:
            raise Unreadable(f"short read at {start}")
        return out


def _string(buf: Any, pos: int) -> tuple[str, int]:
    n = buf[pos]
    pos += 1
    if n == 255:
        (n,) = _I32.unpack_from(buf, pos)
        pos += 4
    if n < 0 or pos + n > len(buf):
        raise Unreadable("string outside its record")
    return bytes(buf[pos : pos + n]).decode(errors="surrogateescape"), pos + n


def _skip_string(buf: bytes, pos: int) -> int:
    n = buf[pos]
    if n == 255:
        return pos + 5 + int(_I32.unpack_from(buf, pos + 1)[0])
    return pos + 1 + n


class NativeKey:
    """One TKey record; ``get()`` reads a TObjString's text (the only objects the checks read)."""

    __slots__ = ("keylen", "nbytes", "objlen", "seek", "src")

    def __init__(self, src: Source, seek: int, keylen: int, nbytes: int, objlen: int) -> None:
        if seek < 0 or keylen < 0 or nbytes < keylen or objlen < 0:
            raise Unreadable("inconsistent key record")
        self.src, self.seek, self.keylen, self.nbytes, self.objlen = src, seek, keylen, nbytes, objlen

    @property
    def data_start(self) -> int:
        return self.seek + self.keylen

    def payload(self) -> Any:
        raw = self.src.get(self.data_start, self.seek + self.nbytes)
        if len(raw) != self.nbytes - self.keylen:
            raise Unreadable("object runs past the end of the file")
        return raw if self.objlen == len(raw) else decompress(raw, self.objlen)

    def get(self) -> str:
        buf = self.payload()
        (count,) = _U32.unpack_from(buf, 0)
        pos = 6 if count & 0x40000000 else 2  # byte count + version, or version only
        (tobject_version,) = _I16.unpack_from(buf, pos)
        pos += 2
        if tobject_version & 0x4000:
            pos += 4
        _uid, bits = _UID_BITS.unpack_from(buf, pos)
        pos += 8
        if bits & 0x10:  # kIsReferenced: a process id follows
            pos += 2
        return _string(buf, pos)[0]


def decompress(raw: Any, objlen: int) -> bytes:
    """ROOT compression blocks (9-byte headers); zlib only, anything else goes to uproot."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        head = bytes(raw[pos : pos + 9])
        if len(head) < 9 or head[:2] != b"ZL":
            raise Unreadable(f"compression {head[:2]!r}")
        csize = head[3] | head[4] << 8 | head[5] << 16
        usize = head[6] | head[7] << 8 | head[8] << 16
        block = zlib.decompress(raw[pos + 9 : pos + 9 + csize])
        if len(block) != usize:
            raise Unreadable("bad compressed block")
        out.append(block)
        pos += 9 + csize
    data = b"".join(out)
    if len(data) != objlen:
        raise Unreadable("bad compressed object")
    return data


def dir_keys(src: Source, at: int) -> list[tuple[str, str, NativeKey]]:
    """The key list of the directory record at ``at``: (class name, name, key) in file order."""
    head = src.get(at, at + _DIR_BIG.size)
    version, _c, _m, nbytes_keys, _n, _sd, _sp, seek_keys = _DIR_SMALL.unpack_from(head)
    if version > 1000:
        version, _c, _m, nbytes_keys, _n, _sd, _sp, seek_keys = _DIR_BIG.unpack_from(head)
    if seek_keys == 0:
        return []
    buf = bytes(src.get(seek_keys, seek_keys + nbytes_keys + 8))
    size = len(buf)
    out = []
    count = 0
    pos = 0
    for index in range(-1, 2**31):  # -1: the key list's own key, then the count, then the keys
        if index == count:
            break
        nbytes, version, objlen, _dt, keylen, _cycle, seek, _pdir = _KEY_SMALL.unpack_from(buf, pos)
        if version > 1000:
            nbytes, version, objlen, _dt, keylen, _cycle, seek, _pdir = _KEY_BIG.unpack_from(buf, pos)
            pos += _KEY_BIG.size
        else:
            pos += _KEY_SMALL.size
        n = buf[pos]
        classname = buf[pos + 1 : pos + 1 + n].decode(errors="surrogateescape") if n != 255 else None
        pos = _skip_string(buf, pos) if n == 255 else pos + 1 + n
        if classname is None:
            raise Unreadable("long class name")
        n = buf[pos]
        if n == 255:
            name, pos = _string(buf, pos)
        else:
            name = buf[pos + 1 : pos + 1 + n].decode(errors="surrogateescape")
            pos += 1 + n
        pos = _skip_string(buf, pos)  # title
        if pos > size:
            raise Unreadable("key record outside its list")
        if index == -1:
            (count,) = _I32.unpack_from(buf, pos)
            pos += 4
            if count < 0 or count > size:
                raise Unreadable("bad key count")
            continue
        out.append((classname, name, NativeKey(src, seek, keylen, nbytes, objlen)))
    return out


def walk(src: Source, top: int) -> list[Key]:
    """Every key below the directory record at ``top``, depth-first, directories before their contents, newest
    cycle only (the order of :func:`t0dqm.formats.rootcheck._walk`, the uproot walk)."""
    out: list[Key] = []

    def visit(at: int, folders: tuple[str, ...], above: frozenset[int]) -> None:
        if at in above or len(folders) > _MAX_DEPTH:
            raise Unreadable("directory loop")
        seen: set[str] = set()
        inner = above | {at}
        for classname, name, key in dir_keys(src, at):
            if name in seen:  # an older cycle of the same object
                continue
            seen.add(name)
            out.append(Key(folders, name, classname, key))
            if classname in DIR_CLASSES:
                visit(key.data_start, (*folders, name), inner)

    visit(top, (), frozenset())
    return out


def top_directory(head: Any, begin: int) -> int:
    """Seek of the top directory record: after the file's TKey and name (fBEGIN + fNbytesName)."""
    version = int.from_bytes(head[4:8], "big")
    at = 36 if version >= 1000000 else 28
    return begin + int.from_bytes(head[at : at + 4], "big")
