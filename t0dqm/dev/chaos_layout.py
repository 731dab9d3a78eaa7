"""Which roles run on which simulated host in `t0dqm chaos --hosts N` (pure: no processes here).

Three kinds of host, as an operator splits them: an intake host (receive, index), an archive host
(archive, tape) and a services host (index merge, ops, cleanup, sync, beat). The kinds go round
robin over the hosts, so every role runs somewhere; a host beyond the third repeats a kind without its
singletons (more capacity, not a second leader). With ``standbys`` every singleton (beat, index merge)
also runs on the next host, for the election to choose between them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

# Worker roles as in workers/roles.toml (one role per base queue); "beat" is the scheduler.
ROLES: tuple[str, ...] = ("receive", "index", "archive", "tape", "index-merge", "ops", "cleanup", "sync")
ROLE_QUEUES: dict[str, tuple[str, ...]] = {role: (role,) for role in ROLES}
BEAT = "beat"
# Processes per worker in the chaos run: the machine is small and shared.
ROLE_CONCURRENCY: dict[str, int] = {
    "receive": 2,
    "index": 1,
    "archive": 2,
    "tape": 2,
    "index-merge": 1,
    "ops": 1,
    "cleanup": 1,
    "sync": 1,
}
HOST_KINDS: tuple[tuple[str, ...], ...] = (
    ("receive", "index"),
    ("archive", "tape"),
    ("index-merge", "ops", "cleanup", "sync", BEAT),
)
SINGLETONS: tuple[str, ...] = ("index-merge", BEAT)


@dataclass(frozen=True)
class HostSpec:
    name: str
    roles: tuple[str, ...]  # worker roles and possibly "beat", in start order
    standby: tuple[str, ...] = ()  # the singletons this host runs as a second candidate

    @property
    def all_roles(self) -> tuple[str, ...]:
        return self.roles + tuple(r for r in self.standby if r not in self.roles)


def host_name(i: int) -> str:
    """hostA ... hostZ, hostAA, hostAB, ...: replacements take the next unused name."""
    letters = ""
    i += 1
    while i:
        i, rest = divmod(i - 1, 26)
        letters = string.ascii_uppercase[rest] + letters
    return f"host{letters}"


def layout(n: int, standbys: bool = False) -> list[HostSpec]:
    """Roles of ``n`` hosts named hostA, hostB, ...; every role on at least one host."""
    if n < 1:
        raise ValueError("at least one host")
    roles: list[list[str]] = [[] for _ in range(n)]
    for i in range(max(n, len(HOST_KINDS))):
        kind = HOST_KINDS[i % len(HOST_KINDS)]
        first_round = i < len(HOST_KINDS)
        for role in kind:
            if (first_round or role not in SINGLETONS) and role not in roles[i % n]:
                roles[i % n].append(role)
    extra: list[list[str]] = [[] for _ in range(n)]
    if standbys and n > 1:
        for role in SINGLETONS:
            home = next(i for i, r in enumerate(roles) if role in r)
            extra[(home + 1) % n].append(role)
    return [HostSpec(host_name(i), tuple(roles[i]), tuple(extra[i])) for i in range(n)]


def queues_of(roles: tuple[str, ...], prefix: str) -> list[str]:
    """The flavour-prefixed queues the worker roles consume."""
    return [f"{prefix}{q}" for role in roles if role != BEAT for q in ROLE_QUEUES[role]]
