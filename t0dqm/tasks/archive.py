"""Tasks: archive. Append received files to their zip (``zip_file``) and freeze zips (``freeze``).

The catalog is the guard: ``members.file_id`` is unique, so a file is in exactly one archive; appends
to one zip are serialised by the catalog lease ``zip:<path>``; a frozen archive is never appended to.
The zip is written and fsynced before the membership commits, and a zip that does not match its
committed members (a crash between the two) is repaired before the next append or the freeze.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from t0dqm.catalog import states
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog, alarms, archives, files, members, worker_identity
from t0dqm.celery import app
from t0dqm.config import Settings
from t0dqm.formats import zipper
from t0dqm.policies import archive as policy
from t0dqm.tasks.base import LeaseBusy, T0Task, long_limits
from t0dqm.tasks.recovery import Resume, recoverer, stale_ids

ZIP_LEASE_SECONDS = 600  # longer than any append or freeze of one zip
LEASE_WAIT_SECONDS = 30
TROUBLE_ALARM = "archive:trouble"


# -- alarms ----------------------------------------------------------------------------------------

def update_trouble_alarm(catalog: Catalog, settings: Settings) -> str | None:
    """One summarised alarm for every archive that is failed, in conflict, or still retrying past
    the try limit; cleared when there is none."""
    max_tries = int(settings["archive"]["stage_max_tries"])
    with catalog.read() as conn:
        rows = conn.execute(select(archives.c.path, archives.c.state, archives.c.tries, archives.c.reason).where(
            (archives.c.state.in_([states.FAILED, states.CONFLICT]))
            | ((archives.c.tries >= max_tries) & archives.c.state.in_([states.COPIED, states.VERIFIED]))
        )).all()
    message = policy.summarise([policy.Trouble(r.path, r.state, r.tries, r.reason) for r in rows])
    with catalog.read() as conn:
        active = conn.execute(select(alarms.c.message).where(alarms.c.key == TROUBLE_ALARM,
                                                             alarms.c.active.is_(True))).scalar()
    if message is None:
        if active is not None:
            clear_alarm(catalog, TROUBLE_ALARM)
    elif message != active:
        raise_alarm(catalog, TROUBLE_ALARM, message, severity="critical")
    return message


# -- catalog helpers --------------------------------------------------------------------------------

def member_list(conn: Connection, archive_id: int) -> list[zipper.Member]:
    """The archive's committed members in the order they were added."""
    rows = conn.execute(select(members.c.name, members.c.size, members.c.adler32)
                        .where(members.c.archive_id == archive_id)
                        .order_by(members.c.added_at, members.c.name)).all()
    return [zipper.Member(r.name, r.size, r.adler32) for r in rows]


def member_sources(conn: Connection, archive_id: int, repository: Path) -> dict[str, str]:
    """name -> repository path of each member (for rebuilding the zip)."""
    rows = conn.execute(select(members.c.name, files.c.path)
                        .select_from(members.join(files, members.c.file_id == files.c.id))
                        .where(members.c.archive_id == archive_id)).all()
    return {r.name: str(repository / r.path) for r in rows}


def _ensure_archive(catalog: Catalog, pattern: str, serial: int) -> int:
    """The archive row of (pattern, serial), inserted on first use (the unique key settles races)."""
    query = select(archives.c.id).where(archives.c.pattern == pattern, archives.c.serial == serial)
    with catalog.read() as conn:
        found = conn.execute(query).scalar()
    if found is not None:
        return int(found)
    now = time.time()
    try:
        with catalog.begin() as conn:
            result = conn.execute(insert(archives).values(
                path=policy.zip_path(pattern, serial), pattern=pattern, serial=serial, state=states.OPEN,
                nfiles=0, size=0, tries=0, created_at=now, updated_at=now))
            new_id = int(result.inserted_primary_key[0])
            catalog.audit(conn, entity="archive", entity_id=new_id, action="create", to_state=states.OPEN,
                          path=policy.zip_path(pattern, serial))
            return new_id
    except IntegrityError:
        with catalog.read() as conn:
            return int(conn.execute(query).scalar_one())


