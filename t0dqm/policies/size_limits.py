"""Tier-0 file size limits (reference 004, "File Size Limitations"). Pure.

Limits are in GiB (2**30 bytes); a size equal to a limit is within it.
- RAW (repack output): > soft (16 GiB) "soft": notify Run and HLT coordination;
  > hard (24 GiB) "hard": goes to the Error dataset, no further processing.
- streamer input: > notify (30 GiB) "notify": Tier-0 operators told; > refuse (80 GiB) "refuse": not repacked.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1 << 30
KINDS = ("raw", "streamer")
VERDICTS = ("ok", "soft", "hard", "notify", "refuse")


@dataclass(frozen=True)
class SizeLimits:
    raw_soft_gib: float = 16
    raw_hard_gib: float = 24
    streamer_notify_gib: float = 30
    streamer_refuse_gib: float = 80

    def __post_init__(self) -> None:
        if not 0 < self.raw_soft_gib <= self.raw_hard_gib:
            raise ValueError("RAW limits must satisfy 0 < soft <= hard")
        if not 0 < self.streamer_notify_gib <= self.streamer_refuse_gib:
            raise ValueError("streamer limits must satisfy 0 < notify <= refuse")


DEFAULT_LIMITS = SizeLimits()


@dataclass(frozen=True)
class SizeVerdict:
    kind: str
    bytes: int
    verdict: str

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "bytes": self.bytes, "verdict": self.verdict}


def _gib(limit: float) -> int:
    return int(limit * GiB)


def raw_verdict(size: int, limits: SizeLimits = DEFAULT_LIMITS) -> str:
    if size > _gib(limits.raw_hard_gib):
        return "hard"
    if size > _gib(limits.raw_soft_gib):
        return "soft"
    return "ok"


def streamer_verdict(size: int, limits: SizeLimits = DEFAULT_LIMITS) -> str:
    if size > _gib(limits.streamer_refuse_gib):
        return "refuse"
    if size > _gib(limits.streamer_notify_gib):
        return "notify"
    return "ok"


def check(kind: str, size: int, limits: SizeLimits = DEFAULT_LIMITS) -> SizeVerdict:
    """Verdict for a file of ``size`` bytes of kind raw or streamer."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    if kind == "raw":
        return SizeVerdict(kind, size, raw_verdict(size, limits))
    if kind == "streamer":
        return SizeVerdict(kind, size, streamer_verdict(size, limits))
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
