"""Health policy (aliveCheck's successor): facts about queues, workers, beat, collectors and waiting
items in; which alarms to raise and which to clear out.

Every condition has one stable key, so a condition that lasts raises one alarm (its count grows, the
notifier rate-limits per key) and a condition that ends clears it. Key families (all ``health:``):

- ``health:broker``                 the broker (Redis) cannot be reached
- ``health:queue:<queue>``          a queue is not consumed (no worker, or a canary unanswered too long)
- ``health:backlog:<queue>``        more messages waiting on a queue than ``max_queue_depth``
- ``health:beat``                   no recent beat heartbeat (beat down, or nobody consumes ``ops``)
- ``health:latency:<step>``         items waited longer than the latency limit at a step
- ``health:collector:<host>``       a producer host's collector has not been active for too long
- ``health:quarantine``             uploads are quarantined and wait for an operator

A family the facts say nothing about (broker down, so queue facts unknown) is neither raised nor
cleared: an alarm is only cleared by evidence that its condition is over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PREFIX = "health:"
STEPS = ("receive", "index", "zip", "stage", "verify")

DEFAULTS: dict[str, Any] = {
    "canary_timeout": 10.0,  # seconds the check waits for its canaries
    "canary_max_age": 900.0,  # an unanswered canary older than this = queue not consumed, even with listeners
    "inspect_timeout": 2.0,  # seconds to collect workers' active_queues replies
    "max_queue_depth": 5000,  # messages waiting on one queue before a backlog alarm
    "beat_max_age": 300.0,  # seconds since the last beat heartbeat (the heartbeat runs every 30 s)
    "collector_max_age": 3600.0,  # seconds without collector activity on a producer host
    "queues": [],  # base queue names to check (empty: every queue of the flavour)
    "skip_queues": [],  # base queue names nobody is meant to consume in this deployment
    "max_items": 500,  # waiting items fetched per step (oldest first)
}

# Canary outcomes for one queue.
CANARY_OK = "ok"  # answered within the timeout
CANARY_PROGRESS = "progress"  # the fresh canary is unanswered but the previous one was consumed since
CANARY_SELF = "self"  # the check itself was delivered from this queue: it is consumed
CANARY_UNANSWERED = "unanswered"
CANARY_UNKNOWN = "unknown"  # could not be sent (broker down)
ANSWERED = (CANARY_OK, CANARY_PROGRESS, CANARY_SELF)


@dataclass(frozen=True)
class Limits:
    canary_max_age: float = DEFAULTS["canary_max_age"]
    max_queue_depth: int = DEFAULTS["max_queue_depth"]
    beat_max_age: float = DEFAULTS["beat_max_age"]
    collector_max_age: float = DEFAULTS["collector_max_age"]
    latency: Mapping[str, float] = field(default_factory=dict)  # step -> seconds an item may wait


@dataclass(frozen=True)
class QueueFacts:
    """One queue: who listens on it, what became of the canary, how many messages wait."""

    name: str
    canary: str = CANARY_UNKNOWN
    canary_waited: float = 0.0  # seconds the oldest unanswered canary has waited
    consumers: tuple[str, ...] | None = None  # workers listing it in active_queues; None = not known
    depth: int | None = None


@dataclass(frozen=True)
class WaitingItem:
    """One item waiting at a step since ``since`` (epoch seconds)."""

    step: str
    item: str
    since: float


@dataclass(frozen=True)
class HealthFacts:
    now: float
    queues: Sequence[QueueFacts] = ()
    broker_error: str | None = None
    beat_heartbeat_at: float | None = None
    beat_known: bool = True  # False when the catalog could not be read
    collectors: Mapping[str, float | None] = field(
        default_factory=dict
    )  # host -> last activity (None = never)
    waiting: Sequence[WaitingItem] = ()
    waiting_totals: Mapping[str, int] = field(default_factory=dict)  # step -> items over the limit (if known)
    steps_checked: Sequence[str] = STEPS
    quarantined: int | None = None
    active_keys: Sequence[str] = ()  # health:* alarms active now


@dataclass(frozen=True)
class AlarmSpec:
    key: str
    severity: str
    message: str


@dataclass(frozen=True)
class HealthDecision:
    raise_: tuple[AlarmSpec, ...]
    clear: tuple[str, ...]

    @property
    def healthy(self) -> bool:
        return not self.raise_

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.key for a in self.raise_)


# -- helpers ---------------------------------------------------------------------------------------


def latency_limits(latency_seconds: float, verify_delay: float) -> dict[str, float]:
    """Seconds an item may wait at each step: the latency rule, plus the verify delay for verify
    (a copied archive is only checked once that delay has passed, by design)."""
    limits = {step: float(latency_seconds) for step in STEPS}
    limits["verify"] = float(latency_seconds) + float(verify_delay)
    return limits


def human_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def family(key: str) -> str:
    """``health:queue:archive`` -> ``queue``."""
    return key[len(PREFIX) :].split(":", 1)[0] if key.startswith(PREFIX) else ""


def subject(key: str) -> str:
    """``health:queue:archive`` -> ``archive`` ('' for keys without one)."""
    rest = key[len(PREFIX) :].split(":", 1)
    return rest[1] if len(rest) > 1 else ""


# -- rules -----------------------------------------------------------------------------------------


def queue_alarm(q: QueueFacts, limits: Limits) -> AlarmSpec | None:
    """Not consumed: canary unanswered and nobody listens, or unanswered for longer than canary_max_age."""
    if q.canary in ANSWERED or q.canary == CANARY_UNKNOWN:
        return None
    key = f"{PREFIX}queue:{q.name}"
    waited = human_seconds(q.canary_waited)
    if q.consumers is not None and not q.consumers:
        return AlarmSpec(
            key,
            "critical",
            f"queue {q.name} is not consumed: no worker answering the "
            f"inspection listens on it; canary unanswered for {waited}",
        )
    if q.canary_waited >= limits.canary_max_age:
        who = ", ".join(q.consumers) if q.consumers else "unknown workers"
        return AlarmSpec(
            key,
            "critical",
            f"queue {q.name} is not consumed: {who} listen on it but a canary "
            f"has waited {waited} (worker stopped, hung or saturated)",
        )
    return None


def backlog_alarm(q: QueueFacts, limits: Limits) -> AlarmSpec | None:
    if q.depth is None or q.depth <= limits.max_queue_depth:
        return None
    return AlarmSpec(
        f"{PREFIX}backlog:{q.name}",
        "warning",
        f"{q.depth} messages wait on queue {q.name} (limit {limits.max_queue_depth})",
    )


def beat_alarm(facts: HealthFacts, limits: Limits) -> AlarmSpec | None:
    if not facts.beat_known:
        return None
    key = f"{PREFIX}beat"
    if facts.beat_heartbeat_at is None:
        return AlarmSpec(
            key,
            "critical",
            "no beat heartbeat recorded: beat is not running, or no worker consumes the ops queue",
        )
    age = facts.now - facts.beat_heartbeat_at
    if age > limits.beat_max_age:
        return AlarmSpec(
            key,
            "critical",
            f"last beat heartbeat {human_seconds(age)} ago (limit "
            f"{human_seconds(limits.beat_max_age)}): beat is down, or no worker "
            f"consumes the ops queue",
        )
    return None


def latency_alarms(facts: HealthFacts, limits: Limits) -> list[AlarmSpec]:
    """One alarm per step where at least one item waited longer than the step's limit."""
    over: dict[str, list[WaitingItem]] = {}
    for item in facts.waiting:
        limit = limits.latency.get(item.step)
        if item.step not in facts.steps_checked or limit is None:
            continue
        if facts.now - item.since > limit:
            over.setdefault(item.step, []).append(item)
    out = []
    for step in sorted(over):
        items = sorted(over[step], key=lambda i: (i.since, i.item))
        oldest = items[0]
        count = max(len(items), int(facts.waiting_totals.get(step, 0)))
        out.append(
            AlarmSpec(
                f"{PREFIX}latency:{step}",
                "critical",
                f"{count} item(s) waited longer than {human_seconds(limits.latency[step])} at step {step}; "
                f"oldest {oldest.item} for {human_seconds(facts.now - oldest.since)}",
            )
        )
    return out