def zip_lease_seconds(settings: Settings) -> float:
    """How long a zip lease outlives a killed holder (archive.zip_lease)."""
    return float(settings["archive"].get("zip_lease", ZIP_LEASE_SECONDS))


def wait_lease(catalog: Catalog, name: str, owner: str, seconds: float = ZIP_LEASE_SECONDS,
               wait: float = LEASE_WAIT_SECONDS) -> None:
    """Take the named lease, waiting up to ``wait`` seconds for its holder; LeaseBusy after that."""
    deadline = time.monotonic() + wait
    pause = 0.02
    while not catalog.acquire_lease(name, owner, seconds):
        if time.monotonic() >= deadline:
            raise LeaseBusy(name)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _owner(task: T0Task) -> str:
    return f"{worker_identity()}:{getattr(task.request, 'id', '') or ''}"


class _Abort(Exception):
    """Roll the membership transaction back: someone else changed the rows first."""


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


# -- zip_file ---------------------------------------------------------------------------------------

@app.task(base=T0Task, bind=True, name="t0dqm.tasks.archive.zip_file", soft_time_limit=600, time_limit=660)
def zip_file(self: T0Task, file_id: int) -> str:
    """Append one received file to the first open serial of its zip pattern that has room.

    Idempotent: a file that is already a member returns at once. Returns what happened.
    """
    settings, catalog = self.settings, self.catalog
    max_bytes = int(settings["archive"]["max_zip_bytes"])
    for _ in range(10):  # a chosen serial may fill up or freeze before we hold its lease
        with catalog.read() as conn:
            row = conn.execute(select(files).where(files.c.id == file_id)).mappings().first()
            if row is None:
                return "missing"
            if conn.execute(select(members.c.archive_id).where(members.c.file_id == file_id)).first():
                return "already"
            if row["state"] != states.RECEIVED or not row["zippat"]:
                return f"skipped ({row['state']})"
            serials = conn.execute(select(archives).where(archives.c.pattern == row["zippat"])).mappings().all()
            holding = {r[0] for r in conn.execute(select(members.c.archive_id).where(
                members.c.name == row["name"], members.c.archive_id.in_([s["id"] for s in serials])))}
        source = settings.repository / row["path"]
        if not source.is_file():
            _note_file_problem(self, row, f"repository file missing: {source}")
            return "source-missing"
        facts = [policy.SerialFacts(s["serial"], s["state"], s["size"], s["nfiles"],
                                    readable=_readable(settings.zip_root / s["path"]), has_name=s["id"] in holding)
                 for s in serials]
        serial = policy.choose_serial(facts, row["size"], row["name"], max_bytes)
        archive_id = _ensure_archive(catalog, row["zippat"], serial)
        path = policy.zip_path(row["zippat"], serial)
        owner = _owner(self)
        try:
            wait_lease(catalog, f"zip:{path}", owner, zip_lease_seconds(self.settings))
        except LeaseBusy:
            raise self.retry(countdown=5) from None
        try:
            outcome = _append_locked(self, row, archive_id, source)
        finally:
            catalog.release_lease(f"zip:{path}", owner)
        if outcome == "again":
            continue
        if outcome == "zipped":
            self.log("zipped", file_id=file_id, archive=path)
            if _freeze_wanted(catalog, row["zippat"], settings):
                self.enqueue(app.signature("t0dqm.tasks.archive.freeze"), row["zippat"])
        return outcome
    return "busy"


def _note_file_problem(task: T0Task, row: Any, reason: str) -> None:
    with task.catalog.begin() as conn:
        conn.execute(update(files).where(files.c.id == row["id"]).values(reason=reason, updated_at=time.time()))
        task.catalog.audit(conn, entity="file", entity_id=row["id"], action="zip-problem", path=row["path"],
                           detail=reason)
    raise_alarm(task.catalog, f"zip:file:{row['id']}", f"{row['path']}: {reason}")
    task.log("zip-problem", logging.WARNING, file_id=row["id"], reason=reason)


