"""The dropbox (upload) protocol shared by producers and the receiver.

Layout, as the original DQM GUI upload handler: ``<dropbox>/NNNN/<name>`` plus ``<name>.origin`` =
``"md5:<hex> <size> <source>\\n"``. NNNN is the first 4-digit folder in which neither the file nor any
``<name>.origin*`` exists, chosen under an flock'ed lock file so two uploaders never pick the same slot.

An upload is written to a hidden temp name (``<dropbox>/.uploading/``), fsync'ed, renamed into its slot,
and only then is the ``.origin`` written (itself temp + rename). The scanner only considers files whose
``.origin`` is complete, so a partial upload is never picked up.

Receive markers next to the file: ``<name>.origin.claimed`` (a receiver holds it, under flock),
``<name>.origin.bad`` + ``<name>.bad`` (quarantined; never retried).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from t0dqm import naming, storage

ORIGIN = ".origin"
CLAIMED = ".origin.claimed"
ORIGIN_BAD = ".origin.bad"
BAD = ".bad"
UPLOADING = ".uploading"
LOCK = ".lock"
RX_SLOT = re.compile(r"^\d{4}$")
RX_ORIGIN = re.compile(r"^md5:([0-9a-f]{32}) (\d+) (.*)$")
RX_OLD_DN = re.compile(r"^https?:\S+ \[(.+)\]$")  # "http:<peer> [<subject>]" of the http.server endpoint
MAX_SLOTS = 10000


class OriginError(ValueError):
    """A .origin file that does not follow the protocol."""


@dataclass(frozen=True)
class Origin:
    """A parsed ``.origin``. ``source`` is one token from the upload server (``http:<peer>`` or
    ``https:<peer>;dn=<percent-encoded DN>``, which the original ``(\\S+)`` pattern also reads), a producer's
    ``host:path``, or free text with spaces written by older servers."""

    md5: str
    size: int
    source: str

    @property
    def dn(self) -> str | None:
        """The uploader's certificate subject, when the upload came over TLS (new and old forms)."""
        _peer, sep, dn = self.source.partition(";dn=")
        if sep:
            return urllib.parse.unquote(dn)
        m = RX_OLD_DN.match(self.source)
        return m.group(1) if m else None


@dataclass(frozen=True)
class Candidate:
    """An upload ready to receive: ``path`` (the file) and its complete ``origin`` marker.

    ``info`` is the classification of the name (None when it does not classify: receive quarantines it);
    ``claimed`` is True for a claim left by a receiver that died (its lock is free).
    """

    path: Path
    origin: Path
    info: naming.DqmName | None
    claimed: bool = False

    @property
    def name(self) -> str:
        return self.path.name


def parse_origin(text: str) -> Origin:
    """Parse ``md5:<hex> <size> <source>``; OriginError with the reason when malformed."""
    line = text.rstrip("\n")
    m = RX_ORIGIN.match(line)
    if not m:
        raise OriginError(f"malformed .origin {line[:120]!r} (want 'md5:<hex> <size> <source>')")
    return Origin(m.group(1), int(m.group(2)), m.group(3))


def format_origin(md5: str, size: int, source: str) -> str:
    return f"md5:{md5} {size} {source}\n"


def read_origin(path: str | os.PathLike[str]) -> Origin:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return parse_origin(fh.read(4096))


def write_atomic(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to a hidden temp name next to ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())
    os.replace(tmp, path)


