"""Tasks: register received files with the DQM GUI (queue index), and check that the GUI reads them.

Receive returns the registration as a next step once its catalog commit is done, so a file is in the GUI
seconds after it is filed. ``register`` sends one batch (see :class:`t0dqm.steps.gui.Registrar`); when the
GUI is down (5xx, 429, no connection) it retries with back-off (``gui.retry_base`` doubling up to
``gui.retry_cap``), then raises the ``gui-register:unreachable`` alarm and leaves the files to
reconcile, which sends whatever is still missing and backs off while that alarm is fresh. With
``gui.check_readable`` each registered sample's top folder is then read (``check``). The work is in
:mod:`t0dqm.steps.gui`.
"""

from __future__ import annotations

from t0dqm.celery import app
from t0dqm.steps import gui
from t0dqm.steps.gui import CHECK_TASK, REGISTER_TASK
from t0dqm.steps.next import Outcome
from t0dqm.tasks.base import T0Task

__all__ = ["CHECK_TASK", "REGISTER_TASK", "check", "register"]


@app.task(base=T0Task, bind=True, name=REGISTER_TASK, soft_time_limit=120, time_limit=150)
def register(self: T0Task, file_ids: list[int], force: bool = False) -> Outcome:
    """Register these files with the GUI (the newest version of each sample; registered ones only with
    ``force``)."""
    try:
        return gui.register(
            self.context,
            file_ids,
            force,
            tries=self.request.retries + 1,
            last_try=self.request.retries >= self.max_retries,
        )
    except gui.GuiUnavailable as exc:
        raise self.retry(exc=exc, countdown=gui.retry_delay(self.settings, self.request.retries)) from None


@app.task(base=T0Task, bind=True, name=CHECK_TASK, soft_time_limit=300, time_limit=360)
def check(self: T0Task, file_ids: list[int]) -> Outcome:
    """Read each registered sample's top folder in the GUI; a 5xx raises the unreadable alarm."""
    return gui.check(self.context, file_ids)
