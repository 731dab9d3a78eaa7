"""Tier-0 data placement (reference 004: "Data Distribution", "Data Subscription"). Pure.

- RAW of a primary dataset (PD) goes to the tape of the Tier-1 site the PD is assigned to; every other
  tier of the PD follows RAW to the same site. A PD with no assignment goes to the default site (FNAL).
- Every output also gets a rule to the Tier-0 disk (T0_CH_CERN_Disk), removed by retention later.
- Rules go to Tier-0 and Tier-1 sites only (no space check is made, so no other site is allowed).
- ``plan`` proposes a new assignment of the PDs in proportion to each site's free tape space, for the
  operator's periodic redistribution, and says why each PD moves.

Sites are CMS site names (``T1_US_FNAL``); the tape RSE is ``<site>_Tape``, the disk RSE ``<site>_Disk``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SITE_RE = re.compile(r"^T[01]_[A-Z]{2}_[A-Za-z0-9]+$")
RSE_RE = re.compile(r"^T[01]_[A-Z]{2}_[A-Za-z0-9]+_(Disk|Tape)$")
PD_RE = re.compile(r"^[A-Za-z0-9_]+$")
ERROR_SUFFIX = "-Error"

T0_DISK = "t0-disk"  # endpoint roles
TAPE = "tape"
DISK = "disk"


class SubscriptionError(ValueError):
    """The subscription configuration is invalid; the message names the key."""


@dataclass(frozen=True)
class Subscriptions:
    """The configured assignment: PD -> Tier-1 site, the default site, the Tier-0 disk RSE."""

    sites: Mapping[str, str] = field(default_factory=dict)
    default_site: str = "T1_US_FNAL"
    t0_disk: str = "T0_CH_CERN_Disk"
    disk_tiers: frozenset[str] = frozenset()


def from_config(cfg: Mapping[str, Any]) -> Subscriptions:
    """Subscriptions from the ``subscriptions`` configuration table; SubscriptionError when invalid."""
    default = cfg.get("default_site", "T1_US_FNAL")
    if not isinstance(default, str) or not SITE_RE.match(default):
        raise SubscriptionError(
            f"subscriptions.default_site must be a Tier-0/Tier-1 site like T1_US_FNAL, got {default!r}"
        )
    t0_disk = cfg.get("t0_disk", "T0_CH_CERN_Disk")
    if (
        not isinstance(t0_disk, str)
        or not RSE_RE.match(t0_disk)
        or not t0_disk.startswith("T0_")
        or not t0_disk.endswith("_Disk")
    ):
        raise SubscriptionError(
            f"subscriptions.t0_disk must be a Tier-0 disk RSE like T0_CH_CERN_Disk, got {t0_disk!r}"
        )
    sites = cfg.get("sites", {})
    if not isinstance(sites, Mapping):
        raise SubscriptionError('subscriptions.sites must be a table PD = "T1_XX_Site"')
    for pd, site in sites.items():
        if not PD_RE.match(str(pd)):
            raise SubscriptionError(f"subscriptions.sites: {pd!r} is not a primary dataset name")
        if not isinstance(site, str) or not SITE_RE.match(site):
            raise SubscriptionError(
                f"subscriptions.sites.{pd}: {site!r} is not a Tier-0/Tier-1 site "
                f"(rules go to Tier-0 and Tier-1 sites only)"
            )
    tiers = cfg.get("disk_tiers", [])
    if not isinstance(tiers, (list, tuple)) or not all(isinstance(t, str) and t.isupper() for t in tiers):
        raise SubscriptionError(f"subscriptions.disk_tiers must be a list of data tiers, got {tiers!r}")
    return Subscriptions(
        sites=dict(sites), default_site=default, t0_disk=t0_disk, disk_tiers=frozenset(tiers)
    )


def tape_rse(site: str) -> str:
    return f"{site}_Tape"


def disk_rse(site: str) -> str:
    return f"{site}_Disk"


def base_pd(pd: str) -> str:
    """The PD whose placement an ``<PD>-Error`` dataset (repack output over the hard limit) follows."""
    return pd.removesuffix(ERROR_SUFFIX)


@dataclass(frozen=True)
class Placement:
    pd: str
    tier: str
    site: str
    known: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "pd": self.pd,
            "tier": self.tier,
            "site": self.site,
            "known": self.known,
            "reason": self.reason,
        }


def site_for(subs: Subscriptions, pd: str, tier: str) -> Placement:
    """Where ``pd`` in ``tier`` goes: the PD's site for every tier (RAW decides), else the default site."""
    key = base_pd(pd)
    site = subs.sites.get(key)
    follows = "" if tier == "RAW" else f"; {tier} follows RAW"
    via = f" (as {key})" if key != pd else ""
    if site is not None:
        return Placement(pd, tier, site, True, f"{key} is assigned to {site}{via}{follows}")
    return Placement(
        pd,
        tier,
        subs.default_site,
        False,
        f"{key} is a new PD: default site {subs.default_site}{via}{follows}",
    )


@dataclass(frozen=True)
class Endpoint:
    rse: str
    role: str  # t0-disk, tape, disk

    def as_dict(self) -> dict[str, str]:
        return {"rse": self.rse, "role": self.role}


def endpoints(subs: Subscriptions, pd: str, tier: str) -> tuple[Placement, tuple[Endpoint, ...]]:
    """The placement and every RSE a rule is made for: the Tier-0 disk, the site's tape, its disk for
    ``disk_tiers``."""
    placement = site_for(subs, pd, tier)
    out = [Endpoint(subs.t0_disk, T0_DISK), Endpoint(tape_rse(placement.site), TAPE)]
    if tier in subs.disk_tiers:
        out.append(Endpoint(disk_rse(placement.site), DISK))
    return placement, tuple(out)


