"""Which runs to remove from the index (visDQMDeleteDaemon). Pure.

Rules, as in the original:

* the newest run of each run type is always kept (it may still be registering);
* a run without the facts needed (lumis, start time) is kept;
* a run that ended more than ``max_age_days`` (2 years) ago is removed;
* optionally (``min_subsystems``), a run with fewer subsystems/folders than that is removed at once;
* otherwise each rule ``{type, keep_days, min_lumis}`` applies when the run has that type and at least
  ``min_lumis`` lumi sections; when several apply the longest ``keep_days`` rules; the run is removed once
  it ended more than that many days ago;
* a run no rule applies to is kept until the max age, unless ``unmatched_keep_days`` is set (the original
  online daemon used 1 day there).

The run end time is the recorded end, else start + lumis x 23.31 s (one lumi section).
Default rules (configuration ``run_deletion.rules``): COLLISIONS 730 days; COSMICS 180 days from 50 lumis,
90 from 25, 30 otherwise; TEST 20 days from 100 lumis, 10 from 25, 1 otherwise.
The original compared lumis strictly (``>``); we use ``>=`` so a ``min_lumis`` of 0 matches every run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DAY = 86400.0
LUMI_SECONDS = 23.31  # 2**18 LHC orbits
MAX_AGE_DAYS = 730

COLLISIONS = "COLLISIONS"
COSMICS = "COSMICS"
TEST = "TEST"
OTHER = "OTHER"
RUN_TYPES = (COLLISIONS, COSMICS, TEST, OTHER)

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {"type": COLLISIONS, "keep_days": 730, "min_lumis": 0},
    {"type": COSMICS, "keep_days": 180, "min_lumis": 50},
    {"type": COSMICS, "keep_days": 90, "min_lumis": 25},
    {"type": COSMICS, "keep_days": 30, "min_lumis": 0},
    {"type": TEST, "keep_days": 20, "min_lumis": 100},
    {"type": TEST, "keep_days": 10, "min_lumis": 25},
    {"type": TEST, "keep_days": 1, "min_lumis": 0},
)


@dataclass(frozen=True)
class RunRule:
    type: str
    keep_days: float
    min_lumis: int = 0

    @property
    def name(self) -> str:
        return f"{self.type}>={self.min_lumis}lumis:{self.keep_days:g}d"


@dataclass(frozen=True)
class IndexRun:
    """Facts about one (run, dataset) sample in the index."""

    run: int
    dataset: str
    run_type: str = OTHER
    lumis: int | None = None
    start_time: float | None = None
    end_time: float | None = None
    n_subsystems: int | None = None

    @property
    def ended(self) -> float | None:
        if self.end_time is not None:
            return self.end_time
        if self.start_time is None or self.lumis is None:
            return None
        return self.start_time + self.lumis * LUMI_SECONDS


@dataclass(frozen=True)
class RunDecision:
    run: int
    dataset: str
    delete: bool
    rule: str
    reason: str


def parse_rules(rules: Iterable[Mapping[str, Any]]) -> tuple[RunRule, ...]:
    """Validate configuration rules ``[{type, keep_days, min_lumis}]``; ValueError naming the bad one."""
    out: list[RunRule] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise ValueError(f"run_deletion.rules[{i}] must be a table, got {rule!r}")
        unknown = set(rule) - {"type", "keep_days", "min_lumis"}
        if unknown:
            raise ValueError(f"run_deletion.rules[{i}]: unknown keys {sorted(unknown)}")
        rtype = str(rule.get("type", "")).upper()
        if rtype not in RUN_TYPES:
            raise ValueError(
                f"run_deletion.rules[{i}].type must be one of {', '.join(RUN_TYPES)}, "
                f"got {rule.get('type')!r}"
            )
        keep = rule.get("keep_days")
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or keep < 0:
            raise ValueError(f"run_deletion.rules[{i}].keep_days must be a number >= 0, got {keep!r}")
        lumis = rule.get("min_lumis", 0)
        if isinstance(lumis, bool) or not isinstance(lumis, int) or lumis < 0:
            raise ValueError(f"run_deletion.rules[{i}].min_lumis must be an integer >= 0, got {lumis!r}")
        out.append(RunRule(rtype, keep, lumis))
    return tuple(out)


def run_type_from(is_collisions_run: int | str | None, hlt_key: str | None) -> str:
    """Run type from the index's Info/ProvInfo values, as the original: a Cosmics HLT key wins, then
    isCollisionsRun 0 -> TEST, non-zero -> COLLISIONS, nothing -> OTHER."""
    if hlt_key and "Cosmics" in hlt_key:
        return COSMICS
    if is_collisions_run is None or is_collisions_run == "":
        return OTHER
    try:
        return TEST if int(is_collisions_run) == 0 else COLLISIONS
    except (TypeError, ValueError):
        return OTHER


def keep_days_for(run: IndexRun, rules: Iterable[RunRule]) -> RunRule | None:
    """The applicable rule with the longest keep_days, None when none applies."""
    best: RunRule | None = None
    for rule in rules:
        if (
            rule.type == run.run_type
            and (run.lumis or 0) >= rule.min_lumis
            and (best is None or rule.keep_days > best.keep_days)
        ):
            best = rule
    return best


def plan_run_deletion(
    runs: Iterable[IndexRun],
    now: float,
    rules: Iterable[RunRule | Mapping[str, Any]] = DEFAULT_RULES,
    *,
    max_age_days: float = MAX_AGE_DAYS,
    unmatched_keep_days: float | None = None,
    min_subsystems: int | None = None,
) -> tuple[RunDecision, ...]:
    """One decision per (run, dataset), ordered by run type, run and dataset."""
    runs = list(runs)
    parsed = tuple(r if isinstance(r, RunRule) else parse_rules([r])[0] for r in rules)
    newest: dict[str, int] = {}
    for r in runs:
        newest[r.run_type] = max(newest.get(r.run_type, r.run), r.run)
    out: list[RunDecision] = []
    for r in sorted(runs, key=lambda x: (x.run_type, x.run, x.dataset)):
        out.append(
            _decide(r, now, parsed, newest[r.run_type], max_age_days, unmatched_keep_days, min_subsystems)
        )
    return tuple(out)


def _decide(
    r: IndexRun,
    now: float,
    rules: tuple[RunRule, ...],
    newest: int,
    max_age_days: float,
    unmatched_keep_days: float | None,
    min_subsystems: int | None,
) -> RunDecision:
    def keep(rule: str, reason: str) -> RunDecision:
        return RunDecision(r.run, r.dataset, False, rule, reason)

    def delete(rule: str, reason: str) -> RunDecision:
        return RunDecision(r.run, r.dataset, True, rule, reason)

    if r.run >= newest:
        return keep("newest-of-type", f"newest {r.run_type} run")
    ended = r.ended
    if ended is None or r.lumis is None:
        return keep("incomplete", "lumis or start time unknown")
    age_days = (now - ended) / DAY
    if age_days > max_age_days:
        return delete("max-age", f"ended {age_days:.1f} days ago > {max_age_days:g} days")
    if min_subsystems is not None and r.n_subsystems is not None and r.n_subsystems < min_subsystems:
        return delete("min-subsystems", f"{r.n_subsystems} subsystems < {min_subsystems}")
    rule = keep_days_for(r, rules)
    if rule is None:
        if unmatched_keep_days is None:
            return keep("no-rule", f"no rule for {r.run_type} with {r.lumis} lumis; kept until max age")
        if age_days > unmatched_keep_days:
            return delete(
                "no-rule",
                f"no rule for {r.run_type}; ended {age_days:.1f} days ago > {unmatched_keep_days:g} days",
            )
        return keep("no-rule", f"no rule for {r.run_type}; ended {age_days:.1f} days ago")
    if age_days > rule.keep_days:
        return delete(
            rule.name,
            f"{r.run_type} with {r.lumis} lumis ended {age_days:.1f} days ago > {rule.keep_days:g} days",
        )
    return keep(
        rule.name,
        f"{r.run_type} with {r.lumis} lumis ended {age_days:.1f} days ago <= {rule.keep_days:g} days",
    )


def runs_to_delete(
    runs: Iterable[IndexRun],
    now: float,
    rules: Iterable[RunRule | Mapping[str, Any]] = DEFAULT_RULES,
    **options: Any,
) -> tuple[RunDecision, ...]:
    """Only the deletions of :func:`plan_run_deletion`."""
    return tuple(d for d in plan_run_deletion(runs, now, rules, **options) if d.delete)
