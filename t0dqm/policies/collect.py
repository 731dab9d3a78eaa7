"""Producer-host decisions (pure): what the collector uploads, keeps and deletes (fileCollector2 and
producerFileCleaner, reference/NOTES.md section 2).

* Final files ``(DQM|Playback)_V<4 digits>_<subsys>_R<9 digits>.root`` are collected when no process
  holds them open; their ``_T<8 digits>`` snapshots are the fallback, newest (highest T number) first.
* Bad files go to ``done/<run[0:3]>/<run[3:6]>/<name>_d``; two ``_d`` files are kept per subsystem and
  run (newest snapshots preferred; a bad final counts as the oldest).
* Orphan snapshots: when nothing was uploaded for 15 minutes, a snapshot of a run not newer than the
  last seen final, without a final file, gets an empty final placeholder (which then fails the content
  check and lets the snapshots be tried), unless a newer file of that subsystem and run is already done
  (then the stale snapshot is removed).
* Cleaner: acts at >= 90 % disk use, frees done files in run order until use is down to 50 %.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

RX_PRODUCER = re.compile(
    r"^(?P<prefix>DQM|Playback|Playback_full)_V(?P<version>\d{4})_(?P<subsys>[A-Za-z0-9]+)"
    r"_R(?P<run>\d{9})(?:_T(?P<snap>\d{8}))?\.root(?P<done>_d)?$"
)

KEEP_DONE = 2
ORPHAN_WAIT = 15 * 60
CLEAN_TOP = 0.90
CLEAN_BOTTOM = 0.50
RETRIES = 3


@dataclass(frozen=True)
class ProducerFile:
    """One producer output file (final, snapshot, or a ``_d`` bookkeeping copy)."""

    path: str
    name: str
    prefix: str
    version: int
    subsystem: str
    run: int
    snapshot: int | None  # the T number, None for a final file
    mtime: float = 0.0
    size: int = 0
    done: bool = False  # name ends with _d

    @property
    def is_final(self) -> bool:
        return self.snapshot is None

    @property
    def key(self) -> tuple[str, int]:
        return (self.subsystem, self.run)


def parse(path: str, mtime: float = 0.0, size: int = 0) -> ProducerFile | None:
    """Parse a producer file name (a bare name or a path); None when it is not one."""
    name = path.rsplit("/", 1)[-1]
    m = RX_PRODUCER.match(name)
    if not m:
        return None
    snap = m.group("snap")
    return ProducerFile(
        path=path,
        name=name,
        prefix=m.group("prefix"),
        version=int(m.group("version")),
        subsystem=m.group("subsys"),
        run=int(m.group("run")),
        snapshot=int(snap) if snap is not None else None,
        mtime=mtime,
        size=size,
        done=m.group("done") is not None,
    )


@dataclass(frozen=True)
class CollectJob:
    """A final file to collect and its snapshots, newest first (tried when the final is bad)."""

    final: ProducerFile
    snapshots: tuple[ProducerFile, ...] = ()


def snapshot_order(snapshots: Iterable[ProducerFile]) -> list[ProducerFile]:
    """Newest first: highest T number, then newest mtime, then name."""
    return sorted(snapshots, key=lambda f: (f.snapshot or 0, f.mtime, f.name), reverse=True)


def plan_collect(files: Iterable[ProducerFile], open_paths: Iterable[str] = ()) -> list[CollectJob]:
    """Collect jobs for every final file not held open, newest run first.

    Snapshots are matched to a final by prefix, subsystem and run; snapshots held open are left out.
    """
    busy = set(open_paths)
    finals: list[ProducerFile] = []
    snaps: dict[tuple[str, str, int], list[ProducerFile]] = {}
    for f in files:
        if f.done:
            continue
        if f.is_final:
            finals.append(f)
        elif f.path not in busy:
            snaps.setdefault((f.prefix, f.subsystem, f.run), []).append(f)
    jobs = []
    for final in sorted(finals, key=lambda f: (-f.run, f.subsystem, f.name)):
        if final.path in busy:
            continue
        jobs.append(
            CollectJob(
                final, tuple(snapshot_order(snaps.get((final.prefix, final.subsystem, final.run), [])))
            )
        )
    return jobs


def upload_name(subsystem: str, run: int) -> str:
    """The name a producer file is uploaded under (an online DQM name, version 1)."""
    return f"DQM_V0001_{subsystem}_R{run:09d}.root"


def done_subdir(run: int) -> str:
    """``<run[0:3]>/<run[3:6]>`` of the 9-digit run number."""
    digits = f"{run:09d}"
    return f"{digits[0:3]}/{digits[3:6]}"


def done_to_delete(done_files: Iterable[ProducerFile], keep: int = KEEP_DONE) -> list[ProducerFile]:
    """``_d`` files beyond the ``keep`` newest per (subsystem, run); a bad final ranks as the oldest."""
    groups: dict[tuple[str, int], list[ProducerFile]] = {}
    for f in done_files:
        if f.done:
            groups.setdefault(f.key, []).append(f)
    out: list[ProducerFile] = []
    for key in sorted(groups):
        ranked = sorted(
            groups[key],
            key=lambda f: (f.snapshot is not None, f.snapshot or 0, f.mtime, f.name),
            reverse=True,
        )
        out.extend(ranked[keep:])
    return out


@dataclass(frozen=True)
class OrphanDecision:
    """Placeholders (empty final files) to create and stale snapshots to remove."""

    placeholders: tuple[str, ...] = ()
    remove: tuple[ProducerFile, ...] = ()


def final_path_for(snapshot: ProducerFile) -> str:
    """Path of the final file a snapshot belongs to (same folder, ``_T<n>`` dropped)."""
    folder = snapshot.path[: -len(snapshot.name)]
    return f"{folder}{snapshot.prefix}_V{snapshot.version:04d}_{snapshot.subsystem}_R{snapshot.run:09d}.root"


def plan_orphans(
    snapshots: Iterable[ProducerFile],
    existing_paths: Iterable[str],
    done_newest_mtime: Mapping[tuple[str, int], float],
    *,
    last_upload: float,
    last_seen_run: int,
    now: float,
    wait: float = ORPHAN_WAIT,
) -> OrphanDecision:
    """The orphan-snapshot rule; nothing happens until ``wait`` seconds passed without an upload.

    Snapshots of runs newer than the last seen final are left alone (the run may still be going).
    """
    if now - last_upload < wait:
        return OrphanDecision()
    existing = set(existing_paths)
    placeholders: list[str] = []
    remove: list[ProducerFile] = []
    for snap in sorted(snapshots, key=lambda f: f.path):
        if snap.is_final or snap.done or snap.run > last_seen_run:
            continue
        final = final_path_for(snap)
        if final in existing or final in placeholders:
            continue
        newest_done = done_newest_mtime.get(snap.key)
        if newest_done is not None and newest_done > snap.mtime:
            remove.append(snap)
            continue
        placeholders.append(final)
    return OrphanDecision(tuple(placeholders), tuple(remove))


# -- producer cleaner -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0


@dataclass(frozen=True)
class CleanPlan:
    """What the producer cleaner does this cycle."""

    act: bool
    to_free: int = 0
    delete: tuple[str, ...] = ()
    freed: int = 0
    short: bool = False  # the done folder alone cannot bring use down to the bottom mark
    collect_delete: tuple[str, ...] = ()
    reasons: dict[str, str] = field(default_factory=dict)


def _run_order_key(f: ProducerFile) -> tuple[int, str, int, str]:
    return (f.run, f.subsystem, f.snapshot or 0, f.name)


def plan_clean(
    usage: DiskUsage,
    done_files: Iterable[ProducerFile],
    *,
    collect_names: Iterable[tuple[str, float]] = (),
    collect_dirs: Iterable[str] = (),
    open_paths: Iterable[str] = (),
    other_done: Iterable[tuple[str, int]] = (),
    top: float = CLEAN_TOP,
    bottom: float = CLEAN_BOTTOM,
) -> CleanPlan:
    """Decide the producer cleaner's deletions.

    ``done_files`` are producer files in the done folder (``other_done``: (path, size) of anything else
    there, deleted last). ``collect_names`` are (path, mtime) of the collect folder's files and
    ``collect_dirs`` its subfolders. Nothing happens below ``top``. Done files go in run order until
    ``used - freed <= bottom * total``. In the collect folder, subfolders, stray files and all ``.tmp``
    files but the newest go; final and snapshot files (not yet collected) and open files stay.
    """
    if usage.fraction < top:
        return CleanPlan(act=False)
    to_free = max(0, usage.used - int(usage.total * bottom))
    ordered = sorted(done_files, key=_run_order_key)
    candidates = [(f.path, f.size) for f in ordered] + sorted(other_done)
    available = sum(size for _, size in candidates)
    delete: list[str] = []
    reasons: dict[str, str] = {}
    freed = 0
    for path, size in candidates:
        if freed >= to_free:
            break
        delete.append(path)
        reasons[path] = "done file, disk above the high mark"
        freed += size
    busy = set(open_paths)
    collect: list[str] = []
    tmps: list[tuple[float, str]] = []
    for path, mtime in collect_names:
        if path in busy:
            continue
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".tmp"):
            tmps.append((mtime, path))
            continue
        if parse(name) is not None and not name.endswith("_d"):
            continue  # final or snapshot waiting for the collector
        collect.append(path)
        reasons[path] = "stray file in the collect folder"
    for _, path in sorted(tmps, reverse=True)[1:]:
        collect.append(path)
        reasons[path] = "old .tmp file in the collect folder"
    for d in sorted(collect_dirs):
        collect.append(d)
        reasons[d] = "subfolder in the collect folder"
    return CleanPlan(
        act=True,
        to_free=to_free,
        delete=tuple(delete),
        freed=freed,
        short=available < to_free,
        collect_delete=tuple(collect),
        reasons=reasons,
    )
