"""Tier-0 disk retention (reference 004, "Data Subscription"). Pure.

Output at T0_CH_CERN_Disk stays at least ``min_days`` (7) days, and is deleted as soon as it has reached
all its endpoints and no processing needs it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

DAY = 86400


@dataclass(frozen=True)
class T0Output:
    name: str
    created: float
    endpoints: frozenset[str]
    transferred_to: frozenset[str]
    needed_by_processing: bool = False
    size: int = 0


@dataclass(frozen=True)
class RetentionDecision:
    name: str
    delete: bool
    reason: str


def decide(output: T0Output, now: float, min_days: int = 7) -> RetentionDecision:
    """Keep or delete one output; the reason names the first unmet condition (or "released")."""
    if now - output.created < min_days * DAY:
        return RetentionDecision(output.name, False, "minimum-age")
    missing = output.endpoints - output.transferred_to
    if missing:
        return RetentionDecision(output.name, False, "not-at-endpoints:" + ",".join(sorted(missing)))
    if not output.endpoints:
        return RetentionDecision(output.name, False, "no-endpoints")
    if output.needed_by_processing:
        return RetentionDecision(output.name, False, "needed-by-processing")
    return RetentionDecision(output.name, True, "released")


def plan_retention(
    outputs: Iterable[T0Output], now: float, min_days: int = 7
) -> tuple[RetentionDecision, ...]:
    """Decisions for every output that may be deleted now, sorted by name."""
    return tuple(
        sorted((d for d in (decide(o, now, min_days) for o in outputs) if d.delete), key=lambda d: d.name)
    )
