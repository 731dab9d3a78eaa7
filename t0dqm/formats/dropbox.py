"""The dropbox (upload) protocol shared by producers and the receiver.

Layout, as the original DQM GUI upload handler: ``<dropbox>/NNNN/<name>`` plus ``<name>.origin`` =
``"md5:<hex> <size> <source>\\n"``. NNNN is the first 4-digit folder in which neither the file nor any
``<name>.origin*`` / ``<name>.bad`` exists. The slot is reserved by hard-linking the staged file to its
name there: link() never replaces a name and is atomic on local file systems and over NFS (v3 and later),
so two uploaders on different hosts never get one slot; no flock, which is unreliable on network file
systems. An uploader whose link landed next to an older upload's markers (that upload was received in the
meantime) takes its link back and goes on to the next slot.

An upload is written to a hidden temp name (``<dropbox>/.uploading/``), fsync'ed, renamed into its slot,
and only then is the ``.origin`` written (itself temp + rename). The scanner only considers files whose
``.origin`` is complete, so a partial upload is never picked up.

Receive markers next to the file: ``<name>.origin.claimed`` (a receiver claimed it; its catalog lease says
whether that receiver is alive, see t0dqm.tasks.receive), ``<name>.origin.bad`` + ``<name>.bad``
(quarantined; never retried).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t0dqm import storage
from t0dqm.formats import naming

ORIGIN = ".origin"
CLAIMED = ".origin.claimed"
ORIGIN_BAD = ".origin.bad"
BAD = ".bad"
UPLOADING = ".uploading"
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
    ``claimed`` is True for an upload a receiver has claimed (alive or dead: its catalog lease decides).
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


MARKERS = (ORIGIN, CLAIMED, ORIGIN_BAD, BAD)


def slot_taken(folder: Path, name: str) -> bool:
    """True when ``folder`` already holds ``name`` or any of its markers."""
    return any(os.path.lexists(folder / (name + suffix)) for suffix in ("", *MARKERS))


def upload(
    path: str | os.PathLike[str],
    dropbox: str | os.PathLike[str],
    *,
    declared_size: int | None = None,
    source: str | None = None,
) -> Path:
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
        target = place(tmp, box, src.name)
        placed = True
        origin = target.with_name(target.name + ORIGIN)
        size_text = size if declared_size is None else declared_size
        write_atomic(origin, format_origin(md5.hexdigest(), size_text, source or str(src.resolve())).encode())
        return target
    finally:
        if not placed:
            tmp.unlink(missing_ok=True)


def place(tmp: Path, box: Path, name: str) -> Path:
    """Link the staged file ``tmp`` into the first free slot of ``box`` as ``name`` and drop ``tmp``;
    returns the new path. Safe for concurrent uploaders on several hosts (see the module docstring)."""
    for slot in range(MAX_SLOTS):
        folder = box / f"{slot:04d}"
        if slot_taken(folder, name):
            continue
        folder.mkdir(exist_ok=True)
        target = folder / name
        try:
            os.link(tmp, target)  # never replaces a name: the reservation
        except FileExistsError:
            continue  # another uploader got this slot first
        if any(os.path.lexists(folder / (name + suffix)) for suffix in MARKERS):
            _unlink_if_same(target, tmp)  # an older upload of this name is still being received here
            continue
        tmp.unlink()
        return target
    raise OSError(f"dropbox {box}: no free slot for {name} among {MAX_SLOTS}")


def _unlink_if_same(path: Path, ours: Path) -> None:
    """Remove ``path`` if it is still our link of ``ours`` (same inode)."""
    try:
        if os.path.samefile(path, ours):
            path.unlink()
    except FileNotFoundError:
        pass


def sort_key(c: Candidate) -> tuple[Any, ...]:
    """Run desc, version asc, release desc, dataset desc; names that do not classify last."""
    return _classified(c.name)[1]


@functools.lru_cache(maxsize=65536)
def _classified(name: str) -> tuple[naming.DqmName | None, tuple[Any, ...]]:
    """(classification or None, sort key) of an upload name; cached, as every scan sees the same names."""
    try:
        info: naming.DqmName | None = naming.classify(name)
    except naming.InvalidName:
        return None, (1, 0, 0, (), (), name)
    assert info is not None
    release = tuple(-ord(ch) for ch in (info.release or ""))
    dataset = tuple(-ord(ch) for ch in info.dataset)
    return info, (0, -info.run, info.version, release, dataset, name)


def scan_entries(dropbox: str | os.PathLike[str]) -> list[tuple[str, str, bool]]:
    """(slot, name, claimed) of every upload with a complete ``.origin`` or a claim, sorted as the receive
    daemon sorted them; plain strings, for the scanner's hot path. Whether a claim's receiver is alive is
    the catalog's business (receive takes the upload's lease or reports it busy)."""
    box = os.fspath(dropbox)
    out: list[tuple[tuple[Any, ...], str, str, bool]] = []
    try:
        slots = sorted(
            e.name
            for e in os.scandir(box)  # a symlinked slot may point outside: never follow
            if e.is_dir(follow_symlinks=False) and RX_SLOT.match(e.name)
        )
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
    """Uploads with a complete ``.origin`` or a claim, sorted as the receive daemon sorted them."""
    box = Path(dropbox)
    entries = scan_entries(box)
    if limit is not None:
        entries = entries[:limit]
    out = []
    for slot, name, claimed in entries:
        folder = box / slot
        out.append(
            Candidate(
                folder / name,
                folder / (name + (CLAIMED if claimed else ORIGIN)),
                _classified(name)[0],
                claimed,
            )
        )
    return out
