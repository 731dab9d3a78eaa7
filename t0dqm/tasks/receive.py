"""Tasks: receive (visDQMReceiveDaemon) and create-info (visDQMCreateInfoDaemon).

``receive_file(path)`` files one upload: claim, checks, version, move, .dqminfo, catalog row, then
enqueue import and zip. The work is done by :func:`receive_one`, which needs no broker (the CLI's
``t0dqm receive --once`` calls it directly).

Claim: the receiver opens ``<name>.origin``, takes an exclusive flock on it and renames it to
``<name>.origin.claimed``; it holds the flock until it is done. A second receiver of the same upload
finds the lock held and returns at once; a claim whose flock is free belongs to a dead receiver and is
taken over (the scanner lists it again).

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

import fcntl
import hashlib
import json
import logging
import os
import re
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from t0dqm import config, dropbox, naming, rootcheck, storage
from t0dqm.catalog import Catalog, files, quarantine
from t0dqm.celery import app
from t0dqm.states import INDEX_PENDING, INDEX_SKIPPED, RECEIVED
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits, metrics_client

logger = logging.getLogger("t0dqm.tasks.receive")

IMPORT_TASK = "t0dqm.tasks.index.import_file"
ZIP_TASK = "t0dqm.tasks.archive.zip_file"
MAX_VERSION = 9999
RX_REPO_ONLINE = re.compile(r"^DQM_V\d{4}(_[A-Za-z0-9]+)?_R\d{9}\.root$")
MERGED_FILE = "Merged File"


class Rejected(Exception):
    """An upload that fails a check; ``reason`` goes to the quarantine."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Outcome:
    """What receive_one did: status filed | quarantined | busy | gone | refused."""

    status: str
    path: str
    file_id: int | None = None
    target: str | None = None
    version: int | None = None
    reason: str | None = None


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


