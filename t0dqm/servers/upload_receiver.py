"""One upload: small fields kept in memory, the file streamed to a temp file, verified, landed in the dropbox.

The HTTP layer feeds the multipart parts in order: :meth:`Receiver.start` when a part's headers are known,
:meth:`Receiver.data` with its content piece by piece, :meth:`Receiver.end` when it is complete; then
:meth:`Receiver.complete` (blocking: fsync, checks, landing; run it in a thread) or :meth:`Receiver.cleanup`.
The file name is checked and classified (:mod:`t0dqm.formats.naming`) when the file part starts, before any byte of
it is stored. Temp files live in ``<dropbox>/.uploading`` and are removed on every path but success.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from t0dqm.formats import dropbox, naming

log = logging.getLogger("t0dqm.servers.upload")

STATUS_OK = 100
STATUS_BAD_REQUEST = 200
STATUS_ERROR_PARAMETER = 300
STATUS_FAIL_EXECUTE = 400

MAX_FIELD = 4096
MAX_PARTS = 16
TEMP_SUFFIX = ".upload"
RX_SIZE = re.compile(r"^\d+$")
RX_CHECKSUM = re.compile(r"^(?:md5:([0-9a-fA-F]{32})|crc32:(\d+))$")
ROOT_MAGIC = b"root\0"


class UploadError(Exception):
    """An upload refused with a DQM status code; ``http`` is the HTTP status of the answer."""

    def __init__(self, code: int, message: str, detail: str = "", http: int = 500) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code, self.message, self.detail, self.http = code, message, detail, http


@dataclass
class Stored:
    path: Path
    size: int
    md5: str


class Receiver:
    """Receives the parts of one request into ``box`` (files up to ``max_size`` bytes)."""

    def __init__(self, box: Path, max_size: int) -> None:
        self.box, self.max_size = box, max_size
        self.fields: dict[str, str] = {}
        self.current: str | None = None
        self.field_buf = bytearray()
        self.name: str | None = None
        self.tmp: Path | None = None
        self.out: BinaryIO | None = None
        self.md5 = hashlib.md5()
        self.crc = 0
        self.want_crc = True
        self.size = 0
        self.head = b""
        self.files = 0
        self.parts = 0

    def start(self, name: str | None, filename: str | None) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(
                STATUS_BAD_REQUEST, "Malformed multipart body", f"more than {MAX_PARTS} parts", http=400
            )
        self.current = name
        if name != "file":
            self.field_buf = bytearray()
            return
        self.files += 1
        if self.files > 1 or not filename:
            raise UploadError(
                STATUS_BAD_REQUEST,
                "Incorrect or missing file argument",
                "Must provide a single file-type argument",
            )
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        try:
            naming.check_upload_name(base)
            naming.classify(base)
        except naming.InvalidName as exc:
            raise UploadError(
                STATUS_ERROR_PARAMETER, "File name does not match the expected convention", exc.reason
            ) from None
        declared = self.fields.get("size")
        if declared is not None and RX_SIZE.match(declared) and int(declared) > self.max_size:
            raise UploadError(
                STATUS_ERROR_PARAMETER,
                "File too large",
                f"declared size {declared} exceeds the limit {self.max_size}",
                http=413,
            )
        self.name = base
        # crc32 only when asked for (or when the checksum field has not arrived yet)
        self.want_crc = not self.fields.get("checksum", "").startswith("md5:")
        staging = self.box / dropbox.UPLOADING
        staging.mkdir(parents=True, exist_ok=True)
        self.tmp = staging / f"{base}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
        self.out = open(self.tmp, "wb")  # noqa: SIM115 - open for the whole upload; complete() or cleanup() closes it

    def data(self, chunk: bytes) -> None:
        """The next piece of the current part (checked, hashed, written)."""
        if self.accept(chunk):
            self.digest(chunk)
            self.write(chunk)

    def accept(self, chunk: bytes) -> bool:
        """Take a field's piece, or count a file's piece (True: it must still be digested and written)."""
        if self.current != "file":
            self.field_buf += chunk
            if len(self.field_buf) > MAX_FIELD:
                raise UploadError(STATUS_BAD_REQUEST, f"Malformed {self.current} argument", "field too long")
            return False
        self.size += len(chunk)
        if self.size > self.max_size:
            raise UploadError(
                STATUS_ERROR_PARAMETER, "File too large", f"exceeds the limit {self.max_size}", http=413
            )
        if len(self.head) < 5:
            self.head += chunk[: 5 - len(self.head)]
        return True

    def digest(self, chunk: bytes) -> None:
        """md5 (and crc32 when asked for) of the file's next piece; may run beside :meth:`write`."""
        self.md5.update(chunk)
        if self.want_crc:
            self.crc = zlib.crc32(chunk, self.crc)

    def write(self, chunk: bytes) -> None:
        assert self.out is not None
        self.out.write(chunk)

    def end(self) -> None:
        if self.current == "file" or not self.current:
            return
        if self.current in self.fields:
            raise UploadError(
                STATUS_BAD_REQUEST,
                f"Incorrect or missing {self.current} parameter",
                "Must provide single argument",
            )
        self.fields[self.current] = self.field_buf.decode("utf-8", errors="replace").strip()

    def cleanup(self) -> None:
        """Close and remove the temp file (any path but success)."""
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None

    def verify(self) -> None:
        size, checksum = self.fields.get("size"), self.fields.get("checksum")
        if self.name is None or self.tmp is None:
            raise UploadError(
                STATUS_BAD_REQUEST,
                "Incorrect or missing file argument",
                "Must provide a single file-type argument",
            )
        if size is None or not RX_SIZE.match(size):
            raise UploadError(STATUS_BAD_REQUEST, "Incorrect or missing size parameter", r"must match ^\d+$")
        m = RX_CHECKSUM.match(checksum or "")
        if not m:
            raise UploadError(
                STATUS_BAD_REQUEST, "Malformed checksum argument", "want md5:<hex> or crc32:<n>"
            )
        if self.head != ROOT_MAGIC:
            raise UploadError(
                STATUS_ERROR_PARAMETER, "Not a ROOT file", "File data contents do not represent a ROOT file"
            )
        if self.size != int(size):
            raise UploadError(
                STATUS_FAIL_EXECUTE,
                "Failed to save file data",
                f"Wrote {self.size} bytes, expected to write {size}",
            )
        if m.group(1) and m.group(1).lower() != self.md5.hexdigest():
            raise UploadError(
                STATUS_ERROR_PARAMETER,
                "Checksum mismatch",
                f"md5 of the data is {self.md5.hexdigest()}, declared {m.group(1).lower()}",
            )
        if m.group(2) and (not self.want_crc or int(m.group(2)) != self.crc):
            raise UploadError(
                STATUS_ERROR_PARAMETER,
                "Checksum mismatch",
                f"crc32 of the data is {self.crc}, declared {m.group(2)}",
            )

    def complete(self, source: str) -> Stored:
        """fsync, verify and land the file (blocking). UploadError when a check fails."""
        if self.out is not None:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            self.out = None
        self.verify()
        return self.land(source)

    def land(self, source: str) -> Stored:
        """Move the verified temp file into its dropbox slot, then write the .origin (the commit point)."""
        assert self.tmp is not None and self.name is not None
        try:
            target = dropbox.place(self.tmp, self.box, self.name)
        except OSError as exc:
            raise UploadError(STATUS_FAIL_EXECUTE, "Failed to save file data", str(exc)) from None
        self.tmp = None
        md5 = self.md5.hexdigest()
        dropbox.write_atomic(
            target.with_name(target.name + dropbox.ORIGIN),
            dropbox.format_origin(md5, self.size, source).encode(),
        )
        return Stored(target, self.size, md5)


def sweep_stale(box: Path, older_than: float) -> list[Path]:
    """Remove upload temp files left in ``<box>/.uploading`` by a server that died (mtime older than
    ``older_than`` seconds; a live upload writes at least once per idle timeout)."""
    removed: list[Path] = []
    limit = time.time() - older_than
    try:
        entries = list(os.scandir(box / dropbox.UPLOADING))
    except FileNotFoundError:
        return removed
    for entry in entries:
        try:
            if (
                entry.name.endswith(TEMP_SUFFIX)
                and entry.is_file(follow_symlinks=False)
                and entry.stat(follow_symlinks=False).st_mtime < limit
            ):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
                log.warning("removed a stale upload temp file %s", entry.path)
        except FileNotFoundError:
            continue
    return removed
