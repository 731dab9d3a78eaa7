"""Zip and freeze against the real catalog and filesystem, including workers killed mid-append."""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from t0dqm import config, storage
from t0dqm.catalog import states
from t0dqm.catalog.db import alarms, archives, files, get_catalog, reset_catalogs
from t0dqm.tasks import archive as archive_tasks
from tests.conftest import make_settings
from tests.integration.archive_util import (
    PATTERN,
    add_received,
    assert_consistent,
    capture_sends,
    expire_leases,
    reconcile,
    run_killed,
)

MB = 1_000_000


@pytest.fixture
def asettings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[config.Settings]:
    """Small zips (3 files of ~200 kB fit in one), no freeze by age, immediate staleness; next steps
    are recorded, not sent."""
    capture_sends(monkeypatch)
    current = make_settings(
        tmp_path / "root",
        archive__max_zip_bytes="700000",
        archive__freeze_age="100000",
        reconcile__stale_seconds="0",
    )
    config.reset(current)
    yield current
    reset_catalogs()
    config.reset(None)


def archive_rows(settings: config.Settings) -> list:
    with get_catalog(settings.catalog_url).read() as conn:
        return conn.execute(select(archives).order_by(archives.c.serial)).mappings().all()


def test_files_fill_serials_in_order_and_never_exceed_the_limit(asettings: config.Settings) -> None:
    ids = add_received(asettings, 7)
    assert [archive_tasks.zip_file(i) for i in ids] == ["zipped"] * 7
    rows = archive_rows(asettings)
    assert [(r["serial"], r["nfiles"]) for r in rows] == [(1, 3), (2, 3), (3, 1)]
    assert all(r["size"] <= 700_000 for r in rows)
    assert [r["path"] for r in rows] == [PATTERN % s for s in (1, 2, 3)]
    assert_consistent(asettings, ids)
    assert archive_tasks.zip_file(ids[0]) == "already"


def test_freeze_all_but_newest_then_newest_by_age(asettings: config.Settings) -> None:
    ids = add_received(asettings, 7)
    for i in ids:
        archive_tasks.zip_file(i)
    assert archive_tasks.freeze() == {"frozen": 2}
    rows = archive_rows(asettings)
    assert [r["state"] for r in rows] == [states.FROZEN, states.FROZEN, states.OPEN]
    for r in rows[:2]:
        local = asettings.zip_root / r["path"]
        assert r["adler32"] == storage.adler32_file(local) and r["size"] == local.stat().st_size
    # a frozen serial is never added to: a new file goes to the open one
    more = add_received(asettings, 1, start=100)
    archive_tasks.zip_file(more[0])
    assert [r["nfiles"] for r in archive_rows(asettings)] == [3, 3, 2]
    with get_catalog(asettings.catalog_url).begin() as conn:
        conn.execute(update(archives).where(archives.c.serial == 3).values(first_write=time.time() - 200_000))
    assert archive_tasks.freeze() == {"frozen": 1}
    assert {r["state"] for r in archive_rows(asettings)} == {states.FROZEN}
    assert_consistent(asettings, ids + more)