@contextmanager
def claim_upload(path: Path) -> Iterator[Path | None]:
    """Claim the upload ``path``: yields the ``.origin.claimed`` path (flock held) or None when another
    receiver holds it or there is nothing (left) to claim."""
    origin = path.with_name(path.name + dropbox.ORIGIN)
    claimed = path.with_name(path.name + dropbox.CLAIMED)
    fd = -1
    got: Path | None = None
    try:
        for candidate in (origin, claimed):
            try:
                fd = os.open(candidate, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                break  # someone else is receiving it
            try:
                same = os.stat(candidate).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # finished or renamed while we waited: look again
                os.close(fd)
                fd = -1
                continue
            if candidate == origin:
                os.rename(origin, claimed)
            got = claimed
            break
        yield got
    finally:
        if fd >= 0:
            os.close(fd)


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

    def receive(self, path: str | os.PathLike[str]) -> Outcome:
        p = Path(path)
        if not p.is_absolute():
            p = self.box / p
        p = Path(os.path.normpath(p))
        try:
            rel = str(p.relative_to(self.box))
        except ValueError:
            return Outcome("refused", str(p), reason=f"{p} is not inside the dropbox {self.box}")
        with claim_upload(p) as claim:
            if claim is None:
                busy = os.path.lexists(p.with_name(p.name + dropbox.CLAIMED))
                return Outcome("busy" if busy else "gone", rel)
            try:
                return self._receive_claimed(p, rel, claim)
            except Rejected as exc:
                self.quarantine(p, rel, claim, exc.reason)
                return Outcome("quarantined", rel, reason=exc.reason)

    def _receive_claimed(self, p: Path, rel: str, claim: Path) -> Outcome:
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
        if found is None:
            meta = self._check(p, origin, info)
            version, dqinfo = self._reserve(info, pattern, receipt, rel, origin, meta)
        else:
            version, dqinfo = found
        target = self.repo / (pattern % version)
        if found is not None and not os.path.lexists(p) and not os.path.lexists(target):
            self._drop_reservation(target, rel)
            raise Rejected("file missing: the upload vanished while it was being received")
        self._link(p, target, dqinfo)
        file_id = self._record(info, target, dqinfo)
        claim.unlink(missing_ok=True)
        p.with_name(p.name + dropbox.BAD).unlink(missing_ok=True)
        return Outcome("filed", rel, file_id=file_id, target=str(target.relative_to(self.repo)), version=version)

    def _check(self, p: Path, origin: dropbox.Origin, info: naming.DqmName) -> dict[str, Any]:
        """Every check of an upload; Rejected with the reason. Returns size, md5, adler32, mtime, check."""
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            raise Rejected("file missing: the .origin has no file next to it") from None
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not a regular file")
        if st.st_size != origin.size:
            raise Rejected(f"size mismatch: .origin says {origin.size} bytes, file has {st.st_size}")
        size, md5, adler = checksums(p)
        if size != origin.size:
            raise Rejected(f"size mismatch: .origin says {origin.size} bytes, read {size}")
        if md5 != origin.md5:
            raise Rejected(f"md5 mismatch: .origin says {origin.md5}, file has {md5}")
        strict = info.class_ == naming.ONLINE_DATA and not info.subsystem
        seconds = self.settings.timeout("root_check")
        try:
            rootcheck.check_magic(p)
            check = _with_timeout(lambda: rootcheck.check_root_file(p, strict), seconds, "ROOT content check")
        except rootcheck.RootCheckError as exc:
            raise Rejected(f"ROOT check failed ({'strict' if strict else 'loose'}): {exc.reason}") from None
        return {"size": size, "md5": md5, "adler32": adler, "mtime": st.st_mtime, "check": check}

    def _taken_paths(self, info: naming.DqmName) -> set[str]:
        with self.catalog.read() as conn:
            rows = conn.execute(select(files.c.path).where(files.c.run == info.run,
                                                           files.c.dataset == info.dataset))
            return {r[0] for r in rows}

    def _find_reservation(self, info: naming.DqmName, pattern: str,
                          receipt: str) -> tuple[int, dict[str, Any]] | None:
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

    def _reserve(self, info: naming.DqmName, pattern: str, receipt: str, rel: str, origin: dropbox.Origin,
                 meta: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Next free version: no .dqminfo, no file, no catalog row; reserved by creating the .dqminfo."""
        taken = self._taken_paths(info)
        for version in range(1, MAX_VERSION + 1):
            relpath = pattern % version
            target = self.repo / relpath
            if relpath in taken or os.path.lexists(target) or os.path.lexists(str(target) + ".dqminfo"):
                continue
            data = self._dqminfo(info, version, relpath, pattern, receipt, rel, origin, meta)
            target.parent.mkdir(parents=True, exist_ok=True)
            body = (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()
            if _create_exclusive(Path(str(target) + ".dqminfo"), body):
                return version, data
        raise Rejected(f"no free version below V{MAX_VERSION:04d}")

    def _dqminfo(self, info: naming.DqmName, version: int, relpath: str, pattern: str, receipt: str, rel: str,
                 origin: dropbox.Origin, meta: dict[str, Any]) -> dict[str, Any]:
        online = info.class_ == naming.ONLINE_DATA
        data: dict[str, Any] = {
            "class": info.class_, "version": version, "runnr": info.run, "dataset": info.dataset,
            "origin": origin.source, "import": None, "size": meta["size"], "md5sum": meta["md5"],
            "adler32": meta["adler32"], "xpath": rel, "time": int(meta["mtime"]), "mtime": meta["mtime"],
            "check": meta["check"], "filepat": pattern,
            "zippat": naming.zip_pattern(info, meta["mtime"]), "path": relpath,
            "receipt": receipt, "received_at": time.time(), "host": self.settings.host,
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

        deleter.delete(str(target) + ".dqminfo", rule="receive-rollback", reason=f"upload {rel} vanished",
                       dry_run=False, catalog=self.catalog, settings=self.settings)

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

    def _record(self, info: naming.DqmName, target: Path, dqinfo: dict[str, Any],
                index_state: str = INDEX_PENDING) -> int:
        relpath = str(target.relative_to(self.repo))
        now = time.time()
        with self.catalog.begin() as conn:
            existing = conn.execute(select(files.c.id).where(files.c.path == relpath)).scalar()
            if existing is not None:
                return int(existing)
            try:
                with conn.begin_nested():
                    file_id = conn.execute(insert(files).values(
                        path=relpath, name=target.name, cls=info.class_, run=info.run,
                        version=dqinfo["version"], dataset=info.dataset, subsystem=info.subsystem,
                        size=dqinfo["size"], md5=dqinfo["md5sum"], adler32=dqinfo["adler32"],
                        mtime=dqinfo.get("mtime", dqinfo["time"]), zippat=dqinfo["zippat"], state=RECEIVED,
                        index_state=index_state, created_at=now, updated_at=now,
                        attempts=0)).inserted_primary_key[0]
            except IntegrityError:
                return int(conn.execute(select(files.c.id).where(files.c.path == relpath)).scalar_one())
            self.catalog.audit(conn, entity="file", entity_id=file_id, action="receive", to_state=RECEIVED,
                               path=relpath, size=dqinfo["size"], checksum=dqinfo["adler32"],
                               detail=f"from {dqinfo.get('xpath')}")
        return int(file_id)

    def quarantine(self, p: Path, rel: str, claim: Path, reason: str, step: str = "receive") -> None:
        """Record the reason (catalog + ``.bad`` marker) and rename the claim to ``.origin.bad``."""
        dropbox.write_atomic(p.with_name(p.name + dropbox.BAD), (reason + "\n").encode(), fsync=False)
        with self.catalog.begin() as conn:
            seen = conn.execute(select(quarantine.c.id).where(
                quarantine.c.path == rel, quarantine.c.reason == reason,
                quarantine.c.resolved_at.is_(None))).first()
            if seen is None:
                conn.execute(insert(quarantine).values(path=rel, name=p.name, step=step, reason=reason,
                                                       created_at=time.time()))
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
            logger.warning(json.dumps({"event": "create-info-skip", "path": str(target), "reason": exc.reason}))
            return None
        if info.class_ != naming.ONLINE_DATA:
            return None
        st = target.stat()
        size, md5, adler = checksums(target)
        relpath = str(target.relative_to(self.repo))
        data = {
            "class": info.class_, "version": info.version, "runnr": info.run, "dataset": info.dataset,
            "subsystem": info.subsystem or MERGED_FILE, "origin": str(target), "import": None, "size": size,
            "md5sum": md5, "adler32": adler, "xpath": relpath, "time": int(st.st_mtime), "mtime": st.st_mtime,
            "check": "created by create-info", "filepat": naming.file_pattern(info),
            "zippat": naming.zip_pattern(info, st.st_mtime), "path": relpath,
            "created_at": time.time(), "host": self.settings.host,
        }
        if not _create_exclusive(Path(str(target) + ".dqminfo"), (json.dumps(data, indent=1, sort_keys=True)
                                                                   + "\n").encode()):
            return None
        return self._record(info, target, data, index_state=INDEX_SKIPPED)


def import_legacy(directory: str | os.PathLike[str], settings: config.Settings, catalog: Catalog, *,
                  dry_run: bool = False, index: bool = True) -> dict[str, Any]:
    """Record original .dqminfo files (Python literals, read safely, never eval) under ``directory`` in the
    catalog. ``directory`` is (part of) the repository: catalog paths are relative to the repository root.
    Files whose ROOT file is gone (archived and deleted) get state removed; present ones are imported into
    the index unless ``index`` is False. The original .dqminfo files are left as they are."""
    from t0dqm import legacy

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
            if conn.execute(select(files.c.id).where(files.c.path == rel)).first() is not None:
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
            try:
                with conn.begin_nested():
                    file_id = conn.execute(insert(files).values(
                        path=rel, name=root_file.name, cls=info["class"], run=info["runnr"],
                        version=info["version"], dataset=info["dataset"],
                        subsystem=info.get("subsystem") if info.get("subsystem") != MERGED_FILE else None,
                        size=int(info.get("size") or (root_file.stat().st_size if present else 0)),
                        md5=info.get("md5sum"), adler32=adler, mtime=mtime, zippat=info.get("zippat"),
                        state=RECEIVED if present else "removed",
                        index_state=INDEX_PENDING if (present and index) else INDEX_SKIPPED,
                        created_at=now, updated_at=now, attempts=0)).inserted_primary_key[0]
            except IntegrityError:
                continue
            receiver.catalog.audit(conn, entity="file", entity_id=file_id, action="import-legacy", path=rel,
                                   detail=f"zippath={info.get('zippath')}")
    return counts


def receive_one(path: str | os.PathLike[str], settings: config.Settings | None = None,
                catalog: Catalog | None = None) -> Outcome:
    """Receive one upload (no broker needed); see the module docstring."""
    from t0dqm.catalog import get_catalog

    settings = settings or config.get()
    return Receiver(settings, catalog or get_catalog(settings.catalog_url)).receive(path)


# -- tasks ------------------------------------------------------------------------------------------

@app.task(base=T0Task, bind=True, name="t0dqm.tasks.receive.receive_file", soft_time_limit=300, time_limit=360)
def receive_file(self: T0Task, path: str) -> dict[str, Any]:
    """File one upload (path absolute or relative to the dropbox), then enqueue import and zip."""
    outcome = Receiver(self.settings, self.catalog).receive(path)
    _forget(self, outcome.path)
    if outcome.status == "filed":
        self.enqueue(app.signature(IMPORT_TASK), outcome.file_id)
        self.enqueue(app.signature(ZIP_TASK), outcome.file_id)
    if outcome.status in ("filed", "quarantined"):
        self.log(f"receive-{outcome.status}", path=outcome.path, file_id=outcome.file_id,
                 target=outcome.target, reason=outcome.reason)
    return outcome.__dict__


def _dedupe(task: T0Task, path: str, seconds: int) -> bool:
    """True when ``path`` was not sent in the last ``seconds`` (Redis SET NX EX; True without Redis)."""
    client = metrics_client(task.app)
    if client is None:
        return True
    try:
        key = f"{task.app.conf.t0dqm_prefix}receive:queued:{path}"
        return bool(client.set(key, "1", nx=True, ex=seconds))
    except Exception:  # noqa: BLE001 - dedupe is an optimisation only
        return True


def _forget(task: T0Task, path: str) -> None:
    client = metrics_client(task.app)
    if client is None:
        return
    try:
        client.delete(f"{task.app.conf.t0dqm_prefix}receive:queued:{path}")
    except Exception:  # noqa: BLE001 - dedupe is an optimisation only
        pass


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.receive.scan", soft_time_limit=60, time_limit=90)
def scan(self: T0Task) -> int:
    """Beat: list complete uploads and enqueue receive_file for each (at most receive.batch)."""
    settings = self.settings
    try:
        with self.lease("receive-scan", seconds=60):
            candidates = dropbox.scan(settings.dropbox, limit=int(settings["receive"]["batch"]))
    except LeaseBusy:
        return 0
    ttl = max(30, int(settings["reconcile"]["stale_seconds"]))
    sent = 0
    for cand in candidates:
        rel = str(cand.path.relative_to(settings.dropbox))
        if _dedupe(self, rel, ttl):
            self.enqueue(receive_file, rel)
            sent += 1
    if sent:
        self.log("receive-scan", sent=sent, listed=len(candidates))
    return sent


@app.task(base=T0Task, bind=True, name="t0dqm.tasks.receive.create_info", **long_limits())
def create_info(self: T0Task) -> int:
    """Beat: repository OnlineData files without .dqminfo get one and go to zip (not to the index)."""
    try:
        with self.lease("create-info", seconds=self.settings["tasks"]["long_time_limit"]):
            ids = Receiver(self.settings, self.catalog).create_info()
    except LeaseBusy:
        return 0
    for file_id in ids:
        self.enqueue(app.signature(ZIP_TASK), file_id)
    if ids:
        self.log("create-info", created=len(ids))
    return len(ids)
