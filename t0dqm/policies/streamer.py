"""Tier-0 streamer cleanup policy (reference 004, "Streamer file deletion"). Pure: no I/O.

- TransferTest and TransferTestWithSafety: every file whose mtime is more than ``transfertest_days``
  before now is deleted, whatever the quota (reported per (label, stream, run)).
- Data and Minidaq: units (label, stream, run) with their files, bytes and newest mtime. Runs in the skip
  list are never deleted but their bytes count. total = bytes of every streamer file in the dump that
  remains after the TransferTest rule. While total > quota, walk units by run, then stream, then label,
  and delete a unit whose newest mtime is more than ``age_days`` before now ("age", checked first, no
  service call) or for which run_stream_done is true ("done"); stop as soon as total <= quota. A unit
  that is not eligible is passed over.

Times are (seconds, nanoseconds) pairs of integers, as in the EOS dump; "older than" is strict.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

Mtime = tuple[int, int]
DAY = 86400
TRANSFERTEST_LABELS = frozenset({"TransferTest", "TransferTestWithSafety"})
DELETABLE_LABELS = frozenset({"Data", "Minidaq"})
DEFAULT_QUOTA_BYTES = 750 * 10**12
RULES = ("transfertest-age", "done", "age")


@dataclass(frozen=True)
class UnitStats:
    """Aggregate of one (label, stream, run) folder.

    ``old_*`` describe the files strictly older than the TransferTest cutoff; they are only filled
    for TransferTest labels (the dump reader splits those folders per file).
    """

    label: str
    stream: str
    run: int
    files: int
    bytes: int
    newest_mtime: Mtime
    old_files: int = 0
    old_bytes: int = 0
    old_newest_mtime: Mtime | None = None


@dataclass(frozen=True)
class Deletion:
    label: str
    stream: str
    run: int
    files: int
    bytes: int
    newest_mtime: Mtime
    rule: str

    def as_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "stream": self.stream,
            "run": self.run,
            "files": self.files,
            "bytes": self.bytes,
            "newest_mtime": format_mtime(self.newest_mtime),
            "rule": self.rule,
        }


@dataclass(frozen=True)
class StreamerPlan:
    total_bytes: int
    quota_bytes: int
    after_bytes: int
    delete: tuple[Deletion, ...]
    skipped_runs_bytes: int = 0
    not_eligible_units: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "total_bytes": self.total_bytes,
            "quota_bytes": self.quota_bytes,
            "after_bytes": self.after_bytes,
            "delete": [d.as_dict() for d in self.delete],
        }


def format_mtime(mtime: Mtime) -> str:
    """``s.nnnnnnnnn`` (nanoseconds zero-padded), exact."""
    return f"{mtime[0]}.{mtime[1]:09d}"


def as_mtime(now: float | int | Mtime) -> Mtime:
    """Normalise a time (epoch int/float or (s, ns)) to (s, ns)."""
    if isinstance(now, tuple):
        return (int(now[0]), int(now[1]))
    if isinstance(now, int):
        return (now, 0)
    ns = round(now * 1e9)
    return (ns // 10**9, ns % 10**9)


def cutoff(now: float | int | Mtime, seconds: int) -> Mtime:
    """Time ``seconds`` before now: an mtime strictly below it is "more than seconds before now"."""
    s, ns = as_mtime(now)
    return (s - int(seconds), ns)


def older_than(mtime: Mtime, now: float | int | Mtime, seconds: int) -> bool:
    """Strict: now - mtime > seconds."""
    return tuple(mtime) < cutoff(now, seconds)


def transfertest_cutoff(now: float | int | Mtime, days: int = 7) -> Mtime:
    return cutoff(now, days * DAY)


def walk_order(unit: UnitStats) -> tuple[int, str, str]:
    """Ascending run, ties by stream name then label."""
    return (unit.run, unit.stream, unit.label)


def plan_streamer_cleanup(
    units: Iterable[UnitStats],
    *,
    now: float | int | Mtime,
    quota_bytes: int = DEFAULT_QUOTA_BYTES,
    done: Callable[[int, str], bool] | None = None,
    skip_runs: Iterable[int] = (),
    other_bytes: int = 0,
    transfertest_days: int = 7,
    age_days: int = 365,
) -> StreamerPlan:
    """Decide which units to delete.

    ``other_bytes``: streamer-area bytes outside any unit folder (they count, never deleted).
    ``done(run, stream)`` is asked only for units walked while over quota that the age rule does not
    already cover; None means no unit is done.
    """
    units = list(units)
    skip = frozenset(int(r) for r in skip_runs)
    tt_cut = transfertest_cutoff(now, transfertest_days)
    age_cut = cutoff(now, age_days * DAY)
    deletions: list[Deletion] = []
    total = int(other_bytes)
    for u in sorted((u for u in units if u.label in TRANSFERTEST_LABELS), key=walk_order):
        total += u.bytes
        if u.old_files:
            if u.old_newest_mtime is None or tuple(u.old_newest_mtime) >= tt_cut:
                raise ValueError(f"unit {u.label}/{u.stream}/{u.run}: old part is not older than the cutoff")
            deletions.append(
                Deletion(
                    u.label,
                    u.stream,
                    u.run,
                    u.old_files,
                    u.old_bytes,
                    cast(Mtime, tuple(u.old_newest_mtime)),
                    "transfertest-age",
                )
            )
            total -= u.old_bytes
    candidates = []
    skipped_bytes = 0
    for u in units:
        if u.label in TRANSFERTEST_LABELS:
            continue
        total += u.bytes
        if u.label not in DELETABLE_LABELS:
            continue
        if u.run in skip:
            skipped_bytes += u.bytes
            continue
        candidates.append(u)
    total_after_tt = total
    not_eligible = 0
    if total > quota_bytes:
        for u in sorted(candidates, key=walk_order):
            if total <= quota_bytes:
                break
            if tuple(u.newest_mtime) < age_cut:
                rule = "age"
            elif done is not None and done(u.run, u.stream):
                rule = "done"
            else:
                not_eligible += 1
                continue
            deletions.append(
                Deletion(u.label, u.stream, u.run, u.files, u.bytes, cast(Mtime, tuple(u.newest_mtime)), rule)
            )
            total -= u.bytes
    return StreamerPlan(
        total_bytes=total_after_tt,
        quota_bytes=int(quota_bytes),
        after_bytes=total,
        delete=tuple(deletions),
        skipped_runs_bytes=skipped_bytes,
        not_eligible_units=not_eligible,
    )


def walk_candidates(units: Iterable[UnitStats], skip_runs: Iterable[int] = ()) -> list[UnitStats]:
    """Units the quota walk may consider, in walk order (for prefetching run_stream_done)."""
    skip = frozenset(int(r) for r in skip_runs)
    return sorted((u for u in units if u.label in DELETABLE_LABELS and u.run not in skip), key=walk_order)
