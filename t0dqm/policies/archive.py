"""Archive decisions (pure): which zip serial takes a file, what to freeze, when to retry a stage or
verify, what a verification means, and how to summarise failures in one alarm.

Facts come in as plain data (no I/O here); the steps in t0dqm.steps.archive and t0dqm.steps.tape
gather them and apply the decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from t0dqm.catalog import states

FIRST_SERIAL = 1

# Bytes a member costs beyond its data: local header (30) + central directory entry (46), each with the
# name, plus room for a zip64 extra field. An upper bound, so a zip never exceeds max_zip_bytes.
MEMBER_FIXED_OVERHEAD = 30 + 46 + 2 * 32
END_RECORD_BYTES = 22 + 56 + 20  # end of central directory, zip64 end record and locator


def member_overhead(name: str) -> int:
    """Upper bound of the bytes one member adds to a zip besides its data."""
    return MEMBER_FIXED_OVERHEAD + 2 * len(name.encode())


@dataclass(frozen=True)
class SerialFacts:
    """What the zip step knows about one serial of a pattern."""

    serial: int
    state: str  # archive state (states.OPEN, ...)
    size: int  # current zip size in bytes (catalog)
    nfiles: int
    readable: bool = True  # the local zip exists and can be read (irrelevant while empty)
    has_name: bool = False  # a member of this name is already in this zip


def choose_serial(serials: Iterable[SerialFacts], file_size: int, name: str, max_zip_bytes: int) -> int:
    """The serial a file goes to: the first open serial that is not frozen, whose zip exists and is
    readable, and that is empty or still has room (zip + file <= max_zip_bytes); else the next serial."""
    known = sorted(serials, key=lambda s: s.serial)
    need = file_size + member_overhead(name)
    for facts in known:
        if facts.state != states.OPEN or facts.has_name:
            continue
        if facts.nfiles == 0:
            return facts.serial
        if not facts.readable:
            continue
        if facts.size + need + END_RECORD_BYTES <= max_zip_bytes:
            return facts.serial
    return (known[-1].serial + 1) if known else FIRST_SERIAL


def zip_path(pattern: str, serial: int) -> str:
    """The zip path (relative to the zip root) of a pattern's serial."""
    return pattern % serial


@dataclass(frozen=True)
class ArchiveFacts:
    """What the freeze step knows about one archive."""

    id: int
    pattern: str
    serial: int
    state: str
    size: int
    nfiles: int
    first_write: float | None


@dataclass(frozen=True)
class FreezeDecision:
    archive_id: int
    reason: str  # "superseded", "age" or "full"


def is_full(size: int, max_zip_bytes: int, min_member_bytes: int = MEMBER_FIXED_OVERHEAD) -> bool:
    """No further member (even an empty one) would fit."""
    return size + min_member_bytes + END_RECORD_BYTES > max_zip_bytes


def freeze_decisions(
    archives: Iterable[ArchiveFacts], now: float, freeze_age: float, max_zip_bytes: int
) -> list[FreezeDecision]:
    """Every open serial but the newest of its pattern freezes at once; the newest when its first write
    is at least ``freeze_age`` old, or when it is full. Empty archives are never frozen (they are
    reused by the next file of the pattern)."""
    by_pattern: dict[str, list[ArchiveFacts]] = {}
    for facts in archives:
        by_pattern.setdefault(facts.pattern, []).append(facts)
    out: list[FreezeDecision] = []
    for group in by_pattern.values():
        newest = max(f.serial for f in group)
        for facts in sorted(group, key=lambda f: f.serial):
            if facts.state != states.OPEN or facts.nfiles == 0:
                continue
            if facts.serial != newest:
                out.append(FreezeDecision(facts.id, "superseded"))
            elif is_full(facts.size, max_zip_bytes):
                out.append(FreezeDecision(facts.id, "full"))
            elif facts.first_write is not None and now - facts.first_write >= freeze_age:
                out.append(FreezeDecision(facts.id, "age"))
    return out