def collector_alarms(facts: HealthFacts, limits: Limits) -> list[AlarmSpec]:
    out = []
    for host in sorted(facts.collectors):
        last = facts.collectors[host]
        if last is not None and facts.now - last > limits.collector_max_age:
            out.append(
                AlarmSpec(
                    f"{PREFIX}collector:{host}",
                    "warning",
                    f"collector on {host} last active {human_seconds(facts.now - last)} ago "
                    f"(limit {human_seconds(limits.collector_max_age)})",
                )
            )
    return out


def quarantine_alarm(facts: HealthFacts) -> AlarmSpec | None:
    if not facts.quarantined:
        return None
    return AlarmSpec(
        f"{PREFIX}quarantine",
        "warning",
        f"{facts.quarantined} upload(s) quarantined; see `t0dqm retry-bad --list`, fix the cause, "
        f"then `t0dqm retry-bad`",
    )


def evaluated(key: str, facts: HealthFacts) -> bool:
    """Whether the facts say enough about ``key``'s condition to clear it."""
    fam, sub = family(key), subject(key)
    queues = {q.name: q for q in facts.queues}
    if fam == "broker":
        return True
    if fam == "queue":
        if facts.broker_error is not None:
            return False
        return sub not in queues or queues[sub].canary != CANARY_UNKNOWN
    if fam == "backlog":
        return sub not in queues or queues[sub].depth is not None
    if fam == "beat":
        return facts.beat_known
    if fam == "latency":
        return sub in facts.steps_checked or sub not in STEPS
    if fam == "collector":
        return sub not in facts.collectors or facts.collectors[sub] is not None
    if fam == "quarantine":
        return facts.quarantined is not None
    return False