def _append_locked(task: T0Task, row: Any, archive_id: int, source: Path) -> str:
    """Under the zip lease: re-check, append, commit. "zipped", "already", "again" or a problem."""
    settings, catalog = task.settings, task.catalog
    with catalog.read() as conn:
        arch = conn.execute(select(archives).where(archives.c.id == archive_id)).mappings().one()
        if conn.execute(select(members.c.archive_id).where(members.c.file_id == row["id"])).first():
            return "already"
        current = member_list(conn, archive_id)
        sources = member_sources(conn, archive_id, settings.repository)
    need = row["size"] + policy.member_overhead(row["name"]) + policy.END_RECORD_BYTES
    fits = arch["nfiles"] == 0 or arch["size"] + need <= int(settings["archive"]["max_zip_bytes"])
    if arch["state"] != states.OPEN or not fits or any(m.name == row["name"] for m in current):
        return "again"
    zip_abs = settings.zip_root / arch["path"]
    try:
        written = zipper.append(zip_abs, source, row["name"], current, sources=sources,
                                expected_adler32=row["adler32"])
    except zipper.SourceMismatch as exc:
        _note_file_problem(task, row, f"checksum changed since receive: {exc}")
        return "corrupt"
    except zipper.ZipDamaged as exc:
        _fail_archive(task, arch, f"open zip damaged and not rebuildable: {exc}")
        return "again"
    now = time.time()
    try:
        with catalog.begin() as conn:
            conn.execute(insert(members).values(archive_id=archive_id, file_id=row["id"], name=written.name,
                                                size=written.size, adler32=written.adler32, added_at=now))
            if not catalog.transition(conn, "file", row["id"], states.RECEIVED, states.ZIPPED,
                                      archive_id=archive_id, reason=None, detail=arch["path"]):
                raise _Abort("file left the received state")
            done = conn.execute(update(archives).where(archives.c.id == archive_id, archives.c.state == states.OPEN)
                                .values(size=zip_abs.stat().st_size, nfiles=archives.c.nfiles + 1, last_write=now,
                                        first_write=func.coalesce(archives.c.first_write, now), updated_at=now))
            if done.rowcount != 1:
                raise _Abort("archive no longer open")
    except (IntegrityError, _Abort) as exc:
        zipper.repair(zip_abs, current, sources)  # take our uncommitted member out again
        task.log("zip-lost-race", file_id=row["id"], archive=arch["path"], why=str(exc))
        return "again"
    return "zipped"


def _fail_archive(task: T0Task, arch: Any, reason: str) -> None:
    with task.catalog.begin() as conn:
        task.catalog.transition(conn, "archive", arch["id"], arch["state"], states.FAILED, reason=reason,
                                detail=reason)
    task.log("archive-failed", logging.ERROR, archive=arch["path"], reason=reason)
    update_trouble_alarm(task.catalog, task.settings)


def _archive_facts(rows: Iterable[Any]) -> list[policy.ArchiveFacts]:
    return [policy.ArchiveFacts(r["id"], r["pattern"], r["serial"], r["state"], r["size"], r["nfiles"],
                                r["first_write"]) for r in rows]


def _freeze_wanted(catalog: Catalog, pattern: str, settings: Settings) -> bool:
    with catalog.read() as conn:
        rows = conn.execute(select(archives).where(archives.c.pattern == pattern)).mappings().all()
    return bool(policy.freeze_decisions(_archive_facts(rows), time.time(), settings["archive"]["freeze_age"],
                                        settings["archive"]["max_zip_bytes"]))


# -- freeze -----------------------------------------------------------------------------------------

@app.task(base=T0Task, bind=True, name="t0dqm.tasks.archive.freeze", **long_limits())
def freeze(self: T0Task, pattern: str | None = None, archive_ids: list[int] | None = None) -> dict[str, int]:
    """Freeze what the policy says (every serial but the newest at once; the newest when old or full),
    plus ``archive_ids`` if given (an operator's explicit request). Records size and adler32, then
    enqueues the stage."""
    settings, catalog = self.settings, self.catalog
    with catalog.read() as conn:
        query = select(archives).where(archives.c.pattern.in_(
            select(archives.c.pattern).where(archives.c.state == states.OPEN)))
        if pattern is not None:
            query = query.where(archives.c.pattern == pattern)
        rows = conn.execute(query).mappings().all()
    decisions = policy.freeze_decisions(_archive_facts(rows), time.time(), settings["archive"]["freeze_age"],
                                        settings["archive"]["max_zip_bytes"])
    wanted = {d.archive_id: d.reason for d in decisions}
    for extra in archive_ids or ():
        wanted.setdefault(int(extra), "requested")
    outcome: dict[str, int] = {}
    for archive_id, reason in wanted.items():
        result = freeze_one(self, archive_id, reason)
        outcome[result] = outcome.get(result, 0) + 1
    return outcome


