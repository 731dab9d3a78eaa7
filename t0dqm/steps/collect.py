"""Producer-host I/O (fileCollector2 and producerFileCleaner): gathers facts, applies the decisions of
:mod:`t0dqm.policies.collect`.

A producer is configured as ``producers = [{host = "...", dir = "...", done = "...", dropbox = "..."}]``:
``dir`` is the folder the DQM applications write into, ``done`` (default: ``done`` next to ``dir``)
keeps what was uploaded or found bad, ``dropbox`` (default: the flavour's dropbox) is a local path or a
``root://`` URL. Deletions go through :func:`t0dqm.deleter.delete`; the producer's ``dir`` and ``done``
are added to the deleter's roots for that call only.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t0dqm import config, deleter, storage
from t0dqm.formats import dropbox, rootcheck
from t0dqm.policies import collect as policy
from t0dqm.steps.next import Context, LeaseBusy, Outcome

log = logging.getLogger("t0dqm.steps.collect")

ZOMBIE, INCOMPLETE, OK = "zombie", "incomplete", "ok"
COLLECT_TASK = "t0dqm.tasks.collect.collect"
CLEAN_TASK = "t0dqm.tasks.collect.clean_producer"
STATE_FILE = ".collector.json"
STOP_FILE = ".stop"
STAGING = ".staging"


@dataclass(frozen=True)
class Producer:
    host: str
    dir: Path
    done: Path
    dropbox: str

    @property
    def key(self) -> str:
        return f"{self.host}:{self.dir}"


def producers(settings: config.Settings, host: str | None = None) -> list[Producer]:
    """Configured producers (``producers`` key), optionally only those of ``host``."""
    out = []
    for entry in settings.producers:
        if host is not None and entry["host"] != host:
            continue
        d = Path(entry["dir"]).resolve()
        done = Path(entry.get("done") or d.parent / "done").resolve()
        out.append(Producer(entry["host"], d, done, str(entry.get("dropbox") or settings.dropbox)))
    return out


def producer_settings(settings: config.Settings, producer: Producer) -> config.Settings:
    """Settings whose deletion roots also hold the producer's folders (for deleter.delete)."""
    data = copy.deepcopy(settings.data)
    extra = list(data.setdefault("deletion", {}).get("extra_roots", []))
    data["deletion"]["extra_roots"] = [*extra, str(producer.dir), str(producer.done)]
    return config.Settings(data=data, source=settings.source)


# -- facts ----------------------------------------------------------------------------------------


