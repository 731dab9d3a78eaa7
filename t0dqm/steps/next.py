"""What a step returns: its result and the next steps to send once its transactions have committed.

A step (``t0dqm.steps.<name>``) does its I/O and commits its catalog changes, then returns an
:class:`Outcome`. It never talks to the broker: the base task (``t0dqm.tasks.base.T0Task``) sends
``Outcome.next`` after the step has returned, in one place, so "commit, then enqueue" holds by
construction. A next step names its Celery task by ``name=`` (the names never change, so queued messages
survive an upgrade) and carries JSON-only arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from t0dqm.catalog.db import Catalog
    from t0dqm.config import Settings


@dataclass(frozen=True)
class Next:
    """One message to send: the task's name, its arguments, an optional delay and queue."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    countdown: float | None = None
    queue: str | None = None


@dataclass
class Outcome:
    """A step's result (what the task returns, JSON) and the steps to send after it.

    ``orphan_grace`` (reconcile, verify_due): a queued-message marker older than this whose queue is
    empty guards a lost message, and the step is sent again (see ``t0dqm.tasks.queued``).
    """

    result: Any = None
    next: list[Next] = field(default_factory=list)
    orphan_grace: float | None = None

    def then(self, steps: Iterable[Next]) -> Outcome:
        self.next.extend(steps)
        return self


class Log(Protocol):
    def __call__(self, event: str, level: int = ..., **fields: Any) -> None: ...


@dataclass(frozen=True)
class Context:
    """What a step may use besides its arguments: settings, the catalog, a structured log line and a named
    single-writer lease (``with ctx.lease(name): ...`` raises ``t0dqm.steps.next.LeaseBusy`` when taken)."""

    settings: Settings
    catalog: Catalog
    log: Log
    lease: Callable[..., AbstractContextManager[str]]
    task_id: str | None = None


class LeaseBusy(RuntimeError):
    """Another worker holds the lease; the caller gives up quietly (the holder does the work)."""