def freeze_one(task: T0Task, archive_id: int, reason: str) -> str:
    """Freeze one open, non-empty archive under its zip lease; enqueue its stage."""
    settings, catalog = task.settings, task.catalog
    arch = catalog.get("archive", archive_id)
    if arch is None or arch["state"] != states.OPEN or arch["nfiles"] == 0:
        return "skipped"
    name, owner = f"zip:{arch['path']}", _owner(task)
    try:
        wait_lease(catalog, name, owner, zip_lease_seconds(settings))
    except LeaseBusy:
        return "busy"
    try:
        with catalog.read() as conn:
            arch = conn.execute(select(archives).where(archives.c.id == archive_id)).mappings().one()
            current = member_list(conn, archive_id)
            sources = member_sources(conn, archive_id, settings.repository)
        if arch["state"] != states.OPEN:
            return "skipped"
        zip_abs = settings.zip_root / arch["path"]
        try:
            repaired = zipper.repair(zip_abs, current, sources)
            adler = zipper.zip_adler32(zip_abs, current)
        except (zipper.ZipDamaged, zipper.SourceMismatch) as exc:
            _fail_archive(task, arch, f"cannot freeze: {exc}")
            return "failed"
        now = time.time()
        with catalog.begin() as conn:
            ok = catalog.transition(conn, "archive", archive_id, states.OPEN, states.FROZEN,
                                    size=zip_abs.stat().st_size, adler32=adler, frozen_at=now, tries=0,
                                    next_try_at=None, reason=None, detail=f"{reason}; zip {repaired}")
    finally:
        catalog.release_lease(name, owner)
    if not ok:
        return "skipped"
    task.log("frozen", archive=arch["path"], reason=reason, adler32=adler)
    task.enqueue(app.signature("t0dqm.tasks.tape.stage"), archive_id)
    return "frozen"


# -- recovery ---------------------------------------------------------------------------------------

@recoverer("zip")
def _recover_zip(conn: Connection, settings: Settings, now: float) -> Iterator[Resume]:
    """Received files with a zip pattern that are not in an archive yet."""
    ids = stale_ids(conn, files, "state", [states.RECEIVED], now, settings["reconcile"]["stale_seconds"])
    if not ids:
        return
    in_archive = {r[0] for r in conn.execute(select(members.c.file_id).where(members.c.file_id.in_(ids)))}
    with_pattern = {r[0] for r in conn.execute(select(files.c.id).where(files.c.id.in_(ids),
                                                                          files.c.zippat.is_not(None)))}
    for file_id in ids:
        if file_id in with_pattern and file_id not in in_archive:
            yield Resume("t0dqm.tasks.archive.zip_file", (file_id,))


@recoverer("freeze")
def _recover_freeze(conn: Connection, settings: Settings, now: float) -> Iterator[Resume]:
    """Open archives the policy wants frozen (the beat does the same; this covers a missed beat)."""
    rows = conn.execute(select(archives).where(archives.c.pattern.in_(
        select(archives.c.pattern).where(archives.c.state == states.OPEN)))).mappings().all()
    decisions = policy.freeze_decisions(_archive_facts(rows), now, settings["archive"]["freeze_age"],
                                        settings["archive"]["max_zip_bytes"])
    stale = now - settings["reconcile"]["stale_seconds"]
    by_id = {r["id"]: r for r in rows}
    patterns = sorted({by_id[d.archive_id]["pattern"] for d in decisions if by_id[d.archive_id]["updated_at"] < stale})
    for pattern in patterns:
        yield Resume("t0dqm.tasks.archive.freeze", (pattern,))
