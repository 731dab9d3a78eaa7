"""Refuse to start a worker or beat that has no broker URL.

A host without ``broker_url`` must not quietly talk to whatever listens on localhost: its worker would
consume nothing the deployment sends, and its beat would schedule into the void. :func:`check` runs
when a worker or beat starts (signals ``celeryd_init`` and ``beat_init``, connected in
``t0dqm/celery.py``) and exits with a message naming the setting. ``celery -b URL`` (which Celery
passes on as ``CELERY_BROKER_URL``) counts as set. Only ``t0dqm up``, ``t0dqm demo`` and
``t0dqm chaos`` start an embedded Redis, and they hand its URL to their workers explicitly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from t0dqm import config

EXIT_STATUS = 78  # EX_CONFIG

NOT_SET = "no broker URL: set T0DQM_BROKER_URL (configuration key broker_url)"
MESSAGE = (
    "t0dqm: no broker URL for this {what}: set T0DQM_BROKER_URL (configuration key broker_url), "
    "e.g. redis://:password@redis-host:6379/0, or pass celery -b URL. Only `t0dqm up`, `t0dqm demo` "
    "and `t0dqm chaos` start an embedded Redis."
)


def explicit_broker(settings: config.Settings, environ: Mapping[str, str]) -> str:
    """The broker URL this process was given (configuration or ``celery -b``), '' when none."""
    return environ.get("CELERY_BROKER_URL", "") or settings.broker_url


def problem(what: str, settings: config.Settings, environ: Mapping[str, str]) -> str | None:
    """Why a worker or beat must not start, or None."""
    return None if explicit_broker(settings, environ) else MESSAGE.format(what=what)


def check(
    what: str, settings: config.Settings | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Exit the process with a clear message when :func:`problem` finds one."""
    why = problem(what, settings or config.get(), os.environ if environ is None else environ)
    if why:
        print(why, file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS)
