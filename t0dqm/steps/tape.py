"""Step: tape. Stage frozen zips to the archive endpoint, verify them later, clean local zips, and
back the index up.

States: frozen -stage-> copied -verify-> verified (final without require_tape) -> on_tape; a copy
that does not match re-stages; a target that exists with other content is a conflict for an
operator and is never overwritten; repeated failures end in failed. One summarised alarm covers
every archive in trouble. A stage or verification due soon is returned as a next step with a
countdown; later ones are found by ``verify_due`` (the beat).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from t0dqm import deleter, storage
from t0dqm.catalog import archives as db
from t0dqm.catalog import states
from t0dqm.catalog.recovery import dead_claim_ids
from t0dqm.config import Settings
from t0dqm.formats import zipper
from t0dqm.policies import archive as policy
from t0dqm.steps.archive import STAGE_TASK, update_trouble_alarm
from t0dqm.steps.next import Context, LeaseBusy, Next, Outcome
from t0dqm.steps.reconcile import Resume, recoverer

VERIFY_TASK = "t0dqm.tasks.tape.verify"
VERIFY_DUE_TASK = "t0dqm.tasks.tape.verify_due"
CLEAN_ZIPS_TASK = "t0dqm.tasks.tape.clean_zips"
BACKUP_INDEX_TASK = "t0dqm.tasks.tape.backup_index"

BACKUP_DIR = "index-backup"
# An archives row: a sqlalchemy RowMapping (keyed by name or column) or a plain dict.
ArchRow = Mapping[Any, Any]
SOON = 600  # retries due within this many seconds are also sent with a countdown


def retry_base(settings: Settings) -> float:
    """Back-off unit in seconds (archive.retry_base, default 300): waits are 1, 3, 6, 10... units."""
    return float(settings.archive.retry_base)


def retry_cap(settings: Settings) -> float:
    return float(settings.archive.retry_cap)


def target_url(settings: Settings, path: str) -> str:
    return storage.join(settings.archive_endpoint, path)


def _later(task_name: str, archive_id: int, delay: float) -> list[Next]:
    """A step to send with a countdown when it is due soon; later ones are found by verify_due. It goes
    through the (step, item) markers, so an archive has at most one such message waiting."""
    if delay > SOON:
        return []
    return [Next(task_name, (archive_id,), countdown=max(0.0, delay))]


# -- stage ------------------------------------------------------------------------------------------


def stage(ctx: Context, archive_id: int) -> Outcome:
    """Copy a frozen zip to the archive endpoint, checked end to end against the recorded adler32."""
    catalog, settings = ctx.catalog, ctx.settings
    arch = catalog.get("archive", archive_id)
    if arch is None:
        return Outcome("missing")
    if arch["state"] != states.FROZEN:
        return Outcome(arch["state"])
    if arch["next_try_at"] and arch["next_try_at"] > time.time():
        return Outcome("not-due")
    lease = settings.timeout("copy") + 300
    if not catalog.claim("archive", archive_id, [states.FROZEN], lease):
        return Outcome("busy")
    try:
        return _stage_claimed(ctx, archive_id)
    finally:
        catalog.release("archive", archive_id)


def _begin_attempt(ctx: Context, arch: ArchRow) -> int:
    """Record the attempt before touching the endpoint: a kill mid-copy leaves tries > 0 (so a
    partial target is known to be ours) and a back-off that stops a crash loop."""
    attempt = int(arch["tries"]) + 1
    when = time.time() + policy.backoff_delay(attempt, retry_base(ctx.settings), retry_cap(ctx.settings))
    with ctx.catalog.begin() as conn:
        db.update_archive(conn, arch["id"], tries=attempt, next_try_at=when, updated_at=time.time())
    return attempt


def _stage_claimed(ctx: Context, archive_id: int) -> Outcome:
    catalog, settings = ctx.catalog, ctx.settings
    arch = catalog.get("archive", archive_id)
    if arch is None or arch["state"] != states.FROZEN:
        return Outcome("skipped")
    local = settings.zip_root / arch["path"]
    target = target_url(settings, arch["path"])
    io = settings.timeout("io")
    ours_before = int(arch["tries"]) > 0
    try:
        arch = _ensure_local(ctx, arch, local)
    except (zipper.ZipDamaged, zipper.SourceMismatch) as exc:
        _give_up(ctx, arch, f"local zip lost and not rebuildable: {exc}")
        return Outcome(states.FAILED)
    attempt = _begin_attempt(ctx, arch)
    try:
        remote = storage.stat(target, io)
        if remote is not None:
            remote_sum = storage.checksum(target, io) if not remote.is_dir else None
            if remote.size == arch["size"] and remote_sum == arch["adler32"]:
                return _mark_copied(ctx, arch, "target already present with the same size and adler32")
            if not ours_before:
                return Outcome(_conflict(ctx, arch, remote.size, remote_sum))
            storage.remove(target, io)  # a partial copy from our own interrupted attempt
            with catalog.begin() as conn:
                catalog.audit(
                    conn,
                    entity="archive",
                    entity_id=archive_id,
                    action="remove-partial-remote",
                    path=target,
                    size=remote.size,
                    checksum=remote_sum,
                    rule="stage-retry",
                )
        storage.mkdir(target.rsplit("/", 1)[0], io)
        storage.copy(str(local), target, timeout=settings.timeout("copy"), expected_adler32=arch["adler32"])
    except storage.ChecksumMismatch as exc:
        reason = str(exc)
        if storage.adler32_file(local) != arch["adler32"]:
            try:
                _refresh_local(ctx, arch, local)
            except (zipper.ZipDamaged, zipper.SourceMismatch) as damaged:
                _give_up(ctx, arch, f"local zip damaged and not rebuildable: {damaged}")
                return Outcome(states.FAILED)
            reason += "; local zip was damaged and has been rebuilt"
        return _retry_or_fail(ctx, arch, attempt, reason)
    except (storage.StorageError, FileExistsError, OSError) as exc:
        return _retry_or_fail(ctx, arch, attempt, f"{type(exc).__name__}: {exc}")
    return _mark_copied(ctx, arch, f"copied, attempt {attempt}")


def _ensure_local(ctx: Context, arch: ArchRow, local: Path) -> Any:
    """The local zip must be what was frozen: repair or rebuild it if its size differs."""
    if local.is_file() and local.stat().st_size == arch["size"]:
        return arch
    return _refresh_local(ctx, arch, local)


def _refresh_local(ctx: Context, arch: ArchRow, local: Path) -> Any:
    """Bring the local zip back to its committed members (rebuilding from the repository when it is
    damaged) and record its new size and adler32. Only for archives not yet at the endpoint."""
    catalog, settings = ctx.catalog, ctx.settings
    with catalog.read() as conn:
        current = db.member_list(conn, arch["id"])
        sources = db.member_sources(conn, arch["id"], settings.repository)
    how = zipper.repair(local, current, sources)
    if how == "ok" and local.is_file() and storage.adler32_file(local) != arch["adler32"]:
        zipper.rebuild(local, current, sources)
        how = "rebuilt"
    adler = zipper.zip_adler32(local, current)
    with catalog.begin() as conn:
        db.update_archive(conn, arch["id"], size=local.stat().st_size, adler32=adler, updated_at=time.time())
        catalog.audit(
            conn,
            entity="archive",
            entity_id=arch["id"],
            action="zip-" + how,
            path=str(local),
            size=local.stat().st_size,
            checksum=adler,
        )
    ctx.log("zip-refreshed", logging.WARNING, archive=arch["path"], how=how)
    return catalog.get("archive", arch["id"])


def _mark_copied(ctx: Context, arch: ArchRow, detail: str) -> Outcome:
    catalog, settings = ctx.catalog, ctx.settings
    now = time.time()
    with catalog.begin() as conn:
        ok = catalog.transition(
            conn,
            "archive",
            arch["id"],
            states.FROZEN,
            states.COPIED,
            copied_at=now,
            tries=0,
            next_try_at=None,
            reason=None,
            detail=detail,
        )
    if not ok:
        return Outcome("skipped")
    ctx.log("copied", archive=arch["path"], detail=detail)
    return Outcome(states.COPIED, _later(VERIFY_TASK, arch["id"], float(settings.archive.verify_delay)))


def _conflict(ctx: Context, arch: ArchRow, size: int, adler: str | None) -> str:
    reason = (
        f"target exists with {size} bytes adler32 {adler}; ours {arch['size']} bytes adler32 "
        f"{arch['adler32']}: left untouched for an operator"
    )
    with ctx.catalog.begin() as conn:
        ctx.catalog.transition(
            conn,
            "archive",
            arch["id"],
            states.FROZEN,
            states.CONFLICT,
            reason=reason,
            next_try_at=None,
            detail=reason,
        )
    ctx.log("conflict", logging.ERROR, archive=arch["path"], reason=reason)
    update_trouble_alarm(ctx.catalog, ctx.settings)
    return states.CONFLICT


def _give_up(ctx: Context, arch: ArchRow, reason: str) -> None:
    with ctx.catalog.begin() as conn:
        ctx.catalog.transition(
            conn,
            "archive",
            arch["id"],
            arch["state"],
            states.FAILED,
            reason=reason,
            next_try_at=None,
            detail=reason,
        )
    ctx.log("archive-failed", logging.ERROR, archive=arch["path"], reason=reason)
    update_trouble_alarm(ctx.catalog, ctx.settings)


def _retry_or_fail(ctx: Context, arch: ArchRow, attempt: int, reason: str) -> Outcome:
    settings = ctx.settings
    decision = policy.retry_decision(
        attempt - 1,
        time.time(),
        int(settings.archive.stage_max_tries),
        retry_base(settings),
        retry_cap(settings),
    )
    if decision.give_up:
        _give_up(ctx, arch, f"stage failed {decision.tries} times; last: {reason}")
        return Outcome(states.FAILED)
    with ctx.catalog.begin() as conn:
        db.update_archive(
            conn,
            arch["id"],
            tries=decision.tries,
            next_try_at=decision.next_try_at,
            reason=reason,
            updated_at=time.time(),
        )
    ctx.log(
        "stage-retry",
        logging.WARNING,
        archive=arch["path"],
        tries=decision.tries,
        reason=reason,
        next_try_at=decision.next_try_at,
    )
    return Outcome("retry", _later(STAGE_TASK, arch["id"], (decision.next_try_at or 0) - time.time()))


# -- verify -----------------------------------------------------------------------------------------


def _verifiable(settings: Settings) -> list[str]:
    return [states.COPIED, states.VERIFIED] if settings.archive.require_tape else [states.COPIED]


def verify(ctx: Context, archive_id: int) -> Outcome:
    """After the verify delay: size and adler32 at the endpoint, and the tape flag where reported."""
    catalog, settings = ctx.catalog, ctx.settings
    arch = catalog.get("archive", archive_id)
    if arch is None:
        return Outcome("missing")
    if arch["state"] not in _verifiable(settings):
        return Outcome(arch["state"])
    if not policy.verify_due(
        arch["copied_at"], arch["next_try_at"], time.time(), float(settings.archive.verify_delay)
    ):
        return Outcome("not-due")
    if not catalog.claim("archive", archive_id, _verifiable(settings), settings.timeout("io") * 3 + 60):
        return Outcome("busy")
    try:
        return _verify_claimed(ctx, arch)
    finally:
        catalog.release("archive", archive_id)


def _verify_claimed(ctx: Context, arch: ArchRow) -> Outcome:
    catalog, settings = ctx.catalog, ctx.settings
    target = target_url(settings, arch["path"])
    io = settings.timeout("io")
    max_tries = int(settings.archive.stage_max_tries)
    try:
        remote = storage.stat(target, io)
        facts = None
        if remote is not None and not remote.is_dir:
            facts = policy.RemoteFacts(remote.size, storage.checksum(target, io), remote.on_tape)
    except storage.StorageError as exc:
        return Outcome(_verify_later(ctx, arch, f"endpoint error: {exc}"))
    decision = policy.verify_decision(
        arch["size"], arch["adler32"] or "", facts, bool(settings.archive.require_tape)
    )
    now = time.time()
    if decision.restage:
        with catalog.read() as conn:
            restages = db.restage_count(conn, arch["id"])
        if restages + 1 >= max_tries:
            _give_up(ctx, arch, f"copy at the endpoint bad {restages + 1} times; last: {decision.reason}")
            return Outcome(states.FAILED)
        if remote is not None:
            try:
                storage.remove(target, io)  # the endpoint's bad copy, not user data
            except storage.StorageError as exc:
                return Outcome(_verify_later(ctx, arch, f"cannot remove the bad copy: {exc}"))
        with catalog.begin() as conn:
            catalog.audit(
                conn,
                entity="archive",
                entity_id=arch["id"],
                action="restage",
                path=target,
                size=facts.size if facts else None,
                checksum=facts.adler32 if facts else None,
                detail=decision.reason,
            )
            ok = catalog.transition(
                conn,
                "archive",
                arch["id"],
                arch["state"],
                states.FROZEN,
                tries=0,
                next_try_at=None,
                copied_at=None,
                reason=decision.reason,
                detail=decision.reason,
            )
        ctx.log("restage", logging.WARNING, archive=arch["path"], reason=decision.reason)
        return Outcome("restage", [Next(STAGE_TASK, (arch["id"],))] if ok else [])
    values: dict[str, Any] = {"verified_at": arch["verified_at"] or now, "reason": None}
    if decision.final:
        values.update(tries=0, next_try_at=None)
    else:  # verified, waiting for the tape copy: look again later, alarm when it takes too long
        decision_retry = policy.retry_decision(
            arch["tries"], now, 1 << 30, retry_base(settings), retry_cap(settings)
        )
        values.update(
            tries=decision_retry.tries,
            next_try_at=decision_retry.next_try_at,
            reason="no tape copy yet" if decision_retry.tries >= max_tries else None,
        )
    with catalog.begin() as conn:
        if decision.new_state == arch["state"]:
            db.update_archive(conn, arch["id"], updated_at=now, **values)
        else:
            catalog.transition(
                conn,
                "archive",
                arch["id"],
                arch["state"],
                decision.new_state,
                detail=decision.reason,
                **values,
            )
    if not decision.final and values["tries"] >= max_tries:
        update_trouble_alarm(catalog, settings)
    ctx.log("verified", archive=arch["path"], state=decision.new_state, final=decision.final)
    return Outcome(decision.new_state)


def _verify_later(ctx: Context, arch: ArchRow, reason: str) -> str:
    settings = ctx.settings
    decision = policy.retry_decision(
        arch["tries"], time.time(), 1 << 30, retry_base(settings), retry_cap(settings)
    )
    with ctx.catalog.begin() as conn:
        db.update_archive(
            conn,
            arch["id"],
            tries=decision.tries,
            next_try_at=decision.next_try_at,
            reason=reason,
            updated_at=time.time(),
        )
    ctx.log("verify-retry", logging.WARNING, archive=arch["path"], tries=decision.tries, reason=reason)
    if decision.tries >= int(settings.archive.stage_max_tries):
        update_trouble_alarm(ctx.catalog, settings)
    return "retry"


# -- beat: verify_due -------------------------------------------------------------------------------


def _due(conn: Any, settings: Settings, now: float) -> tuple[list[int], list[int]]:
    """(frozen archives whose stage is due, copied archives whose verification is due)."""
    dead = dead_claim_ids(conn, "archive", "state", [states.FROZEN, *_verifiable(settings)], now)
    frozen = db.due_frozen(conn, now, dead)
    delay = float(settings.archive.verify_delay)
    rows = db.verify_candidates(conn, _verifiable(settings), now, dead)
    copied = [r.id for r in rows if policy.verify_due(r.copied_at, r.next_try_at, now, delay)]
    return frozen, copied


def verify_due(ctx: Context) -> Outcome:
    """Beat: the stages and verifications that are due (sent with reconcile's orphan grace), and the
    summarised alarm refreshed."""
    with ctx.catalog.read() as conn:
        frozen, copied = _due(conn, ctx.settings, time.time())
    grace = float(ctx.settings.reconcile.orphan_grace)
    steps = [Next(STAGE_TASK, (archive_id,)) for archive_id in frozen] + [
        Next(VERIFY_TASK, (archive_id,)) for archive_id in copied
    ]
    update_trouble_alarm(ctx.catalog, ctx.settings)
    return Outcome({"stage": len(frozen), "verify": len(copied)}, steps, orphan_grace=grace)


@recoverer("tape")
def _recover_tape(conn: Any, settings: Settings, now: float) -> Iterator[Resume]:
    """Frozen archives whose stage is due and copied ones whose verification is due (lost messages,
    killed workers: their claims have expired)."""
    stale = now - settings.reconcile.stale_seconds
    frozen, copied = _due(conn, settings, now)
    recent = db.recently_moved(conn, frozen + copied, stale)
    for archive_id in frozen:
        if archive_id not in recent:
            yield Resume(STAGE_TASK, (archive_id,))
    for archive_id in copied:
        yield Resume(VERIFY_TASK, (archive_id,))


# -- daily: clean local zips ------------------------------------------------------------------------


def clean_zips(ctx: Context) -> dict[str, int]:
    """Remove local zips whose archive is safe at the endpoint (guarded deleter, audited); the
    archive becomes ``cleaned``. One runner at a time (lease ``tape:clean_zips``)."""
    catalog, settings = ctx.catalog, ctx.settings
    safe = [s for s in states.archive_safe_states(bool(settings.archive.require_tape)) if s != states.CLEANED]
    dry_run = bool(settings.deletion.dry_run)
    out = {"cleaned": 0, "missing": 0, "refused": 0, "dry_run": 0}
    try:
        with ctx.lease("tape:clean_zips", seconds=3600):
            with catalog.read() as conn:
                rows = db.archives_in_states(conn, safe)
            for arch in rows:
                local = settings.zip_root / arch["path"]
                try:
                    existed = deleter.delete(
                        str(local),
                        rule="archive-clean",
                        size=arch["size"],
                        checksum=arch["adler32"],
                        entity_id=arch["id"],
                        reason=f"archive {arch['state']} at the endpoint",
                    )
                except deleter.DeletionRefused as exc:
                    out["refused"] += 1
                    ctx.log("clean-refused", logging.WARNING, archive=arch["path"], reason=str(exc))
                    continue
                if dry_run:
                    out["dry_run"] += 1
                    continue
                with catalog.begin() as conn:
                    catalog.transition(
                        conn,
                        "archive",
                        arch["id"],
                        arch["state"],
                        states.CLEANED,
                        cleaned_at=time.time(),
                        detail=None if existed else "local zip was already gone",
                    )
                out["cleaned" if existed else "missing"] += 1
    except LeaseBusy:
        return out
    ctx.log("clean-zips", **out)
    return out


# -- daily: index backup ----------------------------------------------------------------------------

SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".lock", ".tmp")


def _index_files(index_dir: Path) -> list[Path]:
    if not index_dir.is_dir():
        return []
    return sorted(
        p
        for p in index_dir.rglob("*")
        if p.is_file() and not p.name.endswith(SKIP_SUFFIXES) and not p.name.startswith(".")
    )


def _snapshot(path: Path, work_dir: Path) -> Path:
    """A consistent copy to back up: SQLite's online backup for databases, a plain copy otherwise."""
    work_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".backup", dir=work_dir)
    os.close(fd)
    with open(path, "rb") as fh:
        is_sqlite = fh.read(16) == b"SQLite format 3\x00"
    if is_sqlite:
        src = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        dst = sqlite3.connect(tmp)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    else:
        with open(path, "rb") as fin, open(tmp, "wb") as fout:
            storage.copy_stream(fin, fout)
    return Path(tmp)