@contextmanager
def locked(lock_path: Path) -> Iterator[None]:
    """Exclusive flock on ``lock_path`` for the block (blocking)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def slot_taken(folder: Path, name: str) -> bool:
    """True when ``folder`` already holds ``name`` or any of its markers."""
    return any(os.path.lexists(folder / (name + suffix)) for suffix in ("", ORIGIN, CLAIMED, ORIGIN_BAD, BAD))


def upload(path: str | os.PathLike[str], dropbox: str | os.PathLike[str], *, declared_size: int | None = None,
           source: str | None = None) -> Path:
    """Upload one file into the dropbox; return the path of the uploaded file.

    The name is checked as the upload handler did (charset and shape). ``declared_size`` lets tests
    lie about the size in the .origin (a producer bug the receiver must catch).
    """
    src = Path(path)
    naming.check_upload_name(src.name)
    box = Path(dropbox)
    staging = box / UPLOADING
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{src.name}.{uuid.uuid4().hex}"
    md5 = hashlib.md5()
    placed = False
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            size = storage.copy_stream(fin, fout, checksums=[md5])
            fout.flush()
            os.fsync(fout.fileno())
        st = src.stat()
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        with locked(box / LOCK):
            target = _place(tmp, box, src.name)
        placed = True
        origin = target.with_name(target.name + ORIGIN)
        size_text = size if declared_size is None else declared_size
        write_atomic(origin, format_origin(md5.hexdigest(), size_text, source or str(src.resolve())).encode())
        return target
    finally:
        if not placed:
            tmp.unlink(missing_ok=True)


def _place(tmp: Path, box: Path, name: str) -> Path:
    for slot in range(MAX_SLOTS):
        folder = box / f"{slot:04d}"
        if slot_taken(folder, name):
            continue
        folder.mkdir(exist_ok=True)
        target = folder / name
        os.link(tmp, target)  # never overwrites (we hold the lock, and link refuses an existing name)
        tmp.unlink()
        return target
    raise OSError(f"dropbox {box}: no free slot for {name} among {MAX_SLOTS}")


def sort_key(c: Candidate) -> tuple:
    """Run desc, version asc, release desc, dataset desc; names that do not classify last."""
    return _classified(c.name)[1]


@functools.lru_cache(maxsize=65536)
def _classified(name: str) -> tuple[naming.DqmName | None, tuple]:
    """(classification or None, sort key) of an upload name; cached, as every scan sees the same names."""
    try:
        info: naming.DqmName | None = naming.classify(name)
    except naming.InvalidName:
        return None, (1, 0, 0, (), (), name)
    assert info is not None
    release = tuple(-ord(ch) for ch in (info.release or ""))
    dataset = tuple(-ord(ch) for ch in info.dataset)
    return info, (0, -info.run, info.version, release, dataset, name)


def claim_is_stale(claim: Path) -> bool:
    """True when nobody holds the flock of a ``.origin.claimed`` file (its receiver died)."""
    try:
        fd = os.open(claim, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def scan_entries(dropbox: str | os.PathLike[str]) -> list[tuple[str, str, bool]]:
    """(slot, name, claimed) of every upload with a complete ``.origin`` (plus stale claims), sorted as the
    receive daemon sorted them; plain strings, for the scanner's hot path."""
    box = os.fspath(dropbox)
    out: list[tuple[tuple, str, str, bool]] = []
    try:
        slots = sorted(e.name for e in os.scandir(box)  # a symlinked slot may point outside: never follow
                       if e.is_dir(follow_symlinks=False) and RX_SLOT.match(e.name))
    except FileNotFoundError:
        return []
    for slot in slots:
        folder = os.path.join(box, slot)
        try:
            entries = os.listdir(folder)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.endswith(CLAIMED):
                name, claimed = entry[: -len(CLAIMED)], True
                if not claim_is_stale(Path(folder, entry)):
                    continue
            elif entry.endswith(ORIGIN):
                name, claimed = entry[: -len(ORIGIN)], False
            else:
                continue
            if name.startswith("."):
                continue
            out.append((_classified(name)[1], slot, name, claimed))
    out.sort(key=lambda e: e[0])
    return [(slot, name, claimed) for _key, slot, name, claimed in out]


def scan(dropbox: str | os.PathLike[str], limit: int | None = None) -> list[Candidate]:
    """Uploads with a complete ``.origin`` (plus stale claims), sorted as the receive daemon sorted them."""
    box = Path(dropbox)
    entries = scan_entries(box)
    if limit is not None:
        entries = entries[:limit]
    out = []
    for slot, name, claimed in entries:
        folder = box / slot
        out.append(Candidate(folder / name, folder / (name + (CLAIMED if claimed else ORIGIN)), _classified(name)[0],
                             claimed))
    return out