def open_files(under: str | os.PathLike[str] | None = None, proc: str = "/proc") -> set[str]:
    """Real paths of files held open by any process we can inspect (``/proc/<pid>/fd``).

    With ``under``, only paths inside that folder are returned. Processes we may not inspect are skipped.
    """
    prefix = os.path.realpath(under) + os.sep if under is not None else None
    found: set[str] = set()
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = os.path.join(proc, pid, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(os.path.join(fd_dir, fd))
            except OSError:
                continue
            if target.endswith(" (deleted)") or not target.startswith("/"):
                continue
            if prefix is None or target.startswith(prefix):
                found.add(target)
    return found


def check_content(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(status, reason): ``zombie`` (not a readable ROOT file), ``incomplete`` (truncated or missing
    the Run summary) or ``ok`` — the three answers of the original filechk macro."""
    try:
        rootcheck.check_root_file(path, strict=False)
    except rootcheck.RootCheckError as exc:
        reason = exc.reason
        if reason.startswith(("truncated", "no Run summary", "cannot read")):
            return INCOMPLETE, reason
        return ZOMBIE, reason
    return OK, "VERIFY: Good to go"


def disk_usage(path: str | os.PathLike[str]) -> policy.DiskUsage:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    return policy.DiskUsage(total=total, used=total - st.f_bavail * st.f_frsize)


def _scan(folder: Path) -> list[policy.ProducerFile]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            f = policy.parse(path, mtime=st.st_mtime, size=st.st_size)
            if f is not None:
                out.append(f)
    return out


# -- upload ---------------------------------------------------------------------------------------


def _md5(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def upload_remote(path: str, name: str, box: str, timeout: float, source: str) -> str:
    """Upload to a ``root://`` dropbox: first free NNNN slot, verified copy, then the .origin last."""
    size = os.path.getsize(path)
    md5 = _md5(path)
    for slot in range(dropbox.MAX_SLOTS):
        folder = storage.join(box, f"{slot:04d}")
        target = storage.join(folder, name)
        if any(
            storage.stat(target + suffix, timeout) is not None
            for suffix in ("", dropbox.ORIGIN, dropbox.CLAIMED, dropbox.ORIGIN_BAD, dropbox.BAD)
        ):
            continue
        try:
            storage.copy(path, target, timeout=timeout)
        except FileExistsError:
            continue  # another uploader took the slot meanwhile
        with tempfile.NamedTemporaryFile("w", suffix=".origin", delete=False) as fh:
            fh.write(dropbox.format_origin(md5, size, source))
            origin_tmp = fh.name
        try:
            storage.copy(origin_tmp, target + dropbox.ORIGIN, timeout=timeout, force=True)
        finally:
            os.unlink(origin_tmp)
        return target
    raise storage.StorageError(f"dropbox {box}: no free slot for {name}")


def upload_as(path: str, name: str, box: str, *, timeout: float, source: str) -> str:
    """Upload ``path`` under the name ``name`` to a local or remote dropbox; return the uploaded path."""
    if storage.is_remote(box):
        return upload_remote(path, name, box, timeout, source)
    staging = Path(path).parent / STAGING / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        staged = staging / name
        try:
            os.link(path, staged)
        except OSError:
            shutil.copy2(path, staged)
        return str(dropbox.upload(staged, box, source=source))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- collector ------------------------------------------------------------------------------------


@dataclass
class CollectReport:
    uploaded: list[str] = field(default_factory=list)  # dropbox paths
    skipped_open: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # files moved to done/ as _d
    pruned: list[str] = field(default_factory=list)  # _d files beyond the two kept
    placeholders: list[str] = field(default_factory=list)
    removed_orphans: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stopped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _load_state(p: Producer) -> dict[str, float]:
    try:
        return json.loads((p.done / STATE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return {"last_upload": time.time(), "last_seen_run": 0}


def _save_state(p: Producer, state: dict[str, float]) -> None:
    p.done.mkdir(parents=True, exist_ok=True)
    dropbox.write_atomic(p.done / STATE_FILE, json.dumps(state).encode(), fsync=False)


def _move_to_done(p: Producer, f: policy.ProducerFile, bad: bool) -> str:
    folder = p.done / policy.done_subdir(f.run)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (f.name + ("_d" if bad else ""))
    os.replace(f.path, target)
    return str(target)


class Collector:
    """One collection cycle for one producer (``run_once``)."""

    def __init__(
        self,
        producer: Producer,
        settings: config.Settings,
        *,
        retries: int = policy.RETRIES,
        retry_wait: float = 1.0,
    ) -> None:
        self.p = producer
        self.settings = settings
        self.del_settings = producer_settings(settings, producer)
        self.retries = retries
        self.retry_wait = retry_wait

    def _delete(self, path: str, rule: str, reason: str) -> None:
        deleter.delete(path, rule=rule, reason=reason, settings=self.del_settings)

    def _upload(self, f: policy.ProducerFile) -> str | None:
        name = policy.upload_name(f.subsystem, f.run)
        source = f"{self.p.host}:{f.path}"
        for attempt in range(self.retries):
            try:
                return upload_as(
                    f.path, name, self.p.dropbox, timeout=self.settings.timeout("copy"), source=source
                )
            except (OSError, storage.StorageError) as exc:
                log.warning("upload %s failed (attempt %d/%d): %s", f.path, attempt + 1, self.retries, exc)
                if attempt + 1 < self.retries:
                    time.sleep(self.retry_wait * (attempt + 1))
        return None

    def _process(self, job: policy.CollectJob, report: CollectReport) -> bool:
        """Upload the final file, else its snapshots newest first; True when something was uploaded."""
        uploaded_any = False
        for candidate in (job.final, *job.snapshots):
            if not os.path.exists(candidate.path):
                continue
            status, reason = check_content(candidate.path)
            if status != OK:
                log.warning("%s is %s (%s): moved to done as _d", candidate.path, status, reason)
                report.bad.append(_move_to_done(self.p, candidate, bad=True))
                continue
            uploaded = self._upload(candidate)
            if uploaded is None:
                report.failed.append(candidate.path)
                return False  # keep everything in place for the next cycle
            report.uploaded.append(uploaded)
            _move_to_done(self.p, candidate, bad=False)
            uploaded_any = True
            break
        # the job is processed (uploaded, or nothing usable): the remaining snapshots are bookkeeping
        for snap in job.snapshots:
            if os.path.exists(snap.path):
                _move_to_done(self.p, snap, bad=True)
        if os.path.exists(job.final.path):  # pragma: no cover - defensive: the loop moved it
            _move_to_done(self.p, job.final, bad=True)
        return uploaded_any

    def _prune(self, run: int, subsystem: str, report: CollectReport) -> None:
        folder = self.p.done / policy.done_subdir(run)
        files = [f for f in _scan(folder) if f.done and f.key == (subsystem, run)] if folder.exists() else []
        for f in policy.done_to_delete(files):
            self._delete(f.path, "producer-keep-2", "more than two _d files for this subsystem and run")
            report.pruned.append(f.path)

    def run_once(self, now: float | None = None) -> CollectReport:
        report = CollectReport()
        if (self.p.done / STOP_FILE).exists():
            report.stopped = True
            return report
        self.p.done.mkdir(parents=True, exist_ok=True)
        state = _load_state(self.p)
        files = _scan(self.p.dir)
        busy = open_files(self.p.dir)
        finals = [f for f in files if f.is_final]
        if finals:
            state["last_seen_run"] = max(int(state.get("last_seen_run", 0)), *(f.run for f in finals))
        report.skipped_open = sorted(f.path for f in finals if os.path.realpath(f.path) in busy)
        real_busy = {f.path for f in files if os.path.realpath(f.path) in busy}
        for job in policy.plan_collect(files, real_busy):
            if self._process(job, report):
                state["last_upload"] = time.time()
            if job.final.path not in report.failed:
                self._prune(job.final.run, job.final.subsystem, report)
        self._orphans(state, now if now is not None else time.time(), real_busy, report)
        _save_state(self.p, state)
        return report

    def _orphans(self, state: dict[str, float], now: float, busy: set[str], report: CollectReport) -> None:
        files = [f for f in _scan(self.p.dir) if f.path not in busy]
        snaps = [f for f in files if not f.is_final]
        if not snaps:
            return
        done_newest: dict[tuple[str, int], float] = {}
        for run in {s.run for s in snaps}:
            folder = self.p.done / policy.done_subdir(run)
            if folder.exists():
                for f in _scan(folder):
                    done_newest[f.key] = max(done_newest.get(f.key, 0.0), f.mtime)
        decision = policy.plan_orphans(
            snaps,
            [f.path for f in files if f.is_final],
            done_newest,
            last_upload=float(state.get("last_upload", now)),
            last_seen_run=int(state.get("last_seen_run", 0)),
            now=now,
        )
        for snap in decision.remove:
            self._delete(snap.path, "producer-orphan", "a newer file of this subsystem and run is done")
            report.removed_orphans.append(snap.path)
        for path in decision.placeholders:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            report.placeholders.append(path)


# -- producer cleaner -----------------------------------------------------------------------------


@dataclass
class CleanReport:
    act: bool = False
    usage: float = 0.0
    to_free: int = 0
    freed: int = 0
    deleted: list[str] = field(default_factory=list)
    short: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _walk_files(folder: Path) -> Iterable[tuple[str, int, float]]:
    for dirpath, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            yield path, st.st_size, st.st_mtime


def clean_once(
    producer: Producer, settings: config.Settings, usage: policy.DiskUsage | None = None, catalog: Any = None
) -> CleanReport:
    """One producer-cleaner cycle; ``usage`` may be injected (tests), else statvfs of the done folder.

    Raises the alarm ``producer-disk:<host>`` when the done folder cannot free enough, clears it otherwise.
    """
    p = producer
    p.done.mkdir(parents=True, exist_ok=True)
    usage = usage or disk_usage(p.done)
    report = CleanReport(usage=usage.fraction)
    done_files: list[policy.ProducerFile] = []
    other: list[tuple[str, int]] = []
    for path, size, mtime in _walk_files(p.done):
        name = os.path.basename(path)
        if name == STATE_FILE or f"{os.sep}{STAGING}{os.sep}" in path:
            continue
        f = policy.parse(path, mtime=mtime, size=size)
        if f is not None:
            done_files.append(f)
        else:
            other.append((path, size))
    collect_names: list[tuple[str, float]] = []
    collect_dirs: list[str] = []
    if p.dir.exists():
        for dirent in os.scandir(p.dir):
            if dirent.is_dir(follow_symlinks=False):
                collect_dirs.append(dirent.path)
            else:
                collect_names.append((dirent.path, dirent.stat(follow_symlinks=False).st_mtime))
    busy = open_files(p.dir)
    plan = policy.plan_clean(
        usage,
        done_files,
        collect_names=collect_names,
        collect_dirs=collect_dirs,
        open_paths={path for path, _ in collect_names if os.path.realpath(path) in busy},
        other_done=other,
    )
    report.act, report.to_free, report.short = plan.act, plan.to_free, plan.short
    if not plan.act:
        _alarm(settings, catalog, p, None)
        return report
    del_settings = producer_settings(settings, p)
    sizes = {f.path: f.size for f in done_files} | dict(other)
    targets = list(plan.delete)
    for entry in plan.collect_delete:
        if os.path.isdir(entry) and not os.path.islink(entry):
            targets.extend(path for path, _size, _mtime in _walk_files(Path(entry)))
        else:
            targets.append(entry)
    for path in targets:
        try:
            deleter.delete(
                path,
                rule="producer-cleaner",
                reason=plan.reasons.get(path, "collect folder cleanup"),
                settings=del_settings,
                catalog=catalog,
            )
            report.deleted.append(path)
            report.freed += sizes.get(path, 0)
        except (OSError, deleter.DeletionRefused) as exc:
            report.errors.append(f"{path}: {exc}")
    _remove_empty_dirs(p.done)
    for entry in plan.collect_delete:
        if os.path.isdir(entry):
            _remove_empty_dirs(Path(entry), keep_top=False)
    _alarm(settings, catalog, p, plan)
    return report


def _remove_empty_dirs(top: Path, keep_top: bool = True) -> None:
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        if keep_top and Path(dirpath) == top:
            continue
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _alarm(settings: config.Settings, catalog: Any, p: Producer, plan: policy.CleanPlan | None) -> None:
    from t0dqm.catalog import alarms
    from t0dqm.catalog.db import get_catalog

    catalog = catalog or get_catalog(settings.catalog_url)
    key = f"producer-disk:{p.host}:{p.done}"
    if plan is not None and plan.short:
        alarms.raise_alarm(
            catalog,
            key,
            f"{p.host}: {p.done} does not hold enough files to bring disk use down "
            f"to 50 % (need {plan.to_free} bytes, done files hold {plan.freed})",
            severity="critical",
        )
    else:
        alarms.clear_alarm(catalog, key)


# -- steps (the tasks of t0dqm.tasks.collect call these, on the producer host) ---------------------------


def collect(ctx: Context, host: str) -> Outcome:
    """One collection cycle for every producer of ``host`` (single runner per producer via a lease)."""
    out: dict[str, Any] = {}
    for producer in producers(ctx.settings, host):
        try:
            with ctx.lease(f"collect:{producer.key}", 900):
                report = Collector(producer, ctx.settings).run_once()
        except LeaseBusy:
            out[str(producer.dir)] = "busy"
            continue
        if report.uploaded or report.bad or report.failed or report.placeholders:
            ctx.log("collected", producer=str(producer.dir), **report.as_dict())
        out[str(producer.dir)] = report.as_dict()
    ctx.catalog.acquire_lease(f"heartbeat:collect:{host}", host, 86400)  # health: collector alive
    return Outcome(out)


def clean_producer(ctx: Context, host: str) -> Outcome:
    """Producer disk cleaner for every producer of ``host``: >= 90 % use -> done files down to 50 %."""
    out: dict[str, Any] = {}
    for producer in producers(ctx.settings, host):
        try:
            with ctx.lease(f"clean-producer:{producer.key}", 1800):
                report = clean_once(producer, ctx.settings, catalog=ctx.catalog)
        except LeaseBusy:
            out[str(producer.dir)] = "busy"
            continue
        if report.act:
            ctx.log("producer-clean", producer=str(producer.dir), **report.as_dict())
        out[str(producer.dir)] = report.as_dict()
    return Outcome(out)
