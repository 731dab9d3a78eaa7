"""Beat and leases: a periodic run that overlaps the previous one skips with a log line instead of piling up.

Deterministic: the test holds the task's lease itself, as a previous run would (through the public
lease API), runs the task body in process, and then releases the lease and runs it again.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import insert

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog
from t0dqm.tasks import archive as archive_tasks  # noqa: F401 - registers the zip recoverer
from t0dqm.tasks import cleanup
from t0dqm.tasks import reconcile as reconcile_tasks
from t0dqm.tasks.base import T0Task
from tests.integration.steps.test_cleanup import OFFLINE, archive, file_state, filed

PREVIOUS = "otherhost:4242:1:previous-run"


def skipped_lines(caplog: pytest.LogCaptureFixture, lease: str) -> list[dict[str, Any]]:
    out = []
    for record in caplog.records:
        try:
            line = json.loads(record.getMessage())
        except ValueError:
            continue
        if line.get("event") == "skipped" and line.get("lease") == lease:
            out.append(line)
    return out


def run_held_then_free(caplog: pytest.LogCaptureFixture, task: Any, lease: str) -> tuple[Any, Any]:
    """Run the task body while PREVIOUS holds ``lease`` (asserting it skipped and logged), then after
    the release (asserting it did not skip); returns both results."""
    cat = get_catalog()
    assert cat.acquire_lease(lease, PREVIOUS, 600)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="t0dqm.tasks"):
        held = task.run()
    (line,) = skipped_lines(caplog, lease)
    assert line["task"] == task.name and "previous run" in line["reason"]
    cat.release_lease(lease, PREVIOUS)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="t0dqm.tasks"):
        free = task.run()
    assert skipped_lines(caplog, lease) == []
    return held, free


def test_version_control_skips_while_its_previous_run_holds_the_lease(
    settings: config.Settings, caplog: pytest.LogCaptureFixture
) -> None:
    v1, p1 = filed(settings, OFFLINE)
    filed(settings, OFFLINE)
    archive(v1, "verified")
    held, free = run_held_then_free(caplog, cleanup.version_control_task, "cleanup:version-control")
    assert held == {} and free == {"deleted": 1}
    assert not p1.exists() and file_state(v1) == "removed"


def test_quota_control_skips_while_its_previous_run_holds_the_lease(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from t0dqm.catalog.db import reset_catalogs
    from tests.conftest import make_settings

    current = make_settings(tmp_path / "root", quota__offline_data="1")  # any file is over this quota
    config.reset(current)
    try:
        v1, p1 = filed(current, OFFLINE)
        archive(v1, "verified")
        held, free = run_held_then_free(caplog, cleanup.quota_control_task, "cleanup:quota")
        assert held == {} and free == {"deleted": 1, "alarms": 0}
        assert not p1.exists() and file_state(v1) == "removed"
    finally:
        reset_catalogs()
        config.reset(None)


def test_reconcile_skips_while_its_previous_run_holds_the_lease(
    settings: config.Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[Any, ...]] = []

    def enqueue_many(_self: T0Task, items: list[tuple[Any, Any, Any]], **_options: Any) -> int:
        sent.extend((task.name, *args) for task, args, _kw in items)
        return len(items)

    monkeypatch.setattr(T0Task, "enqueue_many", enqueue_many)
    old = time.time() - 10 * 86400
    with get_catalog().begin() as conn:  # a received file nobody zipped for days: reconcile resumes it
        file_id = conn.execute(
            insert(files).values(
                path="x/DQM_V0001_R000000001.root",
                name="DQM_V0001_R000000001.root",
                cls="online_data",
                run=1,
                version=1,
                dataset="/A/B/C",
                size=1,
                adler32="00000001",
                mtime=old,
                zippat="z/p_S%04d.zip",
                state="received",
                index_state="indexed",
                created_at=old,
                updated_at=old,
                attempts=0,
            )
        ).inserted_primary_key[0]
    held, free = run_held_then_free(caplog, reconcile_tasks.reconcile, "reconcile")
    assert held == {} and free == {"zip": 1}
    assert sent == [("t0dqm.tasks.archive.zip_file", file_id)]
