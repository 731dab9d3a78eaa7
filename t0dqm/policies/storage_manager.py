"""Storage Manager policies for the P5 copy of streamer files (reference 004, "Storage Manager"). Pure.

Occupancy rule (mode "occupancy"):
- not yet checked by Tier-0: never deleted;
- checked and repacked: deletable (rule "repacked");
- checked, not repacked: deletable when older than 3 days at occupancy >= 40 %, 2 days >= 50 %,
  1 day >= 60 %, 12 h >= 70 %, 6 h >= 80 %, 3 h >= 90 % (rule "occupancy"); below 40 % kept.

Age cleanup (mode "age", twice a day, regardless of status, per run; a run's age is that of its newest
file): occupancy < 30 % -> runs older than 30 days; 30 % <= occupancy < 40 % -> 15 days (12 days for a
run taken with the Tier0_Off flag); >= 40 % -> 7 days (rule "run-age"). Unchecked files deleted this way
are flagged and the plan raises an alarm.

"Older than" is strict: now - mtime > limit. Occupancy is a fraction in [0, 1].
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HOUR = 3600
DAY = 86400
# (minimum occupancy, age limit in seconds), highest occupancy first.
OCCUPANCY_TIERS: tuple[tuple[float, int], ...] = (
    (0.90, 3 * HOUR),
    (0.80, 6 * HOUR),
    (0.70, 12 * HOUR),
    (0.60, 1 * DAY),
    (0.50, 2 * DAY),
    (0.40, 3 * DAY),
)
MODES = ("occupancy", "age")


@dataclass(frozen=True)
class SMFile:
    path: str
    run: int
    size: int
    mtime: float
    checked: bool
    repacked: bool
    tier0_off: bool = False


@dataclass(frozen=True)
class SMDeletion:
    path: str
    rule: str
    unchecked: bool
    size: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "rule": self.rule, "unchecked": self.unchecked}


@dataclass(frozen=True)
class SMPlan:
    delete: tuple[SMDeletion, ...]
    bytes: int
    mode: str
    limit_seconds: int | None

    @property
    def alarm(self) -> bool:
        """True when unchecked files are to be deleted (age cleanup)."""
        return any(d.unchecked for d in self.delete)

    def as_dict(self) -> dict[str, object]:
        return {"delete": [d.as_dict() for d in self.delete], "bytes": self.bytes}


def _check_occupancy(occupancy: float) -> float:
    occupancy = float(occupancy)
    if not 0.0 <= occupancy <= 1.0:
        raise ValueError(f"occupancy must be a fraction in [0, 1], got {occupancy}")
    return occupancy


def occupancy_age_limit(occupancy: float) -> int | None:
    """Age limit in seconds for checked, not repacked files; None below 40 %."""
    occupancy = _check_occupancy(occupancy)
    for threshold, limit in OCCUPANCY_TIERS:
        if occupancy >= threshold:
            return limit
    return None


def run_age_limit(occupancy: float, tier0_off: bool = False) -> int:
    """Age limit in seconds for the twice-daily run cleanup."""
    occupancy = _check_occupancy(occupancy)
    if occupancy < 0.30:
        return 30 * DAY
    if occupancy < 0.40:
        return 12 * DAY if tier0_off else 15 * DAY
    return 7 * DAY


def _older(mtime: float, now: float, limit: int) -> bool:
    return now - mtime > limit


def _plan(deletions: list[SMDeletion], mode: str, limit: int | None) -> SMPlan:
    deletions.sort(key=lambda d: d.path)
    return SMPlan(
        delete=tuple(deletions), bytes=sum(d.size for d in deletions), mode=mode, limit_seconds=limit
    )


def plan_occupancy(files: Iterable[SMFile], occupancy: float, now: float) -> SMPlan:
    """Occupancy-tiered cleanup."""
    limit = occupancy_age_limit(occupancy)
    out: list[SMDeletion] = []
    for f in files:
        if not f.checked:
            continue
        if f.repacked:
            out.append(SMDeletion(f.path, "repacked", False, f.size))
        elif limit is not None and _older(f.mtime, now, limit):
            out.append(SMDeletion(f.path, "occupancy", False, f.size))
    return _plan(out, "occupancy", limit)


def plan_age(files: Iterable[SMFile], occupancy: float, now: float) -> SMPlan:
    """Twice-daily age cleanup by run, regardless of status."""
    _check_occupancy(occupancy)
    runs: dict[int, list[SMFile]] = {}
    for f in files:
        runs.setdefault(f.run, []).append(f)
    out: list[SMDeletion] = []
    for run_files in runs.values():
        newest = max(f.mtime for f in run_files)
        tier0_off = any(f.tier0_off for f in run_files)
        if _older(newest, now, run_age_limit(occupancy, tier0_off)):
            out.extend(SMDeletion(f.path, "run-age", not f.checked, f.size) for f in run_files)
    return _plan(out, "age", run_age_limit(occupancy))


def plan(files: Iterable[SMFile], occupancy: float, now: float, mode: str = "occupancy") -> SMPlan:
    if mode == "occupancy":
        return plan_occupancy(files, occupancy, now)
    if mode == "age":
        return plan_age(files, occupancy, now)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
