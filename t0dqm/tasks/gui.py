"""Tasks: register received files with the DQM GUI (queue index), and check that the GUI reads them.

Receive calls :func:`request_registration` once its catalog commit is done, so a file is in the GUI
seconds after it is filed. ``register`` sends one batch (see :class:`t0dqm.steps.gui.Registrar`); when the
GUI is down (5xx, 429, no connection) it retries with back-off (``gui.retry_base`` doubling up to
``gui.retry_cap``), then raises the ``gui-register:unreachable`` alarm and leaves the files to
reconcile, which sends whatever is still missing and backs off while that alarm is fresh. With
``gui.check_readable`` each registered sample's top folder is then read (``check``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy.engine import Connection

from t0dqm.catalog.alarms import raise_alarm
from t0dqm.celery import app
from t0dqm.policies import gui as policy
from t0dqm.steps import gui
from t0dqm.tasks.base import T0Task
from t0dqm.tasks.recovery import Resume, recoverer

REGISTER_TASK = "t0dqm.tasks.gui.register"
CHECK_TASK = "t0dqm.tasks.gui.check"


def _chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [list(ids[i:i + size]) for i in range(0, len(ids), size)]


def request_registration(task: T0Task, file_ids: Iterable[int | None]) -> None:
    """Enqueue the registration of newly committed files (nothing when ``gui.register_url`` is empty)."""
    ids = [int(i) for i in file_ids if i is not None]
    if ids and gui.enabled(task.settings):
        for chunk in _chunks(ids, task.settings["gui"]["batch"]):
            task.enqueue(app.signature(REGISTER_TASK), chunk)


@app.task(base=T0Task, bind=True, name=REGISTER_TASK, soft_time_limit=120, time_limit=150)
def register(self: T0Task, file_ids: list[int], force: bool = False) -> dict[str, int]:
    """Register these files with the GUI (the newest version of each sample; registered ones only with
    ``force``)."""
    settings = self.settings
    if not gui.enabled(settings):
        return {"off": len(file_ids)}
    g = settings["gui"]
    try:
        result = gui.Registrar(settings, self.catalog).register([int(i) for i in file_ids], force=bool(force))
    except gui.GuiUnavailable as exc:
        if self.request.retries >= self.max_retries:
            raise_alarm(self.catalog, gui.ALARM_UNREACHABLE,
                        f"DQM GUI {g['register_url']} did not take {len(file_ids)} file(s) after "
                        f"{self.request.retries + 1} tries: {exc}; reconcile sends them again", "warning")
            self.log("gui-register-unreachable", files=len(file_ids), error=str(exc))
            return {"unreachable": len(file_ids)}
        raise self.retry(exc=exc, countdown=policy.retry_delay(self.request.retries, g["retry_base"],
                                                              g["retry_cap"])) from None
    if result.registered and g["check_readable"]:
        self.enqueue(app.signature(CHECK_TASK), result.registered)
    self.log("gui-register", **result.counts())
    return result.counts()


@app.task(base=T0Task, bind=True, name=CHECK_TASK, soft_time_limit=300, time_limit=360)
def check(self: T0Task, file_ids: list[int]) -> dict[str, int]:
    """Read each registered sample's top folder in the GUI; a 5xx raises the unreadable alarm."""
    settings = self.settings
    if not gui.enabled(settings):
        return {}
    registrar = gui.Registrar(settings, self.catalog)
    counts = registrar.check(registrar.samples([int(i) for i in file_ids]), budget=240.0)
    if counts["unreadable"]:
        self.log("gui-unreadable", **counts)
    return counts


@recoverer("gui-register")
def _recover_registrations(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    """Files received more than ``reconcile.stale_seconds`` ago that the GUI does not have yet."""
    if not gui.enabled(settings):
        return []
    stale = settings["reconcile"]["stale_seconds"]
    if gui.unreachable_recently(conn, now, stale):
        return []
    ids = gui.missing_ids(conn, older_than=now - stale, limit=5000)
    return [Resume(REGISTER_TASK, (chunk,)) for chunk in _chunks(ids, settings["gui"]["batch"])]
