"""Step: archive. Append received files to their zip (:func:`zip_file`) and freeze zips (:func:`freeze`).

The catalog is the guard: ``members.file_id`` is unique, so a file is in exactly one archive; appends
to one zip are serialised by the catalog lease ``zip:<path>``; a frozen archive is never appended to.
The zip is written and fsynced before the membership commits, and a zip that does not match its
committed members (a crash between the two) is repaired before the next append or the freeze.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import IntegrityError

from t0dqm.catalog import archives as db
from t0dqm.catalog import states
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog, worker_identity
from t0dqm.catalog.recovery import stale_ids
from t0dqm.config import Settings
from t0dqm.formats import zipper
from t0dqm.policies import archive as policy
from t0dqm.steps.next import Context, LeaseBusy, Next, Outcome
from t0dqm.steps.reconcile import Resume, recoverer

ZIP_TASK = "t0dqm.tasks.archive.zip_file"
FREEZE_TASK = "t0dqm.tasks.archive.freeze"
STAGE_TASK = "t0dqm.tasks.tape.stage"

ZIP_LEASE_SECONDS = 600  # longer than any append or freeze of one zip
LEASE_WAIT_SECONDS = 30
TROUBLE_ALARM = "archive:trouble"

# kept under their old names for the code that reads members through this module
member_list = db.member_list
member_sources = db.member_sources


# -- alarms ----------------------------------------------------------------------------------------


def update_trouble_alarm(catalog: Catalog, settings: Settings) -> str | None:
    """One summarised alarm for every archive that is failed, in conflict, or still retrying past
    the try limit; cleared when there is none."""
    max_tries = int(settings.archive.stage_max_tries)
    with catalog.read() as conn:
        rows = db.trouble(conn, max_tries)
    message = policy.summarise([policy.Trouble(r.path, r.state, r.tries, r.reason) for r in rows])
    with catalog.read() as conn:
        active = db.active_alarm_message(conn, TROUBLE_ALARM)
    if message is None:
        if active is not None:
            clear_alarm(catalog, TROUBLE_ALARM)
    elif message != active:
        raise_alarm(catalog, TROUBLE_ALARM, message, severity="critical")
    return message


# -- catalog helpers --------------------------------------------------------------------------------


def _ensure_archive(catalog: Catalog, pattern: str, serial: int) -> int:
    """The archive row of (pattern, serial), inserted on first use (the unique key settles races)."""
    with catalog.read() as conn:
        found = db.archive_id(conn, pattern, serial)
    if found is not None:
        return found
    now = time.time()
    try:
        with catalog.begin() as conn:
            new_id = db.insert_archive(conn, policy.zip_path(pattern, serial), pattern, serial, now)
            catalog.audit(
                conn,
                entity="archive",
                entity_id=new_id,
                action="create",
                to_state=states.OPEN,
                path=policy.zip_path(pattern, serial),
            )
            return new_id
    except IntegrityError:
        with catalog.read() as conn:
            again = db.archive_id(conn, pattern, serial)
        if again is None:
            raise
        return again


def zip_lease_seconds(settings: Settings) -> float:
    """How long a zip lease outlives a killed holder (archive.zip_lease)."""
    return float(settings.archive.zip_lease)


def wait_lease(
    catalog: Catalog,
    name: str,
    owner: str,
    seconds: float = ZIP_LEASE_SECONDS,
    wait: float = LEASE_WAIT_SECONDS,
) -> None:
    """Take the named lease, waiting up to ``wait`` seconds for its holder; LeaseBusy after that."""
    deadline = time.monotonic() + wait
    pause = 0.02
    while not catalog.acquire_lease(name, owner, seconds):
        if time.monotonic() >= deadline:
            raise LeaseBusy(name)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def _owner(ctx: Context) -> str:
    return f"{worker_identity()}:{ctx.task_id or ''}"


class _Abort(Exception):
    """Roll the membership transaction back: someone else changed the rows first."""


def _readable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.R_OK)


# -- zip_file ---------------------------------------------------------------------------------------


def zip_file(ctx: Context, file_id: int) -> Outcome:
    """Append one received file to the first open serial of its zip pattern that has room.

    Idempotent: a file that is already a member returns at once. The result says what happened; a
    freeze follows when the policy wants one. Raises LeaseBusy when the zip's lease stays taken (the
    task retries).
    """
    settings, catalog = ctx.settings, ctx.catalog
    max_bytes = int(settings.archive.max_zip_bytes)
    for _ in range(10):  # a chosen serial may fill up or freeze before we hold its lease
        with catalog.read() as conn:
            row = db.file_row(conn, file_id)
            if row is None:
                return Outcome("missing")
            if db.archive_of_file(conn, file_id) is not None:
                return Outcome("already")
            if row["state"] != states.RECEIVED or not row["zippat"]:
                return Outcome(f"skipped ({row['state']})")
            serials = db.archives_of_pattern(conn, row["zippat"])
            holding = db.archives_holding_name(conn, row["name"], [s["id"] for s in serials])
        source = settings.repository / row["path"]
        if not source.is_file():
            _note_file_problem(ctx, row, f"repository file missing: {source}")
            return Outcome("source-missing")
        facts = [
            policy.SerialFacts(
                s["serial"],
                s["state"],
                s["size"],
                s["nfiles"],
                readable=_readable(settings.zip_root / s["path"]),
                has_name=s["id"] in holding,
            )
            for s in serials
        ]
        serial = policy.choose_serial(facts, row["size"], row["name"], max_bytes)
        archive_id = _ensure_archive(catalog, row["zippat"], serial)
        path = policy.zip_path(row["zippat"], serial)
        owner = _owner(ctx)
        wait_lease(catalog, f"zip:{path}", owner, zip_lease_seconds(settings))
        try:
            outcome = _append_locked(ctx, row, archive_id, source)
        finally:
            catalog.release_lease(f"zip:{path}", owner)
        if outcome == "again":
            continue
        if outcome == "zipped":
            ctx.log("zipped", file_id=file_id, archive=path)
            if _freeze_wanted(catalog, row["zippat"], settings):
                return Outcome(outcome, [Next(FREEZE_TASK, (row["zippat"],))])
        return Outcome(outcome)
    return Outcome("busy")


def _note_file_problem(ctx: Context, row: Mapping[Any, Any], reason: str) -> None:
    with ctx.catalog.begin() as conn:
        db.set_file_reason(conn, row["id"], reason, time.time())
        ctx.catalog.audit(
            conn, entity="file", entity_id=row["id"], action="zip-problem", path=row["path"], detail=reason
        )
    raise_alarm(ctx.catalog, f"zip:file:{row['id']}", f"{row['path']}: {reason}")
    ctx.log("zip-problem", logging.WARNING, file_id=row["id"], reason=reason)


def _append_locked(ctx: Context, row: Mapping[Any, Any], archive_id: int, source: Path) -> str:
    """Under the zip lease: re-check, append, commit. "zipped", "already", "again" or a problem."""
    settings, catalog = ctx.settings, ctx.catalog
    with catalog.read() as conn:
        arch = db.archive_row(conn, archive_id)
        if db.archive_of_file(conn, row["id"]) is not None:
            return "already"
        current = db.member_list(conn, archive_id)
        sources = db.member_sources(conn, archive_id, settings.repository)
    need = row["size"] + policy.member_overhead(row["name"]) + policy.END_RECORD_BYTES
    fits = arch["nfiles"] == 0 or arch["size"] + need <= int(settings.archive.max_zip_bytes)
    if arch["state"] != states.OPEN or not fits or any(m.name == row["name"] for m in current):
        return "again"
    zip_abs = settings.zip_root / arch["path"]
    try:
        written = zipper.append(
            zip_abs, source, row["name"], current, sources=sources, expected_adler32=row["adler32"]
        )
    except zipper.SourceMismatch as exc:
        _note_file_problem(ctx, row, f"checksum changed since receive: {exc}")
        return "corrupt"
    except zipper.ZipDamaged as exc:
        _fail_archive(ctx, arch, f"open zip damaged and not rebuildable: {exc}")
        return "again"
    now = time.time()
    try:
        with catalog.begin() as conn:
            db.insert_member(conn, archive_id, row["id"], written.name, written.size, written.adler32, now)
            if not catalog.transition(
                conn,
                "file",
                row["id"],
                states.RECEIVED,
                states.ZIPPED,
                archive_id=archive_id,
                reason=None,
                detail=arch["path"],
            ):
                raise _Abort("file left the received state")
            if db.count_append(conn, archive_id, zip_abs.stat().st_size, now) != 1:
                raise _Abort("archive no longer open")
    except (IntegrityError, _Abort) as exc:
        zipper.repair(zip_abs, current, sources)  # take our uncommitted member out again
        ctx.log("zip-lost-race", file_id=row["id"], archive=arch["path"], why=str(exc))
        return "again"
    return "zipped"


def _fail_archive(ctx: Context, arch: Mapping[Any, Any], reason: str) -> None:
    with ctx.catalog.begin() as conn:
        ctx.catalog.transition(
            conn, "archive", arch["id"], arch["state"], states.FAILED, reason=reason, detail=reason
        )
    ctx.log("archive-failed", logging.ERROR, archive=arch["path"], reason=reason)
    update_trouble_alarm(ctx.catalog, ctx.settings)


def _archive_facts(rows: Iterable[Mapping[Any, Any]]) -> list[policy.ArchiveFacts]:
    return [
        policy.ArchiveFacts(
            r["id"], r["pattern"], r["serial"], r["state"], r["size"], r["nfiles"], r["first_write"]
        )
        for r in rows
    ]


def _freeze_wanted(catalog: Catalog, pattern: str, settings: Settings) -> bool:
    with catalog.read() as conn:
        rows = db.archives_of_pattern(conn, pattern)
    return bool(
        policy.freeze_decisions(
            _archive_facts(rows), time.time(), settings.archive.freeze_age, settings.archive.max_zip_bytes
        )
    )


# -- freeze -----------------------------------------------------------------------------------------


def freeze(ctx: Context, pattern: str | None = None, archive_ids: list[int] | None = None) -> Outcome:
    """Freeze what the policy says (every serial but the newest at once; the newest when old or full),
    plus ``archive_ids`` if given (an operator's explicit request). Records size and adler32; the
    stage of each frozen archive follows."""
    settings, catalog = ctx.settings, ctx.catalog
    with catalog.read() as conn:
        rows = db.archives_of_open_patterns(conn, pattern)
    decisions = policy.freeze_decisions(
        _archive_facts(rows), time.time(), settings.archive.freeze_age, settings.archive.max_zip_bytes
    )
    wanted = {d.archive_id: d.reason for d in decisions}
    for extra in archive_ids or ():
        wanted.setdefault(int(extra), "requested")
    counts: dict[str, int] = {}
    out = Outcome(counts)
    for archive_id, reason in wanted.items():
        one = freeze_one(ctx, archive_id, reason)
        counts[one.result] = counts.get(one.result, 0) + 1
        out.then(one.next)
    return out


def freeze_one(ctx: Context, archive_id: int, reason: str) -> Outcome:
    """Freeze one open, non-empty archive under its zip lease; its stage follows."""
    settings, catalog = ctx.settings, ctx.catalog
    arch: Any = catalog.get("archive", archive_id)
    if arch is None or arch["state"] != states.OPEN or arch["nfiles"] == 0:
        return Outcome("skipped")
    name, owner = f"zip:{arch['path']}", _owner(ctx)
    try:
        wait_lease(catalog, name, owner, zip_lease_seconds(settings))
    except LeaseBusy:
        return Outcome("busy")
    try:
        with catalog.read() as conn:
            arch = db.archive_row(conn, archive_id)
            current = db.member_list(conn, archive_id)
            sources = db.member_sources(conn, archive_id, settings.repository)
        if arch["state"] != states.OPEN:
            return Outcome("skipped")
        zip_abs = settings.zip_root / arch["path"]
        try:
            repaired = zipper.repair(zip_abs, current, sources)
            adler = zipper.zip_adler32(zip_abs, current)
        except (zipper.ZipDamaged, zipper.SourceMismatch) as exc:
            _fail_archive(ctx, arch, f"cannot freeze: {exc}")
            return Outcome("failed")
        now = time.time()
        with catalog.begin() as conn:
            ok = catalog.transition(
                conn,
                "archive",
                archive_id,
                states.OPEN,
                states.FROZEN,
                size=zip_abs.stat().st_size,
                adler32=adler,
                frozen_at=now,
                tries=0,
                next_try_at=None,
                reason=None,
                detail=f"{reason}; zip {repaired}",
            )
    finally:
        catalog.release_lease(name, owner)
    if not ok:
        return Outcome("skipped")
    ctx.log("frozen", archive=arch["path"], reason=reason, adler32=adler)
    return Outcome("frozen", [Next(STAGE_TASK, (archive_id,))])


# -- recovery ---------------------------------------------------------------------------------------


@recoverer("zip")
def _recover_zip(conn: Any, settings: Settings, now: float) -> Iterator[Resume]:
    """Received files with a zip pattern that are not in an archive yet."""
    ids = stale_ids(conn, "file", "state", [states.RECEIVED], now, settings.reconcile.stale_seconds)
    if not ids:
        return
    in_archive = db.files_in_archives(conn, ids)
    with_pattern = db.files_with_pattern(conn, ids)
    for file_id in ids:
        if file_id in with_pattern and file_id not in in_archive:
            yield Resume(ZIP_TASK, (file_id,))


@recoverer("freeze")
def _recover_freeze(conn: Any, settings: Settings, now: float) -> Iterator[Resume]:
    """Open archives the policy wants frozen (the beat does the same; this covers a missed beat)."""
    rows = db.archives_of_open_patterns(conn)
    decisions = policy.freeze_decisions(
        _archive_facts(rows), now, settings.archive.freeze_age, settings.archive.max_zip_bytes
    )
    stale = now - settings.reconcile.stale_seconds
    by_id = {r["id"]: r for r in rows}
    patterns = sorted(
        {by_id[d.archive_id]["pattern"] for d in decisions if by_id[d.archive_id]["updated_at"] < stale}
    )
    for pattern in patterns:
        yield Resume(FREEZE_TASK, (pattern,))
