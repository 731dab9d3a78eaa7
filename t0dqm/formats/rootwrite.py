"""Write ROOT files in the TDirectory layout record by record, as ROOT's TFile does (no ROOT needed).

CMSSW's DQMStore writes the legacy DQM format through ROOT: ``TFile::Open(name, "RECREATE")``, one
``mkdir`` per folder, ``Write()`` per object, ``Close()``. This module lays the file out the same way,
following ROOT's documentation of TFile, TKey, TDirectoryFile and TFree:

* the 100-byte file header, then at ``fBEGIN`` the TFile key holding the top directory record;
* a key per folder (class ``TDirectory``) holding its 60-byte directory record, written when created;
* a key per object: header (class, name, title) and the object, zlib-compressed in ``ZL`` blocks when
  it is longer than 256 bytes and compression makes it shorter (ROOT's rule);
* on close: the StreamerInfo list, every directory's key list (``KeysList``) with its directory record
  updated in place, the free segments list (``FreeSegments``), then the header.

Space is managed as ROOT's TFree list does: a record goes into the first free segment it fills exactly,
else the first that leaves at least 4 bytes, else at the end of the file. A released record becomes a
free gap marked in place with its negative length and listed in the free segments; adjacent gaps merge.
So every byte from ``fBEGIN`` to ``fEND`` is a key record or a marked gap, the walk of ROOT's
``TFile::Map`` (and of the DQM GUI's reader, which follows records one after another) never meets a
zero length, and the free list matches the gaps. The last free segment is the file's tail,
``[fEND, 2000000000]``. Only small files (< 2 GB, 32-bit seeks) are written.
"""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from dataclasses import dataclass, field

BEGIN = 100  # fBEGIN: the first record
START_BIG_FILE = 2_000_000_000  # TFile::kStartBigFile: the tail free segment ends here
FILE_VERSION = 63006  # ROOT 6.30/06, small file
KEY_VERSION = 4  # TKey with 32-bit seeks
DIR_VERSION = 5  # TDirectoryFile
DIR_RECORD = 60  # TDirectoryFile::Sizeof(): 48 bytes + 12 spare for 64-bit seeks
MIN_COMPRESS = 256  # ROOT compresses objects longer than this
MAX_BLOCK = 0xFFFFFF  # largest compression block (3-byte sizes)
_KEY = struct.Struct(">ihiIhhii")  # fNbytes fVersion fObjlen fDatime fKeylen fCycle fSeekKey fSeekPdir
_DIR = struct.Struct(
    ">hIIiiiii"
)  # fVersion fDatimeC fDatimeM fNbytesKeys fNbytesName fSeekDir fSeekParent fSeekKeys
_FREE = struct.Struct(">hii")  # TFree version 1: fFirst fLast (inclusive)
_HEADER = struct.Struct(">4siiiiiiiBiii")


class RootWriteError(ValueError):
    """The file would not fit the small-file format, or a record is inconsistent."""


def datime(when: float) -> int:
    """ROOT's packed TDatime (local time, as ROOT writes it)."""
    t = time.localtime(when)
    return (
        (t.tm_year - 1995) << 26
        | t.tm_mon << 22
        | t.tm_mday << 17
        | t.tm_hour << 12
        | t.tm_min << 6
        | t.tm_sec
    )


def tstring(text: str | bytes) -> bytes:
    """A ROOT string: one length byte, or 255 and a 4-byte length, then the bytes."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) < 255:
        return bytes((len(raw),)) + raw
    return b"\xff" + struct.pack(">i", len(raw)) + raw


def compress(payload: bytes, level: int) -> bytes:
    """ROOT's compression of one object: ``ZL`` blocks, or the payload itself when that is shorter."""
    if level <= 0 or len(payload) <= MIN_COMPRESS:
        return payload
    out = []
    for start in range(0, len(payload), MAX_BLOCK):
        chunk = payload[start : start + MAX_BLOCK]
        packed = zlib.compress(chunk, level)
        out.append(b"ZL\x08" + len(packed).to_bytes(3, "little") + len(chunk).to_bytes(3, "little") + packed)
    data = b"".join(out)
    return data if len(data) < len(payload) else payload


def tobjstring(text: str) -> bytes:
    """A streamed TObjString (byte count, version 1, TObject, the string)."""
    body = struct.pack(">hhII", 1, 1, 0, 0) + tstring(text)
    return struct.pack(">I", 0x40000000 | len(body)) + body


@dataclass
class Directory:
    """One TDirectoryFile: where its key and record are, and the key headers of its content."""

    name: str
    title: str
    seek_dir: int  # its key's seek (fSeekDir); parents and children point here
    nbytes_name: int  # from fSeekDir to the directory record
    parent: Directory | None
    uuid: bytes = field(default_factory=lambda: uuid.uuid4().bytes)
    keys: list[bytes] = field(default_factory=list)  # key headers, in creation order
    children: list[Directory] = field(default_factory=list)
    seek_keys: int = 0
    nbytes_keys: int = 0