def test_concurrent_workers_archive_every_file_exactly_once(asettings: config.Settings) -> None:
    ids = add_received(asettings, 12, size=100_000)
    errors: list[BaseException] = []

    def work(chunk: list[int]) -> None:
        try:
            for fid in chunk:
                archive_tasks.zip_file(fid)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    # every file is sent to three workers at once, in different orders
    threads = [threading.Thread(target=work, args=(order,)) for order in (ids, ids[::-1], ids[3:] + ids[:3])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert_consistent(asettings, ids)


def test_damaged_open_zip_is_rebuilt_before_the_next_append(asettings: config.Settings) -> None:
    ids = add_received(asettings, 3)
    archive_tasks.zip_file(ids[0])
    archive_tasks.zip_file(ids[1])
    local = asettings.zip_root / (PATTERN % 1)
    with open(local, "r+b") as fh:
        fh.write(b"\0" * 64)
    assert archive_tasks.zip_file(ids[2]) == "zipped"
    assert_consistent(asettings, ids)


def test_missing_repository_file_is_reported_and_the_chain_goes_on(asettings: config.Settings) -> None:
    ids = add_received(asettings, 2)
    with get_catalog(asettings.catalog_url).read() as conn:
        rel = conn.execute(select(files.c.path).where(files.c.id == ids[0])).scalar_one()
    (asettings.repository / rel).unlink()
    assert archive_tasks.zip_file(ids[0]) == "source-missing"
    assert archive_tasks.zip_file(ids[1]) == "zipped"
    catalog = get_catalog(asettings.catalog_url)
    assert "missing" in catalog.get("file", ids[0])["reason"]
    with catalog.read() as conn:
        assert conn.execute(select(alarms.c.key).where(alarms.c.key == f"zip:file:{ids[0]}")).first()


def test_changed_repository_file_is_not_archived(asettings: config.Settings) -> None:
    ids = add_received(asettings, 2)
    with get_catalog(asettings.catalog_url).read() as conn:
        rel = conn.execute(select(files.c.path).where(files.c.id == ids[0])).scalar_one()
    data = bytearray((asettings.repository / rel).read_bytes())
    data[100] ^= 0xFF
    (asettings.repository / rel).write_bytes(bytes(data))
    assert archive_tasks.zip_file(ids[0]) == "corrupt"
    assert archive_tasks.zip_file(ids[1]) == "zipped"
    assert_consistent(asettings, ids[1:])


KILL_MID_APPEND = """
import os, signal
from t0dqm.formats import zipper
def half(src, dst, chunk=None, checksums=()):
    dst.write(src.read(50_000))
    dst._fileobj.flush()
    os.kill(os.getpid(), signal.SIGKILL)
zipper.copy_stream = half
from t0dqm.tasks.archive import zip_file
zip_file({fid})
"""

KILL_BEFORE_COMMIT = """
import os, signal
from t0dqm.formats import zipper
real = zipper.append
def append_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
zipper.append = append_then_die
from t0dqm.tasks.archive import zip_file
zip_file({fid})
"""


@pytest.mark.parametrize("script", [KILL_MID_APPEND, KILL_BEFORE_COMMIT], ids=["mid-append", "before-commit"])
def test_worker_killed_while_zipping_loses_nothing(asettings: config.Settings, script: str) -> None:
    ids = add_received(asettings, 3)
    archive_tasks.zip_file(ids[0])
    assert run_killed(asettings, script.format(fid=ids[1])) == -9
    catalog = get_catalog(asettings.catalog_url)
    assert catalog.get("file", ids[1])["state"] == states.RECEIVED  # nothing half-committed
    assert catalog.get("archive", archive_rows(asettings)[0]["id"])["nfiles"] == 1
    expire_leases(asettings)
    reconcile(asettings, only=("zip",))
    assert_consistent(asettings, ids)
    with zipfile.ZipFile(asettings.zip_root / (PATTERN % 1)) as zf:
        assert len(zf.namelist()) == 3


def test_worker_killed_while_zipping_then_freeze_repairs(asettings: config.Settings) -> None:
    ids = add_received(asettings, 2)
    archive_tasks.zip_file(ids[0])
    run_killed(asettings, KILL_MID_APPEND.format(fid=ids[1]))
    expire_leases(asettings)
    arch = archive_rows(asettings)[0]
    assert archive_tasks.freeze(archive_ids=[arch["id"]]) == {"frozen": 1}
    frozen = get_catalog(asettings.catalog_url).get("archive", arch["id"])
    local = asettings.zip_root / arch["path"]
    assert frozen["adler32"] == storage.adler32_file(local) and frozen["size"] == local.stat().st_size
    reconcile(asettings, only=("zip",))  # the killed file goes to the next serial
    rows = archive_rows(asettings)
    assert [(r["serial"], r["nfiles"]) for r in rows] == [(1, 1), (2, 1)]
    assert_consistent(asettings, ids)
