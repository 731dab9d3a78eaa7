"""Through a real Redis and worker: uploads -> receive -> (commit) -> register with the GUI -> check."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog
from t0dqm.celery import app
from t0dqm.dev import simulate
from tests.gui_server import FakeGui, fake_gui


@pytest.fixture
def gui() -> Iterator[FakeGui]:
    with fake_gui() as server:
        yield server


@pytest.fixture
def stack_env(gui: FakeGui) -> dict[str, str]:
    return {"gui__register_url": gui.url, "gui__batch": "4"}


def test_every_received_file_is_registered_and_checked(
    celery_stack: config.Settings, gui: FakeGui, tmp_path: Path
) -> None:
    settings = celery_stack
    manifest = simulate.simulate(
        tmp_path / "producer", 10, seed=21, broken=2, n_hists=20, dropbox=settings.dropbox
    )
    good = [e for e in manifest if not e["broken"]]
    cat = get_catalog(settings.catalog_url)

    def registered() -> list[str]:
        with cat.read() as conn:
            return [
                r.path
                for r in conn.execute(select(files.c.path).where(files.c.gui_registered_at.is_not(None)))
            ]

    def checked() -> int:
        with gui.lock:
            return sum(1 for m, _p, _b in gui.requests if m == "GET")

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (len(registered()) < len(good) or checked() < len(good)):
        app.send_task("t0dqm.tasks.receive.scan")  # what beat does every scan_interval
        time.sleep(0.3)
    paths = registered()
    assert len(paths) == len(good)
    assert gui.files() == {str(settings.repository / p) for p in paths}
    assert {Path(f).name for f in gui.files()} == {e["name"] for e in good}
    assert checked() == len(good)  # one top-folder read per sample, all answered 200