def backup_index(ctx: Context, day: str | None = None) -> dict[str, int]:
    """Copy each index file to <endpoint>/index-backup/<YYYYMMDD>/, checksum-verified; keep the last
    archive.index_backups_kept days. One runner at a time (lease ``tape:backup_index``)."""
    settings = ctx.settings
    day = day or datetime.now(UTC).strftime("%Y%m%d")
    base = storage.join(settings.archive_endpoint, BACKUP_DIR)
    io = settings.timeout("io")
    out = {"copied": 0, "unchanged": 0, "dropped": 0}
    try:
        with ctx.lease("tape:backup_index", seconds=3600):
            for path in _index_files(settings.index_dir):
                rel = path.relative_to(settings.index_dir).as_posix()
                snap = _snapshot(path, settings.work_dir)
                try:
                    adler = storage.adler32_file(snap)
                    target = storage.join(base, day, rel)
                    existing = storage.stat(target, io)
                    if existing is not None and storage.checksum(target, io) == adler:
                        out["unchanged"] += 1
                        continue
                    if existing is not None:
                        storage.remove(target, io)  # our own earlier backup of today, now outdated
                    storage.mkdir(target.rsplit("/", 1)[0], io)
                    storage.copy(str(snap), target, timeout=settings.timeout("copy"), expected_adler32=adler)
                    out["copied"] += 1
                finally:
                    snap.unlink(missing_ok=True)
            out["dropped"] = _rotate_backups(ctx, base, int(settings.archive.index_backups_kept))
    except LeaseBusy:
        return out
    ctx.log("index-backup", day=day, **out)
    return out


def _remove_tree(url: str, io: float) -> list[tuple[str, int]]:
    removed: list[tuple[str, int]] = []
    for entry in storage.listdir(url, io):
        child = storage.join(url, entry.name)
        if entry.is_dir:
            removed += _remove_tree(child, io)
        elif storage.remove(child, io):
            removed.append((child, entry.size))
    if storage.is_remote(url):
        from XRootD import client

        server, path = storage.split_url(url)
        client.FileSystem(server).rmdir(path, timeout=max(1, int(io)))
    else:
        os.rmdir(url)
    return removed


def _rotate_backups(ctx: Context, base: str, keep: int) -> int:
    """Drop dated backup folders beyond the newest ``keep`` (our own copies; audited)."""
    io = ctx.settings.timeout("io")
    if storage.stat(base, io) is None:
        return 0
    names = [e.name for e in storage.listdir(base, io) if e.is_dir]
    dropped = policy.backups_to_drop(names, keep)
    for name in dropped:
        removed = _remove_tree(storage.join(base, name), io)
        with ctx.catalog.begin() as conn:
            for path, size in removed:
                ctx.catalog.audit(
                    conn, entity="index", action="delete", path=path, size=size, rule="index-backup-rotate"
                )
    return len(dropped)
