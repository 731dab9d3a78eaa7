"""Storage: one interface over local paths and root:// URLs (XRootD Python client).

Every call takes a timeout in seconds. Checksums are adler32 as 8 lowercase zero-padded hex digits,
seeded 1 (the XRootD / EOS / CTA convention). A copy is checked end to end and a bad target is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, BinaryIO

CHUNK = 1 << 20  # 1 MiB: measured ~2x faster than 8 KiB pieces

_ROOT_URL = re.compile(r"^(?P<server>(?:root|xroot)s?://[^/]+)/(?P<path>/.*)$")


class StorageError(OSError):
    """A storage call failed; the message names the URL and the cause."""


class ChecksumMismatch(StorageError):
    """The target's checksum differs from the source's; the bad target has been removed."""


class NotFound(StorageError):
    pass


@dataclass(frozen=True)
class Stat:
    size: int
    mtime: float
    is_dir: bool
    on_tape: bool | None = None  # None: the endpoint does not report it
    offline: bool = False


@dataclass(frozen=True)
class Entry:
    name: str
    size: int
    mtime: float
    is_dir: bool


def format_adler32(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def normalise_adler32(text: str) -> str:
    """Accept hex with or without leading zeros (as EOS/CASTOR print it) and return the canonical form."""
    return format_adler32(int(text.strip(), 16))


class Adler32:
    """Incremental adler32 for a stream read once."""

    def __init__(self) -> None:
        self.value = 1

    def update(self, data: bytes | memoryview) -> None:
        self.value = zlib.adler32(data, self.value)

    def hexdigest(self) -> str:
        return format_adler32(self.value)


def adler32_file(path: str | os.PathLike[str], chunk: int = CHUNK) -> str:
    cks = Adler32()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            cks.update(block)
    return cks.hexdigest()


def copy_stream(src: BinaryIO, dst: IO[bytes], chunk: int = CHUNK, checksums: Iterable[object] = ()) -> int:
    """Copy src to dst in MiB chunks, feeding each chunk to every checksum object; return bytes copied."""
    sinks = list(checksums)
    total = 0
    buf = bytearray(chunk)
    view = memoryview(buf)
    while n := src.readinto(buf):  # type: ignore[attr-defined]
        piece = view[:n]
        dst.write(piece)
        for sink in sinks:
            sink.update(piece)  # type: ignore[attr-defined]
        total += n
    return total


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a rename or link in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_remote(url: str) -> bool:
    return url.startswith(("root://", "xroot://", "roots://", "xroots://"))


def split_url(url: str) -> tuple[str, str]:
    """root://host:port//abs/path -> ("root://host:port", "/abs/path")."""
    match = _ROOT_URL.match(url)
    if not match:
        raise StorageError(f"not a root:// URL with an absolute path: {url!r}")
    return match["server"], match["path"]


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local directory or a root:// URL."""
    out = base.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


_client_configured = False


def _xrootd_client():
    """The XRootD client module, configured once: timeouts are checked every second (the default
    resolution of 15 s would make a dead endpoint cost 15 s per call whatever timeout we pass)."""
    global _client_configured
    from XRootD import client

    if not _client_configured:
        client.EnvPutInt("TimeoutResolution", 1)
        _client_configured = True
    return client


def _fs(server: str):
    return _xrootd_client().FileSystem(server)


def _check(status, what: str, url: str) -> None:
    if not status.ok:
        if status.errno == 3011 or "No such file" in status.message or "not found" in status.message.lower():
            raise NotFound(f"{what} {url}: {status.message.strip()}")
        raise StorageError(f"{what} {url}: {status.message.strip()}")


def _timeout(value: float) -> int:
    return max(1, int(value))


# -- metadata -------------------------------------------------------------------------------------


def stat(url: str, timeout: float) -> Stat | None:
    """Size, mtime and tape status, or None when the path does not exist."""
    if not is_remote(url):
        try:
            st = os.stat(url)
        except FileNotFoundError:
            return None
        return Stat(size=st.st_size, mtime=st.st_mtime, is_dir=os.path.isdir(url))
    from XRootD.client.flags import StatInfoFlags

    server, path = split_url(url)
    status, info = _fs(server).stat(path, timeout=_timeout(timeout))
    if not status.ok:
        if status.errno == 3011 or "No such file" in status.message:
            return None
        raise StorageError(f"stat {url}: {status.message.strip()}")
    flags = info.flags
    return Stat(
        size=info.size,
        mtime=float(info.modtime),
        is_dir=bool(flags & StatInfoFlags.IS_DIR),
        on_tape=bool(flags & StatInfoFlags.BACKUP_EXISTS),
        offline=bool(flags & StatInfoFlags.OFFLINE),
    )


def checksum(url: str, timeout: float) -> str:
    """adler32 of a file: computed for a local path, asked of the server for a root:// URL."""
    if not is_remote(url):
        if not os.path.isfile(url):
            raise NotFound(f"checksum {url}: no such file")
        return adler32_file(url)
    from XRootD.client.flags import QueryCode

    server, path = split_url(url)
    status, reply = _fs(server).query(
        QueryCode.CHECKSUM, path + "?cks.type=adler32", timeout=_timeout(timeout)
    )
    _check(status, "checksum", url)
    text = reply.decode(errors="replace").strip("\x00 \n")
    kind, _, value = text.partition(" ")
    if kind.lower() != "adler32" or not value:
        raise StorageError(f"checksum {url}: unexpected reply {text!r}")
    return normalise_adler32(value)


