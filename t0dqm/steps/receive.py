"""Step: receive (visDQMReceiveDaemon) and create-info (visDQMCreateInfoDaemon), Celery-free.

:func:`receive_batch` files uploads: claim, checks, version, move, .dqminfo, catalog row, partial index,
then returns the next steps (merge, import, zip, GUI registration). :func:`receive_one` files one upload
with no broker (the CLI's ``t0dqm receive --once`` calls it directly). The tasks are in
:mod:`t0dqm.tasks.receive`.

Claim: the receiver takes the catalog lease ``receive:<flavour>:<slot>/<name>`` and renames
``<name>.origin`` to ``<name>.origin.claimed``; it holds the lease until the upload is filed. A second
receiver of the same upload finds the lease held and returns at once ("busy"); a claim whose holder is dead
is taken over through the lease (Catalog.acquire_lease decides, on any host). Nothing rests on flock, which
is unreliable on a network file system: the dropbox may be shared by receivers on several hosts.

Crash safety: the version is reserved by creating the target ``.dqminfo`` exclusively (hard link of a
temp file: fails if it exists) BEFORE the ROOT file is linked into the repository. The .dqminfo carries
the claim's ``receipt`` (inode and mtime of the .origin, which never change), so a receiver resuming a
dead one's claim finds its reservation while probing versions and finishes the job at the same version:
link (idempotent: same inode), catalog row (unique path), remove the claim. Nothing is filed twice.

Bad uploads: a ``quarantine`` row with the reason, a ``<name>.bad`` marker holding the reason, and the
claim renamed to ``<name>.origin.bad``; the file stays in the dropbox, is never retried and never
deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

# = celery.exceptions.SoftTimeLimitExceeded (steps stay Celery-free); billiard ships no type information
from billiard.exceptions import SoftTimeLimitExceeded  # type: ignore[import-untyped]
from sqlalchemy.exc import IntegrityError

from t0dqm import config, storage
from t0dqm.catalog import files
from t0dqm.catalog.db import Catalog, worker_identity
from t0dqm.catalog.states import INDEX_PARTIAL, INDEX_PENDING, INDEX_SKIPPED, RECEIVED
from t0dqm.formats import dropbox, naming, rootcheck
from t0dqm.steps import gui as steps_gui
from t0dqm.steps import index as steps_index
from t0dqm.steps import next as steps_next
from t0dqm.steps.next import Context, LeaseBusy, Next

if TYPE_CHECKING:
    from t0dqm.catalog.files import Connection

logger = logging.getLogger("t0dqm.tasks.receive")

IMPORT_TASK = steps_index.IMPORT_TASK
ZIP_TASK = "t0dqm.tasks.archive.zip_file"
FILE_TASK = "t0dqm.tasks.receive.receive_file"
BATCH_TASK = "t0dqm.tasks.receive.receive_batch"
SCAN_TASK = "t0dqm.tasks.receive.scan"
CREATE_INFO_TASK = "t0dqm.tasks.receive.create_info"
PER_TASK = 25  # uploads per receive_batch message: amortises Celery, Redis and catalog overhead
BATCH_BUDGET = 300.0  # seconds a batch may spend before it leaves the rest for the next scan
MAX_VERSION = 9999
BUSY_RESCAN = 30  # seconds before the scan sends an upload whose claim was held by a live receiver again
RX_REPO_ONLINE = re.compile(r"^DQM_V\d{4}(_[A-Za-z0-9]+)?_R\d{9}\.root$")
MERGED_FILE = "Merged File"


class Rejected(Exception):
    """An upload that fails a check; ``reason`` goes to the quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What receive did with one upload: status filed | quarantined | busy | gone | refused, or (batches)
    error (unexpected; the claim is left for the next scan) | deferred (not tried: out of time)."""

    status: str
    path: str
    file_id: int | None = None
    target: str | None = None
    version: int | None = None
    reason: str | None = None
    index_state: str | None = None


@dataclass
class _Filing:
    """One upload between its link into the repository and its catalog row."""

    p: Path
    rel: str  # upload path relative to the dropbox
    claim: Path
    info: naming.DqmName
    target: Path
    relpath: str  # repository path
    dqinfo: dict[str, Any]
    mes: list[rootcheck.ME] | None  # None when resumed from a reservation (import_file reads them)

    @property
    def version(self) -> int:
        return int(self.dqinfo["version"])


# -- helpers ----------------------------------------------------------------------------------------


def _with_timeout(fn: Callable[[], Any], seconds: float, what: str) -> Any:
    """Run fn in a daemon thread; Rejected when it takes longer than ``seconds``."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc

    worker = threading.Thread(target=target, name=f"t0dqm-{what}", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise Rejected(f"{what} timed out after {seconds:g} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def checksums(path: Path) -> tuple[int, str, str]:
    """(size, md5 hex, adler32 hex) in one pass over the file."""
    md5 = hashlib.md5()
    adler = storage.Adler32()
    size = 0
    with open(path, "rb") as fh:
        buf = bytearray(storage.CHUNK)
        view = memoryview(buf)
        while n := fh.readinto(buf):
            piece = view[:n]
            md5.update(piece)
            adler.update(piece)
            size += n
    return size, md5.hexdigest(), adler.hexdigest()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    dropbox.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())


def read_dqminfo(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _create_exclusive(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` unless it exists (temp + hard link); False when it existed."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


CLAIM_SECONDS = 660  # receive_batch's hard time limit: a claim outlives no receiver


def claim_lease_name(settings: config.Settings, rel: str) -> str:
    """The catalog lease that guards one upload (``rel``: its path in the dropbox); long paths hashed."""
    name = f"receive:{settings.flavour}:{rel}"
    return (
        name
        if len(name) <= 200
        else f"receive:{settings.flavour}:sha1:{hashlib.sha1(rel.encode()).hexdigest()}"
    )


def take_claim(path: Path) -> Path | None:
    """Rename the upload's ``.origin`` to ``.origin.claimed`` (or find a claim left by a dead receiver);
    None when there is nothing (left) to claim. Call only while holding its lease."""
    origin = path.with_name(path.name + dropbox.ORIGIN)
    claimed = path.with_name(path.name + dropbox.CLAIMED)
    try:
        os.rename(origin, claimed)
    except FileNotFoundError:
        pass
    return claimed if os.path.lexists(claimed) else None


def receipt_of(claim: Path) -> str:
    """Identity of one upload: the claim file's inode and mtime (rename keeps both)."""
    st = os.stat(claim)
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}"


# -- receive ----------------------------------------------------------------------------------------


class Receiver:
    """Receives uploads of one dropbox into the repository and the catalog."""

    def __init__(self, settings: config.Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.box = settings.dropbox
        self.repo = settings.repository
        self.errors: list[BaseException] = []  # unexpected errors of the last receive_many
        self._taken: dict[tuple[int, str], set[str]] = {}  # catalog paths per (run, dataset), per batch
        self._dirs: set[Path] = set()  # repository folders known to exist
        self.owner = f"{worker_identity()}:receive"  # holder of the upload leases

    def receive(self, path: str | os.PathLike[str], *, index: bool = False) -> Outcome:
        """Receive one upload; an unexpected error is raised (see :meth:`receive_many`)."""
        (outcome,) = self.receive_many([path], index=index, raise_errors=True)
        return outcome

    def receive_many(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        index: bool = False,
        raise_errors: bool = False,
        budget: float | None = None,
    ) -> list[Outcome]:
        """Receive a batch of uploads; one Outcome per path, in order.

        Each upload is claimed, checked, reserved and linked on its own (a bad one is quarantined, an
        unexpected error leaves its claim for the next scan: status ``error``); the catalog rows of the
        batch are then written in one transaction, and only after that commit are the claims removed.
        ``index``: also write one partial index for the batch from the monitor elements the check read
        (see :func:`t0dqm.steps.index.index_received`). ``budget``: seconds after which the remaining uploads
        are left unclaimed (status ``deferred``). ``raise_errors``: re-raise the first unexpected error.
        """
        outcomes: dict[int, Outcome] = {}
        filings: list[tuple[int, _Filing]] = []
        errors: list[BaseException] = []
        deadline = None if budget is None else time.monotonic() + budget
        self._prefetch_taken(paths)
        resolved = [self._resolve(path) for path in paths]
        seen: set[str] = set()
        with self._leases([rel for _p, rel, refused in resolved if refused is None]) as leased:
            for i, (p, rel, refused) in enumerate(resolved):
                if refused is not None:
                    outcomes[i] = refused
                    continue
                if rel in seen:  # listed twice in one batch: received once
                    outcomes[i] = Outcome("busy", rel)
                    continue
                seen.add(rel)
                if deadline is not None and time.monotonic() > deadline:
                    outcomes[i] = Outcome("deferred", rel)
                    continue
                status, claim = self._claim(p, rel, leased)
                if claim is None:
                    outcomes[i] = Outcome(status, rel)
                    continue
                try:
                    filings.append((i, self._prepare(p, rel, claim)))
                except Rejected as exc:
                    self.quarantine(p, rel, claim, exc.reason)
                    outcomes[i] = Outcome("quarantined", rel, reason=exc.reason)
                except SoftTimeLimitExceeded:
                    raise
                except Exception as exc:
                    if raise_errors:
                        raise
                    errors.append(exc)
                    outcomes[i] = Outcome("error", rel, reason=f"{type(exc).__name__}: {exc}")
                    logger.exception("receive %s failed; left for the next scan", rel)
            if filings:
                ids = self._record_many([f for _, f in filings])
                for (i, f), file_id in zip(filings, ids, strict=True):  # only after the commit
                    f.claim.unlink(missing_ok=True)
                    f.p.with_name(f.p.name + dropbox.BAD).unlink(missing_ok=True)
                    outcomes[i] = Outcome(
                        "filed",
                        f.rel,
                        file_id=file_id,
                        target=f.relpath,
                        version=f.version,
                        index_state=INDEX_PENDING,
                    )
                if index:
                    try:
                        self._index(
                            [(i, f, file_id) for (i, f), file_id in zip(filings, ids, strict=True)], outcomes
                        )
                    except SoftTimeLimitExceeded:
                        raise
                    except Exception:
                        logger.exception("partial index of a receive batch failed; the files stay pending")
        self.errors = errors
        self._taken = {}
        return [outcomes[i] for i in range(len(paths))]

    @contextmanager
    def _leases(self, rels: list[str]) -> Iterator[set[str]]:
        """Hold the catalog leases of a batch's uploads for the block; yields the lease names held (more are
        added by :meth:`_claim`). Leases nobody holds are taken in one transaction, all are released in one;
        a lease that exists (held, expired, or a dead receiver's) is left to Catalog.acquire_lease."""
        from t0dqm import heartbeat

        names = list(dict.fromkeys(claim_lease_name(self.settings, rel) for rel in rels))
        held: set[str] = set()
        if names:
            heartbeat.ensure(self.catalog.url)  # as Catalog.acquire_lease: we beat before we hold anything
        now = time.time()
        try:
            with self.catalog.begin() as conn:
                taken = files.leases_taken(conn, names)
                free = [n for n in names if n not in taken]
                if free:  # the same rows Catalog.acquire_lease inserts
                    files.insert_leases(conn, free, self.owner, now + CLAIM_SECONDS, now)
                    held.update(free)
        except IntegrityError:  # another receiver took one meanwhile: lease by lease in _claim
            held.clear()
        try:
            yield held
        finally:
            if held:
                with self.catalog.begin() as conn:
                    files.release_leases(conn, held, self.owner)

    def _claim(self, p: Path, rel: str, held: set[str]) -> tuple[str, Path | None]:
        """Claim one upload under its lease (taken now unless ``held``): ("ok", claim path), ("busy", None)
        when another live receiver holds it, or ("gone", None) when there is nothing left to receive."""
        name = claim_lease_name(self.settings, rel)
        if name not in held:
            if not self.catalog.acquire_lease(name, self.owner, CLAIM_SECONDS):
                return "busy", None
            held.add(name)
        claim = take_claim(p)
        return ("ok", claim) if claim is not None else ("gone", None)

    def _resolve(self, path: str | os.PathLike[str]) -> tuple[Path, str, Outcome | None]:
        p = Path(path)
        if not p.is_absolute():
            p = self.box / p
        p = Path(os.path.normpath(p))
        try:
            rel = str(p.relative_to(self.box))
        except ValueError:
            return p, str(p), Outcome("refused", str(p), reason=f"{p} is not inside the dropbox {self.box}")
        if not Path(os.path.realpath(p.parent)).is_relative_to(os.path.realpath(self.box)):  # symlinked slot
            return (
                p,
                rel,
                Outcome("refused", rel, reason=f"{p.parent} resolves outside the dropbox {self.box}"),
            )
        return p, rel, None

    def _prepare(self, p: Path, rel: str, claim: Path) -> _Filing:
        """Checks, version reservation and link of one claimed upload; Rejected with the reason."""
        if claim.is_symlink():  # never read (nor quote) a file outside the dropbox
            raise Rejected(".origin is a symbolic link, not a regular file")
        try:
            origin = dropbox.read_origin(claim)
        except dropbox.OriginError as exc:
            raise Rejected(str(exc)) from None
        if not naming.RX_SAFE_PATH.match(rel):
            raise Rejected(f"unsafe characters in upload path {rel!r}")
        try:
            info = naming.classify(p.name)
        except naming.InvalidName as exc:
            raise Rejected(f"bad name: {exc.reason}") from None
        receipt = receipt_of(claim)
        pattern = naming.file_pattern(info)
        found = self._find_reservation(info, pattern, receipt)
        mes: list[rootcheck.ME] | None = None
        if found is None:
            meta, mes = self._check(p, origin, info)
            version, dqinfo = self._reserve(info, pattern, receipt, rel, origin, meta)
        else:
            version, dqinfo = found
        target = self.repo / (pattern % version)
        if found is not None and not os.path.lexists(p) and not os.path.lexists(target):
            self._drop_reservation(target, rel)
            raise Rejected("file missing: the upload vanished while it was being received")
        self._link(p, target, dqinfo)
        return _Filing(p, rel, claim, info, target, str(target.relative_to(self.repo)), dqinfo, mes)

    def _check(
        self, p: Path, origin: dropbox.Origin, info: naming.DqmName
    ) -> tuple[dict[str, Any], list[rootcheck.ME]]:
        """Every check of an upload, reading the file once (checksums, then the ROOT walk over the same
        bytes); Rejected with the reason. Returns (size, md5, adler32, mtime, check) and the elements."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise Rejected("file missing: the .origin has no file next to it") from None
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not a regular file")
        if st.st_size != origin.size:
            raise Rejected(f"size mismatch: .origin says {origin.size} bytes, file has {st.st_size}")
        data: bytes | None = None
        if st.st_size <= rootcheck.BUFFER_LIMIT:
            with open(p, "rb") as fh:
                data = fh.read(st.st_size + 1)
            size, md5, adler = (
                len(data),
                hashlib.md5(data).hexdigest(),
                storage.format_adler32(zlib.adler32(data)),
            )
        else:
            size, md5, adler = checksums(p)
        if size != origin.size:
            raise Rejected(f"size mismatch: .origin says {origin.size} bytes, read {size}")
        if md5 != origin.md5:
            raise Rejected(f"md5 mismatch: .origin says {origin.md5}, file has {md5}")
        strict = info.class_ == naming.ONLINE_DATA and not info.subsystem
        seconds = self.settings.timeout("root_check")
        try:
            found = _with_timeout(
                lambda: rootcheck.inspect(p, strict, data=data), seconds, "ROOT content check"
            )
        except rootcheck.RootCheckError as exc:
            raise Rejected(f"ROOT check failed ({'strict' if strict else 'loose'}): {exc.reason}") from None
        meta = {"size": size, "md5": md5, "adler32": adler, "mtime": st.st_mtime, "check": found.check}
        return meta, found.mes

    def _taken_paths(self, info: naming.DqmName) -> set[str]:
        """Repository paths of the catalog rows of the name's (run, dataset): from the batch's one query
        when it covered this name, else a query of its own."""
        cached = self._taken.get((info.run, info.dataset))
        if cached is not None:
            return cached
        with self.catalog.read() as conn:
            return files.sample_paths(conn, info.run, info.dataset)

    def _prefetch_taken(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        """One catalog query for the (run, dataset) of every name in the batch (see _taken_paths)."""
        keys: set[tuple[int, str]] = set()
        for path in paths:
            try:
                info = naming.classify(Path(path).name)
            except naming.InvalidName:
                continue
            keys.add((info.run, info.dataset))
        self._taken = {key: set() for key in keys}
        if not keys:
            return
        runs = sorted({run for run, _ in keys})
        with self.catalog.read() as conn:
            for path, run, dataset in files.paths_of_runs(conn, runs):
                if (run, dataset) in self._taken:
                    self._taken[(run, dataset)].add(path)

    def _find_reservation(
        self, info: naming.DqmName, pattern: str, receipt: str
    ) -> tuple[int, dict[str, Any]] | None:
        """A .dqminfo of this upload left by a receiver that died (probing versions up to the first gap)."""
        for version in range(1, MAX_VERSION + 1):
            info_path = self.repo / ((pattern % version) + ".dqminfo")
            data = read_dqminfo(info_path)
            if data is None:
                if os.path.lexists(info_path):  # e.g. a legacy (Python literal) .dqminfo: not ours
                    continue
                return None
            if data.get("receipt") == receipt:
                return version, data
        return None

    def _reserve(
        self,
        info: naming.DqmName,
        pattern: str,
        receipt: str,
        rel: str,
        origin: dropbox.Origin,
        meta: dict[str, Any],
    ) -> tuple[int, dict[str, Any]]:
        """Next free version: no .dqminfo, no file, no catalog row; reserved by creating the .dqminfo."""
        taken = self._taken_paths(info)
        for version in range(1, MAX_VERSION + 1):
            relpath = pattern % version
            target = self.repo / relpath
            if relpath in taken or os.path.lexists(target) or os.path.lexists(str(target) + ".dqminfo"):
                continue
            data = self._dqminfo(info, version, relpath, pattern, receipt, rel, origin, meta)
            if target.parent not in self._dirs:
                target.parent.mkdir(parents=True, exist_ok=True)
                self._dirs.add(target.parent)
            body = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
            if _create_exclusive(Path(str(target) + ".dqminfo"), body):
                return version, data
        raise Rejected(f"no free version below V{MAX_VERSION:04d}")

    def _dqminfo(
        self,
        info: naming.DqmName,
        version: int,
        relpath: str,
        pattern: str,
        receipt: str,
        rel: str,
        origin: dropbox.Origin,
        meta: dict[str, Any],
    ) -> dict[str, Any]:
        online = info.class_ == naming.ONLINE_DATA
        data: dict[str, Any] = {
            "class": info.class_,
            "version": version,
            "runnr": info.run,
            "dataset": info.dataset,
            "origin": origin.source,
            "import": None,
            "size": meta["size"],
            "md5sum": meta["md5"],
            "adler32": meta["adler32"],
            "xpath": rel,
            "time": int(meta["mtime"]),
            "mtime": meta["mtime"],
            "check": meta["check"],
            "filepat": pattern,
            "zippat": naming.zip_pattern(info, meta["mtime"]),
            "path": relpath,
            "receipt": receipt,
            "received_at": time.time(),
            "host": self.settings.host,
        }
        if online:
            data["subsystem"] = info.subsystem
        else:
            data.update(era=info.era, primds=info.primds, procds=info.procds, tier=info.tier)
        if info.is_relval:
            data["release"] = info.release
        return data

    def _drop_reservation(self, target: Path, rel: str) -> None:
        from t0dqm import deleter

        deleter.delete(
            str(target) + ".dqminfo",
            rule="receive-rollback",
            reason=f"upload {rel} vanished",
            dry_run=False,
            catalog=self.catalog,
            settings=self.settings,
        )

    def _link(self, p: Path, target: Path, dqinfo: dict[str, Any]) -> None:
        """Hard-link the upload into the repository (never overwriting), then drop the dropbox name."""
        if p.exists():
            try:
                os.link(p, target)
            except FileExistsError:
                if not os.path.samefile(p, target):
                    raise RuntimeError(f"{target} exists and is not this upload") from None
            os.unlink(p)
        elif not target.exists():
            raise RuntimeError(f"upload {p} vanished before it reached {target}")
        elif target.stat().st_size != dqinfo["size"]:
            raise RuntimeError(f"{target} has {target.stat().st_size} bytes, .dqminfo says {dqinfo['size']}")

    def _record_many(self, filings: list[_Filing]) -> list[int]:
        """Catalog rows (state received, index pending) for a batch of filed uploads, one transaction with
        one multi-row insert for the rows and one for their audit; returns their ids in order. A row that
        exists already (a resumed receive) keeps its id."""
        now = time.time()
        with self.catalog.begin() as conn:
            known = files.ids_by_path(conn, [f.relpath for f in filings])
            new = [f for f in filings if f.relpath not in known]
            if new:
                try:
                    new_ids = files.insert_files_audited(
                        conn,
                        [self._row(f.info, f.target, f.dqinfo, INDEX_PENDING, now) for f in new],
                        [self._audit_row(f.relpath, None, f.dqinfo, now) for f in new],
                    )
                    known.update((f.relpath, file_id) for f, file_id in zip(new, new_ids, strict=True))
                except IntegrityError:  # another receiver recorded one of them meanwhile: row by row
                    for f in new:
                        known[f.relpath] = self._insert(conn, f.info, f.target, f.dqinfo, INDEX_PENDING, now)
        return [int(known[f.relpath]) for f in filings]

    def _row(
        self, info: naming.DqmName, target: Path, dqinfo: dict[str, Any], index_state: str, now: float
    ) -> dict[str, Any]:
        return dict(
            path=str(target.relative_to(self.repo)),
            name=target.name,
            cls=info.class_,
            run=info.run,
            version=dqinfo["version"],
            dataset=info.dataset,
            subsystem=info.subsystem,
            size=dqinfo["size"],
            md5=dqinfo["md5sum"],
            adler32=dqinfo["adler32"],
            mtime=dqinfo.get("mtime", dqinfo["time"]),
            zippat=dqinfo["zippat"],
            state=RECEIVED,
            index_state=index_state,
            created_at=now,
            updated_at=now,
            attempts=0,
        )

    def _audit_row(
        self, relpath: str, file_id: int | None, dqinfo: dict[str, Any], now: float
    ) -> dict[str, Any]:
        """The ``receive`` audit row, as Catalog.audit writes it."""
        return dict(
            at=now,
            host=self.catalog.host,
            entity="file",
            entity_id=file_id,
            action="receive",
            from_state=None,
            to_state=RECEIVED,
            path=relpath,
            size=dqinfo["size"],
            checksum=dqinfo["adler32"],
            rule=None,
            detail=f"from {dqinfo.get('xpath')}",
        )

    def _record(
        self, info: naming.DqmName, target: Path, dqinfo: dict[str, Any], index_state: str = INDEX_PENDING
    ) -> int:
        relpath = str(target.relative_to(self.repo))
        with self.catalog.begin() as conn:
            existing = files.id_by_path(conn, relpath)
            if existing is not None:
                return existing
            return self._insert(conn, info, target, dqinfo, index_state, time.time())

    def _insert(
        self,
        conn: Connection,
        info: naming.DqmName,
        target: Path,
        dqinfo: dict[str, Any],
        index_state: str,
        now: float,
    ) -> int:
        relpath = str(target.relative_to(self.repo))
        file_id = files.insert_file(conn, self._row(info, target, dqinfo, index_state, now))
        if file_id is None:
            return files.id_of_path(conn, relpath)
        self.catalog.audit(
            conn,
            entity="file",
            entity_id=file_id,
            action="receive",
            to_state=RECEIVED,
            path=relpath,
            size=dqinfo["size"],
            checksum=dqinfo["adler32"],
            detail=f"from {dqinfo.get('xpath')}",
        )
        return int(file_id)

    def _index(self, entries: list[tuple[int, _Filing, int]], outcomes: dict[int, Outcome]) -> None:
        """One partial index for the batch's files whose elements the check read (the others stay
        pending for import_file); the outcome's index_state says which."""
        samples = [
            steps_index.Received(
                file_id,
                f.info.run,
                f.info.dataset,
                f.version,
                f.info.class_,
                f.info.subsystem,
                f.relpath,
                float(f.dqinfo.get("mtime", f.dqinfo["time"])),
                f.mes,
            )
            for _, f, file_id in entries
            if f.mes is not None
        ]
        if not samples:
            return
        states = steps_index.index_received(self.settings, self.catalog, samples)
        for i, _f, file_id in entries:
            if file_id in states:
                outcomes[i] = replace(outcomes[i], index_state=states[file_id])

    def quarantine(self, p: Path, rel: str, claim: Path, reason: str, step: str = "receive") -> None:
        """Record the reason (catalog + ``.bad`` marker) and rename the claim to ``.origin.bad``."""
        dropbox.write_atomic(p.with_name(p.name + dropbox.BAD), (reason + "\n").encode(), fsync=False)
        with self.catalog.begin() as conn:
            if files.quarantine_once(conn, path=rel, name=p.name, step=step, reason=reason, now=time.time()):
                self.catalog.audit(conn, entity="path", action="quarantine", path=rel, detail=reason)
        os.rename(claim, p.with_name(p.name + dropbox.ORIGIN_BAD))
        logger.warning(json.dumps({"event": "quarantine", "path": rel, "reason": reason}))

    # -- create-info ------------------------------------------------------------------------------
    def create_info(self, limit: int | None = None) -> list[int]:
        """OnlineData files without a .dqminfo get one and a catalog row (index skipped); returns ids."""
        top = self.repo / "OnlineData"
        out: list[int] = []
        for dirpath, _dirs, names in os.walk(top):
            for name in sorted(names):
                if not RX_REPO_ONLINE.match(name):
                    continue
                target = Path(dirpath) / name
                if os.path.lexists(str(target) + ".dqminfo"):
                    continue
                file_id = self._create_one(target)
                if file_id is not None:
                    out.append(file_id)
                if limit is not None and len(out) >= limit:
                    return out
        return out

    def _create_one(self, target: Path) -> int | None:
        try:
            info = naming.classify(target.name, require_v1=False)
        except naming.InvalidName as exc:
            logger.warning(
                json.dumps({"event": "create-info-skip", "path": str(target), "reason": exc.reason})
            )
            return None
        if info.class_ != naming.ONLINE_DATA:
            return None
        st = target.stat()
        size, md5, adler = checksums(target)
        relpath = str(target.relative_to(self.repo))
        data = {
            "class": info.class_,
            "version": info.version,
            "runnr": info.run,
            "dataset": info.dataset,
            "subsystem": info.subsystem or MERGED_FILE,
            "origin": str(target),
            "import": None,
            "size": size,
            "md5sum": md5,
            "adler32": adler,
            "xpath": relpath,
            "time": int(st.st_mtime),
            "mtime": st.st_mtime,
            "check": "created by create-info",
            "filepat": naming.file_pattern(info),
            "zippat": naming.zip_pattern(info, st.st_mtime),
            "path": relpath,
            "created_at": time.time(),
            "host": self.settings.host,
        }
        if not _create_exclusive(
            Path(str(target) + ".dqminfo"), (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
        ):
            return None
        return self._record(info, target, data, index_state=INDEX_SKIPPED)


def import_legacy(
    directory: str | os.PathLike[str],
    settings: config.Settings,
    catalog: Catalog,
    *,
    dry_run: bool = False,
    index: bool = True,
) -> dict[str, Any]:
    """Record original .dqminfo files (Python literals, read safely, never eval) under ``directory`` in the
    catalog. ``directory`` is (part of) the repository: catalog paths are relative to the repository root.
    Files whose ROOT file is gone (archived and deleted) get state removed; present ones are imported into
    the index unless ``index`` is False. The original .dqminfo files are left as they are."""
    from t0dqm.formats import legacy

    top = Path(directory).resolve()
    counts: dict[str, Any] = {"imported": 0, "present": 0, "removed": 0, "known": 0, "errors": []}
    receiver = Receiver(settings, catalog)
    for info_path in legacy.find_info_files(top):
        root_file = Path(str(info_path)[: -len(".dqminfo")])
        try:
            info = legacy.check_dqminfo(legacy.read_legacy_info(info_path), str(info_path))
            rel = str(root_file.relative_to(settings.repository.resolve()))
        except (legacy.LegacyFormatError, ValueError) as exc:
            counts["errors"].append(str(exc))
            continue
        present = root_file.exists()
        with catalog.read() as conn:
            if files.path_known(conn, rel):
                counts["known"] += 1
                continue
        counts["present" if present else "removed"] += 1
        counts["imported"] += 1
        if dry_run:
            continue
        adler = info.get("adler32") or (storage.adler32_file(root_file) if present else "00000000")
        mtime = float(info.get("time") or (root_file.stat().st_mtime if present else 0.0))
        now = time.time()
        with catalog.begin() as conn:
            file_id = files.insert_file(
                conn,
                dict(
                    path=rel,
                    name=root_file.name,
                    cls=info["class"],
                    run=info["runnr"],
                    version=info["version"],
                    dataset=info["dataset"],
                    subsystem=info.get("subsystem") if info.get("subsystem") != MERGED_FILE else None,
                    size=int(info.get("size") or (root_file.stat().st_size if present else 0)),
                    md5=info.get("md5sum"),
                    adler32=adler,
                    mtime=mtime,
                    zippat=info.get("zippat"),
                    state=RECEIVED if present else "removed",
                    index_state=INDEX_PENDING if (present and index) else INDEX_SKIPPED,
                    created_at=now,
                    updated_at=now,
                    attempts=0,
                ),
            )
            if file_id is None:
                continue
            receiver.catalog.audit(
                conn,
                entity="file",
                entity_id=file_id,
                action="import-legacy",
                path=rel,
                detail=f"zippath={info.get('zippath')}",
            )
    return counts


def receive_one(
    path: str | os.PathLike[str],
    settings: config.Settings | None = None,
    catalog: Catalog | None = None,
    *,
    index: bool = False,
) -> Outcome:
    """Receive one upload (no broker needed); see the module docstring. ``index``: also write its
    partial index (else it stays pending for import)."""
    from t0dqm.catalog.db import get_catalog

    settings = settings or config.get()
    return Receiver(settings, catalog or get_catalog(settings.catalog_url)).receive(path, index=index)


# -- steps (the tasks of t0dqm.tasks.receive call these) ------------------------------------------------


def per_task(settings: config.Settings) -> int:
    """Uploads per receive_batch message (configuration ``receive.per_task``, default PER_TASK)."""
    return max(1, int(settings.receive.per_task))


@dataclass
class BatchOutcome(steps_next.Outcome):
    """What :func:`receive_batch` returns: ``result`` (one dict per upload), ``next`` (merge, import,
    zip, GUI registration), the uploads' outcomes and the batch's unexpected errors (the task sends
    ``next``, then retries on a retryable one: what was filed returns "gone" at once)."""

    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def receive_batch(ctx: Context, paths: Sequence[str]) -> BatchOutcome:
    """Receive a batch and write its partial index; next: merge, import (leftovers), zip and registration.
    Uploads not reached within BATCH_BUDGET seconds are left for the next scan."""
    receiver = Receiver(ctx.settings, ctx.catalog)
    outcomes = receiver.receive_many(paths, index=True, budget=BATCH_BUDGET)
    filed = [o for o in outcomes if o.status == "filed"]
    nexts: list[Next] = []
    if any(o.index_state == INDEX_PARTIAL for o in filed):
        nexts.append(steps_index.merge_next())
    nexts += [Next(IMPORT_TASK, (o.file_id,)) for o in filed if o.index_state == INDEX_PENDING]
    nexts += [Next(ZIP_TASK, (o.file_id,)) for o in filed]
    nexts += steps_gui.registration_next(ctx.settings, [o.file_id for o in filed])
    for o in outcomes:
        if o.status == "quarantined":
            ctx.log("receive-quarantined", path=o.path, reason=o.reason)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    ctx.log("receive", **counts)
    return BatchOutcome(
        result=[o.__dict__ for o in outcomes], next=nexts, outcomes=outcomes, errors=list(receiver.errors)
    )


Dedupe = Callable[[list[str], int, int], tuple[list[str], bool]]


def scan(ctx: Context, dedupe: Dedupe) -> steps_next.Outcome:
    """List complete uploads and send them to receive_batch, ``receive.per_task`` per message, at most
    ``receive.batch`` per scan; when more are waiting, a rescan follows at once. ``dedupe(paths, seconds,
    limit)``: the first ``limit`` paths not sent in the last ``seconds`` (now marked as sent), and whether
    more remain."""
    settings = ctx.settings
    try:
        with ctx.lease("receive-scan", seconds=60):
            entries = dropbox.scan_entries(settings.dropbox)
    except LeaseBusy:
        return steps_next.Outcome(0)
    ttl = max(30, int(settings.reconcile.stale_seconds))
    rels = [f"{slot}/{name}" for slot, name, _claimed in entries]
    fresh, more = dedupe(rels, ttl, int(settings.receive.batch))
    size = per_task(settings)
    nexts = [Next(BATCH_TASK, (fresh[start : start + size],)) for start in range(0, len(fresh), size)]
    if more:
        nexts.append(Next(SCAN_TASK))
    if fresh:
        ctx.log("receive-scan", sent=len(fresh), listed=len(entries), more=more)
    return steps_next.Outcome(len(fresh), next=nexts)


def create_info(ctx: Context) -> steps_next.Outcome:
    """Repository OnlineData files without .dqminfo get one and go to zip (not to the index)."""
    try:
        with ctx.lease("create-info", seconds=ctx.settings.tasks.long_time_limit):
            ids = Receiver(ctx.settings, ctx.catalog).create_info()
    except LeaseBusy:
        return steps_next.Outcome(0)
    if ids:
        ctx.log("create-info", created=len(ids))
    return steps_next.Outcome(len(ids), next=[Next(ZIP_TASK, (file_id,)) for file_id in ids])