class RootWriter:
    """Build one ROOT file in memory; :meth:`close` returns its bytes.

    ``streamer_info``: the uncompressed TList of TStreamerInfo records written as ``StreamerInfo`` (a
    small-key TList payload, as read from another file's StreamerInfo key).
    """

    def __init__(
        self,
        name: str,
        *,
        title: str = "",
        compression: int = 1,
        streamer_info: bytes = b"",
        when: float | None = None,
    ) -> None:
        self.level = compression
        self.streamer_info = streamer_info
        self.now = time.time() if when is None else when
        self.datime = datime(self.now)
        self.buf = bytearray(BEGIN)
        self.end = BEGIN
        self.free: list[list[int]] = [[BEGIN, START_BIG_FILE]]  # inclusive segments; the last is the tail
        self.seek_info = self.nbytes_info = self.seek_free = self.nbytes_free = 0
        self.closed = False
        names = tstring(name) + tstring(title)
        keylen = self._keylen("TFile", name, title)
        nbytes = keylen + len(names) + DIR_RECORD
        seek = self._alloc(nbytes)
        self.top = Directory(name, title, seek, keylen + len(names), None)
        head = _KEY.pack(nbytes, KEY_VERSION, len(names) + DIR_RECORD, self.datime, keylen, 1, seek, 0)
        self._put(seek, head + self._strings("TFile", name, title) + names)
        self._write_dir_header(self.top)

    # -- space, as TFree does it ----------------------------------------------------------------------
    def _alloc(self, nbytes: int) -> int:
        """Seek of a new record of ``nbytes``: exact fit, else first fit leaving >= 4 bytes, else the tail."""
        best = None
        for i, (first, last) in enumerate(self.free):
            size = last - first + 1
            if size == nbytes:
                if i == len(self.free) - 1:
                    break  # never the whole tail
                del self.free[i]
                return first
            if size > nbytes + 3 and best is None:
                best = i
        assert best is not None  # the tail always fits
        first, last = self.free[best]
        self.free[best][0] = first + nbytes
        if best == len(self.free) - 1:
            self.end = first + nbytes
            if self.end > START_BIG_FILE:
                raise RootWriteError("file larger than 2 GB: big-file records are not written")
        else:
            self._mark(first + nbytes, last - (first + nbytes) + 1)
        return first

    def _release(self, first: int, nbytes: int) -> None:
        """Free a record: merge it into the free list and mark the resulting gap with its negative length."""
        last = first + nbytes - 1
        segments = self.free
        for i, seg in enumerate(segments):
            if seg[1] == first - 1:
                seg[1] = last
                if i + 1 < len(segments) and segments[i + 1][0] == last + 1:
                    seg[1] = segments[i + 1][1]
                    del segments[i + 1]
                break
            if seg[0] == last + 1:
                seg[0] = first
                break
            if first < seg[0]:
                segments.insert(i, [first, last])
                seg = segments[i]  # noqa: PLW2901 - the new segment is the one marked after the loop
                break
        else:  # pragma: no cover - the tail segment always follows a released record
            raise RootWriteError(f"record at {first} is past the tail free segment")
        if seg is segments[-1]:  # the gap joined the tail: the file ends where the gap starts
            self.end = seg[0]
            del self.buf[self.end :]
        else:
            self._mark(seg[0], seg[1] - seg[0] + 1)

    def _mark(self, first: int, nbytes: int) -> None:
        self._put(first, struct.pack(">i", -nbytes))

    def _put(self, at: int, data: bytes) -> None:
        stop = at + len(data)
        if stop > len(self.buf):
            self.buf.extend(bytes(stop - len(self.buf)))
        self.buf[at:stop] = data

    # -- records --------------------------------------------------------------------------------------
    @staticmethod
    def _strings(classname: str, name: str, title: str) -> bytes:
        return tstring(classname) + tstring(name) + tstring(title)

    def _keylen(self, classname: str, name: str, title: str) -> int:
        return _KEY.size + len(self._strings(classname, name, title))

    def _write_key(
        self, classname: str, name: str, title: str, payload: bytes, pdir: int, cycle: int = 1
    ) -> tuple[int, int, bytes]:
        """Write one key record; (seek, nbytes, key header)."""
        strings = self._strings(classname, name, title)
        keylen = _KEY.size + len(strings)
        data = compress(payload, self.level)
        nbytes = keylen + len(data)
        seek = self._alloc(nbytes)
        head = _KEY.pack(nbytes, KEY_VERSION, len(payload), self.datime, keylen, cycle, seek, pdir) + strings
        self._put(seek, head + data)
        return seek, nbytes, head

    def mkdir(self, parent: Directory, name: str, title: str | None = None) -> Directory:
        """A sub-directory of ``parent`` (title defaults to the name, as TDirectory::mkdir does)."""
        if self.closed:
            raise RootWriteError("file is closed")
        if not name or "/" in name:
            raise RootWriteError(f"bad directory name {name!r}")
        title = name if title is None else title
        strings = self._strings("TDirectory", name, title)
        keylen = _KEY.size + len(strings)
        seek = self._alloc(keylen + DIR_RECORD)
        head = (
            _KEY.pack(
                keylen + DIR_RECORD, KEY_VERSION, DIR_RECORD, self.datime, keylen, 1, seek, parent.seek_dir
            )
            + strings
        )
        self._put(seek, head)
        child = Directory(name, title, seek, keylen, parent)
        self._write_dir_header(child)
        parent.keys.append(head)
        parent.children.append(child)
        return child

    def put(self, directory: Directory, classname: str, name: str, title: str, payload: bytes) -> None:
        """Write an object (its streamed bytes) into ``directory`` under the key ``name``."""
        if self.closed:
            raise RootWriteError("file is closed")
        _seek, _nbytes, head = self._write_key(classname, name, title, payload, directory.seek_dir)
        directory.keys.append(head)

    def _write_dir_header(self, d: Directory) -> None:
        parent = d.parent.seek_dir if d.parent else 0
        record = (
            _DIR.pack(
                DIR_VERSION,
                self.datime,
                self.datime,
                d.nbytes_keys,
                d.nbytes_name,
                d.seek_dir,
                parent,
                d.seek_keys,
            )
            + struct.pack(">h", 1)
            + d.uuid
            + bytes(12)
        )
        self._put(d.seek_dir + d.nbytes_name, record)

    def _write_keys(self, d: Directory) -> None:
        """TDirectoryFile::WriteKeys: free the old key list, write the new one, then the record."""
        if d.seek_keys:
            self._release(d.seek_keys, d.nbytes_keys)
        payload = struct.pack(">i", len(d.keys)) + b"".join(d.keys)
        classname = "TFile" if d.parent is None else "TDirectory"
        strings = self._strings(classname, d.name, d.title)
        keylen = _KEY.size + len(strings)
        nbytes = keylen + len(payload)  # key lists are never compressed
        seek = self._alloc(nbytes)
        head = (
            _KEY.pack(nbytes, KEY_VERSION, len(payload), self.datime, keylen, 1, seek, d.seek_dir) + strings
        )
        self._put(seek, head + payload)
        d.seek_keys, d.nbytes_keys = seek, nbytes
        self._write_dir_header(d)

    def save(self) -> None:
        """TDirectoryFile::Save: every directory's key list and record, top first, then depth first."""
        stack = [self.top]
        while stack:
            d = stack.pop()
            self._write_keys(d)
            stack.extend(reversed(d.children))

    def _write_streamer_info(self) -> None:
        if self.seek_info:
            self._release(self.seek_info, self.nbytes_info)
        self.seek_info, self.nbytes_info, _ = self._write_key(
            "TList", "StreamerInfo", "Doubly linked list", self.streamer_info, self.top.seek_dir
        )

    def _write_free(self) -> None:
        """TFile::WriteFree: the free segments list, sized before its own key takes space."""
        if self.seek_free:
            self._release(self.seek_free, self.nbytes_free)
        planned = len(self.free) * _FREE.size
        name, title = self.top.name, self.top.title
        strings = self._strings("TFile", name, title)
        keylen = _KEY.size + len(strings)
        seek = self._alloc(keylen + planned)
        payload = b"".join(_FREE.pack(1, first, last) for first, last in self.free)
        payload = payload.ljust(planned, b"\0")  # one segment fewer when the key filled a gap exactly
        head = (
            _KEY.pack(keylen + planned, KEY_VERSION, planned, self.datime, keylen, 1, seek, self.top.seek_dir)
            + strings
        )
        self._put(seek, head + payload)
        self.seek_free, self.nbytes_free = seek, keylen + planned

    def _write_header(self) -> None:
        compress_setting = 100 + self.level if self.level > 0 else 0
        head = (
            _HEADER.pack(
                b"root",
                FILE_VERSION,
                BEGIN,
                self.end,
                self.seek_free,
                self.nbytes_free,
                len(self.free),
                self.top.nbytes_name,
                4,
                compress_setting,
                self.seek_info,
                self.nbytes_info,
            )
            + struct.pack(">h", 1)
            + self.top.uuid
        )
        self._put(0, head)

    def close(self) -> bytes:
        """TFile::Close: StreamerInfo, key lists and records, free segments, header; the file's bytes."""
        if not self.closed:
            self._write_streamer_info()
            self.save()
            self._write_free()
            self._write_header()
            self.closed = True
            del self.buf[self.end :]
        return bytes(self.buf)
