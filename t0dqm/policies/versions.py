"""Version control of repository ROOT files (visDQMRootFileVersionControlDaemon). Pure.

Files with the same (run, dataset, subsystem) are versions of one sample. The highest version is kept.
An older version's ROOT file may be deleted only when its archive is verified on tape (``archived``;
the task computes it from the archive state, see ``states.archive_safe_states``). This is stricter than
the original, which only required the file to be zipped. Only the ROOT file goes: the .dqminfo and the
catalog row stay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

RULE = "version-control"

KEEP = "keep"  # newest version
DELETE = "delete"  # superseded and archived: delete the ROOT file
WAIT = "wait"  # superseded, archive not verified yet: try again later


@dataclass(frozen=True)
class VersionedFile:
    """Facts about one repository file."""

    path: str
    run: int
    dataset: str
    subsystem: str | None
    version: int
    archived: bool = False  # its archive is verified on tape (safe to delete locally)
    present: bool = True  # the ROOT file is still on disk
    size: int = 0
    file_id: int | None = None  # catalog id, passed through

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.run, self.dataset, self.subsystem or "")


@dataclass(frozen=True)
class VersionDecision:
    file: VersionedFile
    action: str  # KEEP | DELETE | WAIT
    rule: str
    reason: str

    @property
    def delete(self) -> bool:
        return self.action == DELETE


def newest_versions(files: Iterable[VersionedFile]) -> dict[tuple[int, str, str], int]:
    """Highest known version per sample key (present or not: a removed newer version still supersedes)."""
    newest: dict[tuple[int, str, str], int] = {}
    for f in files:
        if f.version > newest.get(f.key, 0):
            newest[f.key] = f.version
    return newest


def is_newest(file: VersionedFile, files: Iterable[VersionedFile]) -> bool:
    """True when no known file of the same sample has a higher version (used by the offline import)."""
    return newest_versions([file, *files])[file.key] == file.version


def decide(file: VersionedFile, newest: int) -> VersionDecision:
    if file.version >= newest:
        return VersionDecision(file, KEEP, RULE, f"newest version V{file.version:04d}")
    if file.archived:
        return VersionDecision(file, DELETE, RULE, f"superseded by V{newest:04d}; archive verified on tape")
    return VersionDecision(
        file, WAIT, RULE, f"superseded by V{newest:04d}; kept until its archive is verified on tape"
    )


def plan_versions(files: Iterable[VersionedFile]) -> tuple[VersionDecision, ...]:
    """One decision per file whose ROOT file is still present, ordered by (run, dataset, subsystem, version).

    Files already removed get no decision (nothing to do).
    """
    files = list(files)
    newest = newest_versions(files)
    present = sorted((f for f in files if f.present), key=lambda f: (f.key, f.version, f.path))
    return tuple(decide(f, newest[f.key]) for f in present)


def deletions(files: Iterable[VersionedFile]) -> tuple[VersionDecision, ...]:
    """Only the DELETE decisions of :func:`plan_versions`."""
    return tuple(d for d in plan_versions(files) if d.action == DELETE)
