"""Worker roles: which queues, how many processes, and the `celery` command line that runs them.

The roles are defined in ``workers/roles.toml`` by queue *base* names; the flavour's queue prefix is
applied here, so one definition serves every flavour. ``t0dqm worker --role R`` and ``t0dqm beat``
(t0dqm/cli/worker.py) exec the command lines built here.
"""

from __future__ import annotations

import os
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from t0dqm import config
from t0dqm.queues import BASE_QUEUES, collect_queue, queue_name

ROLES_ENV = "T0DQM_WORKER_ROLES"
COLLECT = "collect.{host}"
EVERY = "*"


class RoleError(ValueError):
    """The roles file is missing or invalid, or the role is unknown; the message says which."""


@dataclass(frozen=True)
class Role:
    name: str
    queues: tuple[str, ...]  # base names, COLLECT, or EVERY
    concurrency: int
    prefetch: int
    options: tuple[str, ...]
    why: str

    def queue_names(self, settings: config.Settings, host: str | None = None) -> list[str]:
        """The flavour's queue names for this role (collect needs the producer host)."""
        names: list[str] = []
        for base in self.queues:
            if base == EVERY:
                names += [queue_name(q, settings) for q in BASE_QUEUES]
            elif base == COLLECT:
                names.append(collect_queue(host or settings.host, settings))
            else:
                names.append(queue_name(base, settings))
        return list(dict.fromkeys(names))


def candidates() -> list[Path]:
    """Where the roles file is looked for, in order."""
    found = [Path(os.environ[ROLES_ENV])] if os.environ.get(ROLES_ENV) else []
    return [
        *found,
        Path(__file__).resolve().parents[1] / "workers" / "roles.toml",  # source checkout
        Path(sys.prefix) / "share" / "t0dqm" / "workers" / "roles.toml",
    ]  # pip-installed copy


def roles_file() -> Path:
    for path in candidates():
        if path.is_file():
            return path
    raise RoleError(f"no worker roles file; looked at {', '.join(map(str, candidates()))} (set {ROLES_ENV})")


def _role(name: str, table: object, source: Path) -> Role:
    where = f"{source} [{name}]"
    if not isinstance(table, dict):
        raise RoleError(f"{where}: not a table")
    queues = table.get("queues")
    if not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues):
        raise RoleError(f"{where}: queues must be a non-empty list of queue base names")
    for q in queues:
        if q not in BASE_QUEUES and q not in (COLLECT, EVERY):
            raise RoleError(
                f"{where}: unknown queue {q!r} (known: {', '.join(BASE_QUEUES)}, {COLLECT}, {EVERY})"
            )
    numbers = {}
    for key in ("concurrency", "prefetch"):
        value = table.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RoleError(f"{where}: {key} must be an integer >= 1, got {value!r}")
        numbers[key] = value
    options = table.get("options", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise RoleError(f"{where}: options must be a list of strings")
    unknown = sorted(set(table) - {"queues", "concurrency", "prefetch", "options", "why"})
    if unknown:
        raise RoleError(f"{where}: unknown key {unknown[0]!r}")
    return Role(
        name,
        tuple(queues),
        numbers["concurrency"],
        numbers["prefetch"],
        tuple(options),
        str(table.get("why", "")),
    )


def load_roles(path: Path | None = None) -> dict[str, Role]:
    """Every role of the roles file, validated."""
    path = path or roles_file()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RoleError(f"{path}: {exc}") from None
    return {name: _role(name, table, path) for name, table in data.items()}


def node_name(kind: str, settings: config.Settings, pid: int) -> str:
    """A node name unique on the broker: kind, flavour and pid (kept by exec) at this host (%h)."""
    return f"{kind}.{settings.flavour}.{pid}@%h"


def worker_argv(
    role: Role,
    settings: config.Settings,
    *,
    host: str | None = None,
    pid: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`celery` arguments (after the program) of a worker for ``role``; ``extra`` last, so it overrides."""
    return [
        "-A",
        "t0dqm",
        "worker",
        "-Q",
        ",".join(role.queue_names(settings, host)),
        "-c",
        str(role.concurrency),
        "--prefetch-multiplier",
        str(role.prefetch),
        "-n",
        node_name(role.name, settings, os.getpid() if pid is None else pid),
        *role.options,
        *extra,
    ]


def default_schedule(settings: config.Settings) -> Path:
    """Beat's schedule state on local disk (never the shared data folder: two beats, one shelve file)."""
    return Path(tempfile.gettempdir()) / f"t0dqm-{settings.flavour}-celerybeat-schedule"


def beat_argv(
    settings: config.Settings,
    *,
    schedule: Path | None = None,
    pid: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """`celery` arguments of a beat that answers `celery inspect ping` as beat.<flavour>.<pid>@host."""
    return [
        "-A",
        "t0dqm",
        "beat",
        "-s",
        str(schedule or default_schedule(settings)),
        "--enable-remote-control",
        "-n",
        node_name("beat", settings, os.getpid() if pid is None else pid),
        *extra,
    ]
