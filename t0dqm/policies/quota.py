"""Per-class disk quota of repository ROOT files (visDQMRootFileQuotaControl). Pure.

A class whose present ROOT files use more than its quota loses its oldest files (by file time) until
usage is at most ``fraction`` (95 %) of the quota. Only files whose archive is verified on tape may go
(the original did not check; we do): unarchived files are skipped and newer archived ones are taken
instead. When even that cannot reach the target, the plan reports the ``shortfall`` (bytes still above
the target) and ``alarm`` is set so the task raises an alarm rather than deleting anything unsafe.
Only the ROOT file is deleted: the .dqminfo, the catalog row and the index entry stay.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RULE = "quota"
DEFAULT_FRACTION = 0.95


@dataclass(frozen=True)
class QuotaFile:
    path: str
    cls: str
    size: int
    mtime: float  # file time (the .dqminfo "time"), oldest goes first
    archived: bool = False  # its archive is verified on tape
    present: bool = True  # the ROOT file is still on disk
    file_id: int | None = None


@dataclass(frozen=True)
class QuotaDeletion:
    file: QuotaFile
    rule: str
    reason: str


@dataclass(frozen=True)
class QuotaPlan:
    cls: str
    quota: int
    used: int  # bytes of present files before the plan
    target: int  # usage to reach when over quota (fraction x quota)
    deletions: tuple[QuotaDeletion, ...]
    blocked: tuple[QuotaFile, ...]  # would have been deleted (oldest) but their archive is not verified
    after: int  # usage once the deletions are done

    @property
    def over_quota(self) -> bool:
        return self.used > self.quota

    @property
    def freed(self) -> int:
        return self.used - self.after

    @property
    def shortfall(self) -> int:
        """Bytes still above the target after every allowed deletion (0 when the target is met)."""
        return max(0, self.after - self.target) if self.over_quota else 0

    @property
    def alarm(self) -> bool:
        """The quota cannot be met because files are not yet archived: raise an alarm."""
        return self.shortfall > 0


def excess(used: int, quota: int, fraction: float = DEFAULT_FRACTION) -> int:
    """Bytes to free: down to ``fraction`` x quota once usage is above the quota, else 0."""
    return used - int(quota * fraction) if used > quota else 0


def plan_class(
    cls: str,
    files: Iterable[QuotaFile],
    quota: int,
    fraction: float = DEFAULT_FRACTION,
    used: int | None = None,
) -> QuotaPlan:
    """Plan for one class; files of other classes and absent files are ignored.

    ``used``: the class's usage when ``files`` are only its oldest present files (the catalog walks
    them oldest first and stops once :func:`excess` bytes of archived files are in hand); by default
    ``files`` are all of them and usage is their sum.
    """
    if quota <= 0:
        raise ValueError(f"quota for {cls} must be positive, got {quota}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    mine = sorted((f for f in files if f.cls == cls and f.present), key=lambda f: (f.mtime, f.path))
    if used is None:
        used = sum(f.size for f in mine)
    target = int(quota * fraction)
    if used <= quota:
        return QuotaPlan(cls, quota, used, target, (), (), used)
    after = used
    chosen: list[QuotaDeletion] = []
    blocked: list[QuotaFile] = []
    for f in mine:
        if after <= target:
            break
        if not f.archived:
            blocked.append(f)
            continue
        after -= f.size
        chosen.append(
            QuotaDeletion(
                f, RULE, f"{cls} uses {used} bytes > quota {quota}; oldest archived file, down to {target}"
            )
        )
    return QuotaPlan(cls, quota, used, target, tuple(chosen), tuple(blocked), after)


def plan_quota(
    files: Iterable[QuotaFile], quotas: Mapping[str, int], fraction: float = DEFAULT_FRACTION
) -> dict[str, QuotaPlan]:
    """Plans for every class with a quota (classes without one are never touched)."""
    files = list(files)
    return {cls: plan_class(cls, files, quota, fraction) for cls, quota in sorted(quotas.items())}