@dataclass(frozen=True)
class RetryDecision:
    give_up: bool
    tries: int  # attempts made so far, including the one that just failed
    next_try_at: float | None  # None when giving up


def backoff_delay(tries: int, base: float, cap: float | None = None) -> float:
    """Growing back-off on triangular numbers (1, 3, 6, 10, 15 x base), as the original stager."""
    delay = base * tries * (tries + 1) / 2
    return min(delay, cap) if cap is not None else delay


def retry_decision(
    tries_before: int, now: float, max_tries: int, base: float, cap: float | None = None
) -> RetryDecision:
    """After a failed attempt: when to try again, or give up once ``max_tries`` attempts failed."""
    tries = tries_before + 1
    if tries >= max_tries:
        return RetryDecision(True, tries, None)
    return RetryDecision(False, tries, now + backoff_delay(tries, base, cap))


def verify_due(copied_at: float | None, next_try_at: float | None, now: float, verify_delay: float) -> bool:
    """A copied archive is checked once ``verify_delay`` has passed since the copy, and then only
    when its scheduled retry (if any) is due."""
    if copied_at is None or now < copied_at + verify_delay:
        return False
    return next_try_at is None or next_try_at <= now


@dataclass(frozen=True)
class RemoteFacts:
    """What the endpoint says about the archive's copy."""

    size: int
    adler32: str | None
    on_tape: bool | None  # None: the endpoint does not report it


@dataclass(frozen=True)
class VerifyDecision:
    new_state: str
    restage: bool  # remove the remote copy and copy again
    final: bool  # nothing more to check
    reason: str


def verify_decision(
    expected_size: int, expected_adler32: str, remote: RemoteFacts | None, require_tape: bool
) -> VerifyDecision:
    """Judge the endpoint's copy: missing or different -> re-stage; matching -> verified, or on_tape
    when the endpoint reports a tape copy. Without ``require_tape`` a verified archive is final."""
    if remote is None:
        return VerifyDecision(states.FROZEN, True, False, "missing at the endpoint")
    if remote.size != expected_size:
        return VerifyDecision(
            states.FROZEN, True, False, f"size at the endpoint {remote.size} != {expected_size}"
        )
    if remote.adler32 is None or remote.adler32.lower().lstrip("0") != expected_adler32.lower().lstrip("0"):
        return VerifyDecision(
            states.FROZEN, True, False, f"adler32 at the endpoint {remote.adler32} != {expected_adler32}"
        )
    if remote.on_tape:
        return VerifyDecision(states.ON_TAPE, False, True, "on tape")
    if require_tape:
        return VerifyDecision(states.VERIFIED, False, False, "verified, waiting for the tape copy")
    return VerifyDecision(states.VERIFIED, False, True, "verified")


@dataclass(frozen=True)
class Trouble:
    """An archive that needs attention."""

    path: str
    state: str
    tries: int
    reason: str | None


def summarise(troubles: Sequence[Trouble], max_listed: int = 5) -> str | None:
    """One message for every archive in trouble (None when there is none): counts per state and the
    first few paths with their reasons."""
    if not troubles:
        return None
    counts: dict[str, int] = {}
    for t in troubles:
        counts[t.state] = counts.get(t.state, 0) + 1
    head = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    listed = sorted(troubles, key=lambda t: (t.state, t.path))[:max_listed]
    lines = [f"{len(troubles)} archive(s) need attention ({head})"]
    lines += [f"- {t.path} [{t.state}, {t.tries} tries]: {t.reason or 'no reason recorded'}" for t in listed]
    if len(troubles) > max_listed:
        lines.append(f"... and {len(troubles) - max_listed} more")
    return "\n".join(lines)


def backups_to_drop(names: Iterable[str], keep: int) -> list[str]:
    """Dated backup folders (YYYYMMDD...) beyond the newest ``keep``, oldest first."""
    dated = sorted(n for n in names if n[:8].isdigit())
    return dated[: max(0, len(dated) - max(keep, 1))]