def decide(facts: HealthFacts, limits: Limits) -> HealthDecision:
    """Alarms to raise (one per condition, stable keys) and active health alarms to clear."""
    raised: list[AlarmSpec] = []
    if facts.broker_error is not None:
        raised.append(AlarmSpec(f"{PREFIX}broker", "critical", f"broker unreachable: {facts.broker_error}"))
    for q in sorted(facts.queues, key=lambda q: q.name):
        raised.extend(a for a in (queue_alarm(q, limits), backlog_alarm(q, limits)) if a is not None)
    raised.extend(a for a in (beat_alarm(facts, limits),) if a is not None)
    raised.extend(latency_alarms(facts, limits))
    raised.extend(collector_alarms(facts, limits))
    raised.extend(a for a in (quarantine_alarm(facts),) if a is not None)
    keys = {a.key for a in raised}
    clear = tuple(
        sorted(
            k
            for k in set(facts.active_keys)
            if k.startswith(PREFIX) and k not in keys and evaluated(k, facts)
        )
    )
    return HealthDecision(tuple(raised), clear)


def limits_from(cfg: Mapping[str, Any], latency_seconds: float, verify_delay: float) -> Limits:
    """Limits from the ``health`` settings table (missing keys take DEFAULTS)."""
    merged = {**DEFAULTS, **dict(cfg)}
    return Limits(
        canary_max_age=float(merged["canary_max_age"]),
        max_queue_depth=int(merged["max_queue_depth"]),
        beat_max_age=float(merged["beat_max_age"]),
        collector_max_age=float(merged["collector_max_age"]),
        latency=latency_limits(latency_seconds, verify_delay),
    )


def queues_to_check(
    all_base: Iterable[str], cfg: Mapping[str, Any], producer_hosts: Iterable[str]
) -> list[str]:
    """Base queue names to send canaries to: configured ones (or all), minus skipped, plus collect.<host>."""
    merged = {**DEFAULTS, **dict(cfg)}
    chosen = list(merged["queues"]) or list(all_base)
    skip = set(merged["skip_queues"])
    out = [q for q in chosen if q not in skip]
    out += [f"collect.{h}" for h in sorted(set(producer_hosts)) if f"collect.{h}" not in skip]
    return list(dict.fromkeys(out))