# ------------------------------------------------------------------------------------------------ plan


def _tb(n: float) -> str:
    return f"{n / 1e15:.2f} PB" if abs(n) >= 1e15 else f"{n / 1e12:.1f} TB"


@dataclass(frozen=True)
class Move:
    pd: str
    volume: int
    src: str
    dst: str
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"pd": self.pd, "volume": self.volume, "from": self.src, "to": self.dst, "reason": self.reason}


@dataclass(frozen=True)
class SiteRow:
    site: str
    free: int
    share: float
    target: float
    before: int
    after: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "free": self.free,
            "share": round(self.share, 6),
            "target": round(self.target),
            "before": self.before,
            "after": self.after,
            "fits": self.after <= self.free,
        }


@dataclass
class Plan:
    moves: list[Move]
    sites: list[SiteRow]
    assignment: dict[str, str]  # PD -> site after the moves
    total: int
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "moves": [m.as_dict() for m in self.moves],
            "sites": [s.as_dict() for s in self.sites],
            "assignment": dict(sorted(self.assignment.items())),
            "notes": list(self.notes),
        }


def plan(
    subs: Subscriptions,
    volumes: Mapping[str, int],
    free: Mapping[str, int],
    *,
    min_gain_fraction: float = 0.01,
    max_moves: int | None = None,
) -> Plan:
    """Propose a redistribution of the PDs over the sites in proportion to their free tape space.

    ``volumes``: expected bytes per PD (a PD not yet in the configuration sits on the default site);
    ``free``: free tape bytes per site. Each move is the one that most reduces the total distance of the
    sites from their proportional target, taken only while it gains at least ``min_gain_fraction`` of the
    total volume, so a near-balanced assignment is left alone. A PD on a site with no free tape listed is
    always moved.
    """
    for site, value in free.items():
        if not SITE_RE.match(site):
            raise SubscriptionError(f"free tape: {site!r} is not a Tier-0/Tier-1 site")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SubscriptionError(f"free tape of {site} must be a number of bytes >= 0, got {value!r}")
    for pd, value in volumes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SubscriptionError(f"volume of {pd} must be a number of bytes >= 0, got {value!r}")
    vols = {pd: int(volumes.get(pd, 0)) for pd in set(volumes) | set(subs.sites)}
    usable = {s: int(v) for s, v in free.items() if v > 0}
    if not usable:
        raise SubscriptionError("no site has free tape space: nothing to plan")
    total_free = sum(usable.values())
    total = sum(vols.values())
    share = {s: v / total_free for s, v in usable.items()}
    target = {s: total * share[s] for s in usable}
    notes: list[str] = []
    assign = {pd: site_for(subs, pd, "RAW").site for pd in vols}
    for pd in sorted(volumes):
        if pd not in subs.sites:
            notes.append(
                f"{pd} is not in subscriptions.sites: counted on the default site {subs.default_site}"
            )
    before = dict.fromkeys(usable, 0)
    for pd, site in assign.items():
        if site in before:
            before[site] += vols[pd]
    load = dict(before)
    moves: list[Move] = []

    def record(pd: str, src: str, dst: str, why: str) -> None:
        v = vols[pd]
        if src in load:
            load[src] -= v
        load[dst] += v
        assign[pd] = dst
        moves.append(Move(pd, v, src, dst, why))

    # PDs on a site with no free tape listed: to the site furthest below its target, largest PD first.
    for pd in sorted(
        (p for p, s in assign.items() if s not in usable and vols[p] > 0), key=lambda p: (-vols[p], p)
    ):
        dst = min(usable, key=lambda s: (load[s] - target[s], s))
        record(
            pd,
            assign[pd],
            dst,
            f"{assign[pd]} has no free tape listed; {dst} is furthest below its "
            f"target ({_tb(load[dst])} of {_tb(target[dst])})",
        )
    min_gain = max(1.0, min_gain_fraction * total)
    limit = max_moves if max_moves is not None else 10 * max(1, len(vols))
    while len(moves) < limit:
        best: tuple[float, str, str, str] | None = None
        for pd in sorted(assign):
            src, v = assign[pd], vols[pd]
            if v == 0 or load[src] - target[src] <= 0:
                continue
            for dst in sorted(usable):
                if dst == src:
                    continue
                d_src, d_dst = load[src] - target[src], load[dst] - target[dst]
                gain = abs(d_src) + abs(d_dst) - abs(d_src - v) - abs(d_dst + v)
                if gain >= min_gain and (best is None or gain > best[0]):
                    best = (gain, pd, src, dst)
        if best is None:
            break
        gain, pd, src, dst = best
        record(
            pd,
            src,
            dst,
            f"{src} holds {_tb(load[src])} for a target of {_tb(target[src])} "
            f"({share[src]:.0%} of the free tape); {dst} holds {_tb(load[dst])} for "
            f"{_tb(target[dst])} ({share[dst]:.0%}): moving {pd} ({_tb(vols[pd])}) cuts "
            f"the imbalance by {_tb(gain)}",
        )
    rows = [SiteRow(s, usable[s], share[s], target[s], before[s], load[s]) for s in sorted(usable)]
    for row in rows:
        if row.after > row.free:
            notes.append(f"{row.site}: {_tb(row.after)} assigned exceeds its free tape {_tb(row.free)}")
    return Plan(moves=moves, sites=rows, assignment=assign, total=total, notes=notes)


def assignment_toml(assignment: Mapping[str, str]) -> str:
    """The ``[subscriptions.sites]`` table for an assignment (the operator pastes it into the config)."""
    lines = ["[subscriptions.sites]"] + [f'{pd} = "{assignment[pd]}"' for pd in sorted(assignment)]
    return "\n".join(lines) + "\n"