def mkdir(url: str, timeout: float) -> None:
    """Make the directory and its parents; no error if it exists."""
    if not is_remote(url):
        os.makedirs(url, exist_ok=True)
        return
    from XRootD.client.flags import MkDirFlags

    server, path = split_url(url)
    status, _ = _fs(server).mkdir(path, MkDirFlags.MAKEPATH, timeout=_timeout(timeout))
    if not status.ok and "exist" not in status.message.lower():
        _check(status, "mkdir", url)


def remove(url: str, timeout: float) -> bool:
    """Remove a file; False when it was already gone. Callers that delete data use t0dqm.deleter."""
    if not is_remote(url):
        try:
            os.unlink(url)
            return True
        except FileNotFoundError:
            return False
    server, path = split_url(url)
    status, _ = _fs(server).rm(path, timeout=_timeout(timeout))
    if not status.ok:
        if status.errno == 3011 or "No such file" in status.message:
            return False
        _check(status, "remove", url)
    return True


def listdir(url: str, timeout: float) -> list[Entry]:
    if not is_remote(url):
        out = []
        with os.scandir(url) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                out.append(Entry(entry.name, st.st_size, st.st_mtime, entry.is_dir(follow_symlinks=False)))
        return sorted(out, key=lambda e: e.name)
    from XRootD.client.flags import DirListFlags, StatInfoFlags

    server, path = split_url(url)
    status, listing = _fs(server).dirlist(path, DirListFlags.STAT, timeout=_timeout(timeout))
    _check(status, "listdir", url)
    return sorted(
        (
            Entry(
                e.name,
                e.statinfo.size,
                float(e.statinfo.modtime),
                bool(e.statinfo.flags & StatInfoFlags.IS_DIR),
            )
            for e in listing
        ),
        key=lambda e: e.name,
    )


# -- copy -----------------------------------------------------------------------------------------


def _copy_local(src: str, dst: str, expected: str | None) -> str:
    os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(dst) or ".")
    try:
        source_cks = Adler32()
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            copy_stream(fin, fout, checksums=[source_cks])
            fout.flush()
            os.fsync(fout.fileno())
        source_sum = source_cks.hexdigest()
        if expected and source_sum != expected:
            raise ChecksumMismatch(f"copy {src}: source adler32 {source_sum} != expected {expected}")
        target_sum = adler32_file(tmp)  # read back: end to end, not only what we meant to write
        if target_sum != source_sum:
            raise ChecksumMismatch(f"copy {src} -> {dst}: target adler32 {target_sum} != source {source_sum}")
        shutil.copystat(src, tmp)
        os.replace(tmp, dst)
        tmp = ""
        return source_sum
    finally:
        if tmp:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass


def copy(
    src: str, dst: str, *, timeout: float, expected_adler32: str | None = None, force: bool = False
) -> str:
    """Copy src to dst (either may be root://), making parent directories, verified end to end.

    With ``expected_adler32`` the source is not re-read for its checksum (the caller computed it while
    writing); the target's checksum must equal it. A target with a wrong checksum is removed and
    ChecksumMismatch raised. An existing target is an error unless ``force``; with ``force`` a remote
    target (such as a killed copy's partial file) is removed first. Copies never use POSC.
    Returns the verified adler32.
    """
    existing = stat(dst, timeout)
    if existing is not None and not force:
        raise FileExistsError(f"copy target exists: {dst}")
    if not is_remote(src) and not is_remote(dst):
        return _copy_local(src, dst, expected_adler32)
    if existing is not None and is_remote(dst) and not existing.is_dir:
        # e.g. the leftover of a killed copy: remove it rather than overwrite in place (the server
        # caches checksums by whole-second mtime, so a rewrite within a second could report the old one)
        remove(dst, timeout)
    process = _xrootd_client().CopyProcess()
    # No POSC, hence no rmBadCksum (xrdcp 5.5: it "enables also POSC semantics"): the server holds a
    # killed POSC copy's file open for ofs.persist (600 s) and every retry fails with "already opened"
    # or "text file busy". A plain leftover is removed by the next attempt instead, and a bad target
    # is removed by us below.
    job = dict(
        force=force,
        mkdir=True,
        checksumtype="adler32",
        cptimeout=_timeout(timeout),
        inittimeout=min(_timeout(timeout), 60),
        parallelchunks=4,
        chunksize=8 * CHUNK,
    )
    if expected_adler32:
        job.update(checksummode="target", checksumpreset=expected_adler32)
    else:
        job.update(checksummode="end2end")
    process.add_job(src, dst, **job)
    status = process.prepare()
    if not status.ok:
        raise StorageError(f"copy {src} -> {dst}: prepare: {status.message.strip()}")
    status, results = process.run()
    job_status = results[0]["status"] if results else status
    if not status.ok or not job_status.ok:
        message = (job_status.message or status.message).strip()
        bad_checksum = (
            "checksum" in message.lower()
            or getattr(job_status, "errno", 0) == 3019
            or getattr(job_status, "code", 0) == 305
        )
        if bad_checksum:
            remove(dst, timeout)  # a target that failed its checksum is ours to remove
            raise ChecksumMismatch(f"copy {src} -> {dst}: checksum mismatch: {message}")
        raise StorageError(f"copy {src} -> {dst}: {message}")
    verified = checksum(dst, timeout)
    reference = expected_adler32 or (checksum(src, timeout) if is_remote(src) else None)
    if reference and verified != normalise_adler32(reference):
        remove(dst, timeout)
        raise ChecksumMismatch(f"copy {src} -> {dst}: target adler32 {verified} != {reference}")
    return verified
