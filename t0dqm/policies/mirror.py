"""Partial mirror (the AFS sync) decisions (pure): which repository files a size-limited copy holds.

Rules (reference/NOTES.md, AfsSync): every configured folder has a quota; folders without one share
the remainder of the total evenly; 1 % of each quota is kept free as a safety margin. Within a folder
only the highest version per run and subsystem/dataset is a candidate, and candidates are taken newest
first (file mtime) while they fit; the first one that does not fit ends the folder's selection, so the
mirror always holds a contiguous "newest" slice. Destination files that are not selected are deleted;
selected files missing at the destination or differing in size or mtime are copied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from t0dqm.formats import naming

SAFETY = 0.01


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative, "/"-separated
    size: int
    mtime: float


@dataclass(frozen=True)
class MirrorPlan:
    selected: tuple[str, ...] = ()
    copy: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    quotas: dict[str, int] = field(default_factory=dict)
    used: dict[str, int] = field(default_factory=dict)


def folder_quotas(
    folders: Mapping[str, int | None], total: int | None, safety: float = SAFETY
) -> dict[str, int]:
    """Effective quota per folder: explicit quotas as given, the remainder of ``total`` shared evenly
    by the folders without one; every quota reduced by ``safety``. Raises ValueError when a folder has
    no quota and no total is given."""
    explicit = {k: int(v) for k, v in folders.items() if v is not None}
    open_folders = sorted(k for k, v in folders.items() if v is None)
    out = dict(explicit)
    if open_folders:
        if total is None:
            raise ValueError(f"folders {open_folders} have no quota and no total quota is set")
        remainder = max(0, int(total) - sum(explicit.values()))
        share = remainder // len(open_folders)
        for k in open_folders:
            out[k] = share
    return {k: int(v * (1.0 - safety)) for k, v in out.items()}


def folder_of(path: str, folders: Iterable[str]) -> str | None:
    """The configured folder (a path prefix) holding ``path``; the longest match wins."""
    best = None
    for folder in folders:
        prefix = folder.strip("/")
        if (path == prefix or path.startswith(prefix + "/")) and (
            best is None or len(prefix) > len(best.strip("/"))
        ):
            best = folder
    return best


def newest_versions(files: Iterable[FileInfo]) -> list[FileInfo]:
    """Only the highest version per (run, dataset, subsystem); names that do not classify are dropped."""
    best: dict[tuple[object, ...], tuple[int, FileInfo]] = {}
    for f in files:
        try:
            info = naming.classify(f.path, require_v1=False)
        except naming.InvalidName:
            continue
        key = info.sample_key
        current = best.get(key)
        if (
            current is None
            or info.version > current[0]
            or (info.version == current[0] and f.mtime > current[1].mtime)
        ):
            best[key] = (info.version, f)
    return [f for _, f in best.values()]


def plan_mirror(
    source: Iterable[FileInfo],
    dest: Iterable[FileInfo],
    folders: Mapping[str, int | None],
    total: int | None = None,
    safety: float = SAFETY,
) -> MirrorPlan:
    """Decide what the mirror holds, what to copy and what to delete (see module doc)."""
    quotas = folder_quotas(folders, total, safety)
    by_folder: dict[str, list[FileInfo]] = {k: [] for k in folders}
    for f in source:
        folder = folder_of(f.path, folders)
        if folder is not None:
            by_folder[folder].append(f)
    selected: dict[str, FileInfo] = {}
    used: dict[str, int] = {}
    for folder in sorted(by_folder):
        room = quotas[folder]
        total_used = 0
        for f in sorted(newest_versions(by_folder[folder]), key=lambda x: (-x.mtime, x.path)):
            if total_used + f.size > room:
                break
            selected[f.path] = f
            total_used += f.size
        used[folder] = total_used
    dest_map = {f.path: f for f in dest}
    copy = [
        p
        for p, f in sorted(selected.items())
        if p not in dest_map or dest_map[p].size != f.size or int(dest_map[p].mtime) != int(f.mtime)
    ]
    delete = sorted(p for p in dest_map if p not in selected)
    return MirrorPlan(
        selected=tuple(sorted(selected)), copy=tuple(copy), delete=tuple(delete), quotas=quotas, used=used
    )


# -- online sync ----------------------------------------------------------------------------------

SKIP_ARCHIVED = "skip-archived"
DOWNLOAD = "download"
UP_TO_DATE = "up-to-date"


def online_sync_action(
    local: FileInfo | None, remote_size: int | None, remote_mtime: float | None, info_exists: bool
) -> str:
    """What the online sync does with one remote file.

    Missing locally: ``download``, unless its ``.dqminfo`` exists (the file was archived and removed:
    ``skip-archived``). Present: ``download`` when the size or the whole-second mtime differs (an unknown
    remote value counts as equal), else ``up-to-date``.
    """
    if local is None:
        return SKIP_ARCHIVED if info_exists else DOWNLOAD
    if remote_size is not None and local.size != remote_size:
        return DOWNLOAD
    if remote_mtime is not None and int(local.mtime) != int(remote_mtime):
        return DOWNLOAD
    return UP_TO_DATE
