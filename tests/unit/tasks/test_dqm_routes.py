"""Every moved task (DQM here, Tier-0 from test_tier0_routes) keeps its name and queue after the move."""

from __future__ import annotations

import importlib

import pytest

from t0dqm import config
from t0dqm.queues import route_for_task
from tests.unit.tasks.test_tier0_routes import TIER0_TASKS

# name -> (module that defines it now, queue it had before: messages already queued still match)
TASKS = {
    "t0dqm.tasks.archive.zip_file": ("t0dqm.tasks.archive", "archive"),
    "t0dqm.tasks.archive.freeze": ("t0dqm.tasks.archive", "archive"),
    "t0dqm.tasks.tape.stage": ("t0dqm.tasks.tape", "tape"),
    "t0dqm.tasks.tape.verify": ("t0dqm.tasks.tape", "tape"),
    "t0dqm.tasks.tape.verify_due": ("t0dqm.tasks.tape", "tape"),
    "t0dqm.tasks.tape.clean_zips": ("t0dqm.tasks.tape", "tape"),
    "t0dqm.tasks.tape.backup_index": ("t0dqm.tasks.tape", "tape"),
    "t0dqm.tasks.cleanup.version_control": ("t0dqm.tasks.cleanup", "cleanup"),
    "t0dqm.tasks.cleanup.quota_control": ("t0dqm.tasks.cleanup", "cleanup"),
    "t0dqm.tasks.health.check": ("t0dqm.tasks.health", "ops"),
    "t0dqm.tasks.health.notify": ("t0dqm.tasks.health", "ops"),
    "t0dqm.tasks.ops.reconcile": ("t0dqm.tasks.reconcile", "ops"),
}


@pytest.mark.parametrize("name", sorted(TASKS | TIER0_TASKS))
def test_task_keeps_its_name_and_queue(name: str) -> None:
    module, queue = (TASKS | TIER0_TASKS)[name]
    settings = config.load(None, environ={"T0DQM_FLAVOUR": "offline"})
    assert route_for_task(name, settings) == f"offline.{queue}"
    from t0dqm import celery as t0celery

    assert module in t0celery.TASK_MODULES
    importlib.import_module(module)
    task = t0celery.app.tasks[name]
    assert task.__module__ == module
    assert task.name == name


@pytest.mark.parametrize("step", ["archive", "tape", "cleanup", "health", "reconcile", "reprocess"])
def test_step_loads_no_celery(step: str) -> None:
    """A step module imports no celery, kombu, t0dqm.celery or t0dqm.tasks (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = (
        f"import sys, t0dqm.steps.{step}\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu')\n"
        "             or m == 't0dqm.celery' or m.startswith('t0dqm.tasks'))\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
