"""Stage, verify, clean and index backup against a real XRootD server as the archive endpoint."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from t0dqm import config, storage
from t0dqm.catalog import states
from t0dqm.catalog.db import alarms, archives, audit, get_catalog, reset_catalogs
from t0dqm.dev import services
from t0dqm.steps import archive as steps_archive
from t0dqm.steps import tape as steps_tape
from t0dqm.tasks import archive as archive_tasks
from t0dqm.tasks import tape
from tests.conftest import make_settings
from tests.integration.archive_util import (
    add_received,
    assert_consistent,
    capture_sends,
    expire_leases,
    reconcile,
    remote_path,
    run_killed,
)

OVERRIDES = {
    "archive__max_zip_bytes": "700000",
    "archive__freeze_age": "100000",
    "archive__verify_delay": "0",
    "archive__retry_base": "0",
    "archive__stage_max_tries": "3",
    "reconcile__stale_seconds": "0",
}


def tsettings_for(root: Path, endpoint: str, **extra: str) -> config.Settings:
    current = make_settings(root, archive_endpoint=endpoint, **{**OVERRIDES, **extra})
    config.reset(current)
    return current


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list:
    return capture_sends(monkeypatch)


@pytest.fixture
def tsettings(tmp_path: Path, xrootd_dir: str, sent: list) -> Iterator[config.Settings]:
    yield tsettings_for(tmp_path / "root", xrootd_dir)
    reset_catalogs()
    config.reset(None)


def frozen_archives(settings: config.Settings, n: int = 4) -> tuple[list[int], list[int]]:
    """n received files zipped (two serials) and frozen; returns (file ids, archive ids)."""
    ids = add_received(settings, n)
    for fid in ids:
        assert archive_tasks.zip_file(fid) == "zipped"
    with get_catalog(settings.catalog_url).read() as conn:
        aids = [r[0] for r in conn.execute(select(archives.c.id).order_by(archives.c.serial))]
    archive_tasks.freeze(archive_ids=aids)
    return ids, aids


def state(settings: config.Settings, aid: int) -> str:
    return get_catalog(settings.catalog_url).get("archive", aid)["state"]


def active_alarms(settings: config.Settings) -> list:
    with get_catalog(settings.catalog_url).read() as conn:
        return conn.execute(select(alarms).where(alarms.c.active.is_(True))).mappings().all()


def test_received_to_verified_then_cleaned(tsettings: config.Settings) -> None:
    ids, aids = frozen_archives(tsettings)
    for aid in aids:
        assert tape.stage(aid) == states.COPIED
        arch = get_catalog(tsettings.catalog_url).get("archive", aid)
        target = storage.join(tsettings.archive_endpoint, arch["path"])
        assert storage.checksum(target, 10) == arch["adler32"]
        assert tape.verify(aid) == states.VERIFIED  # a plain XRootD server has no tape: final
        assert tape.stage(aid) == states.VERIFIED and tape.verify(aid) == states.VERIFIED  # idempotent
    assert tape.clean_zips() == {"cleaned": 2, "missing": 0, "refused": 0, "dry_run": 0}
    for aid in aids:
        arch = get_catalog(tsettings.catalog_url).get("archive", aid)
        assert arch["state"] == states.CLEANED and not (tsettings.zip_root / arch["path"]).exists()
    with get_catalog(tsettings.catalog_url).read() as conn:
        rules = [r[0] for r in conn.execute(select(audit.c.rule).where(audit.c.action == "delete"))]
    assert rules == ["archive-clean", "archive-clean"]
    assert_consistent(tsettings, ids)
    assert active_alarms(tsettings) == []


def test_restore_fetches_back_and_checks(tsettings: config.Settings, tmp_path: Path) -> None:
    from t0dqm.cli import cli

    _ids, aids = frozen_archives(tsettings, 2)
    tape.stage(aids[0])
    arch = get_catalog(tsettings.catalog_url).get("archive", aids[0])
    with get_catalog(tsettings.catalog_url).read() as conn:
        from t0dqm.catalog.db import members

        name = conn.execute(select(members.c.name).where(members.c.archive_id == aids[0])).scalars().first()
    runner = CliRunner()
    env = {"T0DQM_ROOT": str(tsettings.root), "T0DQM_ARCHIVE_ENDPOINT": tsettings.archive_endpoint}
    out = runner.invoke(cli, ["archive", "ls"], env=env)
    assert out.exit_code == 0, out.output
    assert "copied" in out.output and "2 file(s)" in out.output
    out = runner.invoke(cli, ["archive", "ls", "--state", "frozen"], env=env)
    assert "0 archive(s)" in out.output
    dest = tmp_path / "restore"
    zip_name = Path(arch["path"]).name
    out = runner.invoke(cli, ["archive", "restore", zip_name, "--to", str(dest), "--member", name], env=env)
    assert out.exit_code == 0, out.output
    assert storage.adler32_file(dest / zip_name) == arch["adler32"]
    assert (dest / name).read_bytes() == (
        tsettings.repository / get_catalog(tsettings.catalog_url).get("file", _ids[0])["path"]
    ).read_bytes()
    out = runner.invoke(cli, ["archive", "restore", zip_name, "--to", str(dest)], env=env)
    assert out.exit_code != 0 and "exists" in out.output


def corrupt_remote(server: services.Service, endpoint: str, rel: str) -> None:
    """Replace the server's copy by different bytes of the same size, as a new file with a new mtime
    (XRootD caches checksums by whole-second mtime)."""
    path = remote_path(server.data_dir, endpoint, rel)
    st = path.stat()
    size = st.st_size
    path.unlink()
    path.write_bytes(os.urandom(size))
    os.chown(path, st.st_uid, st.st_gid)
    os.utime(path, (st.st_mtime + 7, st.st_mtime + 7))


def test_corrupted_copy_is_detected_and_restaged(
    tsettings: config.Settings, xrootd_server: services.Service, sent: list
) -> None:
    _ids, aids = frozen_archives(tsettings, 2)
    aid = aids[0]
    assert tape.stage(aid) == states.COPIED
    arch = get_catalog(tsettings.catalog_url).get("archive", aid)
    corrupt_remote(xrootd_server, tsettings.archive_endpoint, arch["path"])
    target = storage.join(tsettings.archive_endpoint, arch["path"])
    assert storage.checksum(target, 10) != arch["adler32"]
    assert tape.verify(aid) == "restage"
    assert state(tsettings, aid) == states.FROZEN and storage.stat(target, 10) is None
    assert ("t0dqm.tasks.tape.stage", (aid,)) in sent
    assert tape.stage(aid) == states.COPIED and tape.verify(aid) == states.VERIFIED
    assert storage.checksum(target, 10) == arch["adler32"]


def test_repeatedly_bad_copies_end_in_failed_with_one_alarm(
    tsettings: config.Settings, xrootd_server: services.Service
) -> None:
    _ids, aids = frozen_archives(tsettings, 4)
    for aid in aids:
        for _ in range(3):
            assert tape.stage(aid) == states.COPIED
            corrupt_remote(
                xrootd_server,
                tsettings.archive_endpoint,
                get_catalog(tsettings.catalog_url).get("archive", aid)["path"],
            )
            if tape.verify(aid) == states.FAILED:
                break
        assert state(tsettings, aid) == states.FAILED
    found = active_alarms(tsettings)
    assert [a["key"] for a in found] == [steps_archive.TROUBLE_ALARM]
    assert found[0]["message"].startswith("2 archive(s) need attention (2 failed)")


@pytest.fixture
def fine_timeouts() -> None:
    """XRootD checks timeouts every 15 s by default; a dead endpoint should fail within seconds."""
    from XRootD import client

    client.EnvPutInt("TimeoutResolution", 1)


@pytest.mark.usefixtures("fine_timeouts")
def test_outage_delays_then_completes(tmp_path: Path, xrootd_dir: str, sent: list) -> None:
    down = f"root://127.0.0.1:{services.free_port()}//store/down"
    settings = tsettings_for(tmp_path / "root", down, timeouts__io="2", timeouts__copy="5")
    try:
        _ids, aids = frozen_archives(settings, 2)
        aid = aids[0]
        assert tape.stage(aid) == "retry"
        arch = get_catalog(settings.catalog_url).get("archive", aid)
        assert arch["state"] == states.FROZEN and arch["tries"] == 1 and arch["next_try_at"] is not None
        assert arch["reason"]
        settings = tsettings_for(tmp_path / "root", xrootd_dir)  # the endpoint is back
        assert tape.verify_due() == {"stage": 1, "verify": 0}
        assert tape.stage(aid) == states.COPIED
        assert tape.verify(aid) == states.VERIFIED
        assert active_alarms(settings) == []
    finally:
        reset_catalogs()
        config.reset(None)


@pytest.mark.usefixtures("fine_timeouts")
def test_outage_past_the_limit_fails_with_one_alarm(tmp_path: Path, sent: list) -> None:
    settings = tsettings_for(
        tmp_path / "root",
        f"root://127.0.0.1:{services.free_port()}//store/down",
        timeouts__io="2",
        timeouts__copy="5",
    )
    try:
        _ids, aids = frozen_archives(settings, 4)
        results = [tape.stage(aid) for aid in aids for _ in range(3)]
        assert results == ["retry", "retry", states.FAILED] * 2
        assert [a["key"] for a in active_alarms(settings)] == [steps_archive.TROUBLE_ALARM]
    finally:
        reset_catalogs()
        config.reset(None)


def test_identical_existing_target_counts_as_copied(tsettings: config.Settings) -> None:
    _ids, aids = frozen_archives(tsettings, 2)
    arch = get_catalog(tsettings.catalog_url).get("archive", aids[0])
    target = storage.join(tsettings.archive_endpoint, arch["path"])
    storage.copy(str(tsettings.zip_root / arch["path"]), target, timeout=30)
    assert tape.stage(aids[0]) == states.COPIED
    with get_catalog(tsettings.catalog_url).read() as conn:
        detail = conn.execute(
            select(audit.c.detail).where(audit.c.entity_id == aids[0], audit.c.to_state == states.COPIED)
        ).scalar_one()
    assert "already present" in detail


def test_conflicting_target_is_left_untouched(tsettings: config.Settings, tmp_path: Path) -> None:
    _ids, aids = frozen_archives(tsettings, 2)
    arch = get_catalog(tsettings.catalog_url).get("archive", aids[0])
    other = tmp_path / "other.zip"
    other.write_bytes(os.urandom(12345))
    target = storage.join(tsettings.archive_endpoint, arch["path"])
    theirs = storage.copy(str(other), target, timeout=30)
    assert tape.stage(aids[0]) == states.CONFLICT
    assert tape.stage(aids[0]) == states.CONFLICT  # and stays so
    assert storage.checksum(target, 10) == theirs and storage.stat(target, 10).size == 12345
    assert (tsettings.zip_root / arch["path"]).exists()
    found = active_alarms(tsettings)
    assert [a["key"] for a in found] == [steps_archive.TROUBLE_ALARM] and "conflict" in found[0]["message"]
    assert tape.clean_zips()["cleaned"] == 0


KILL_MID_COPY = """
import os, signal
from XRootD import client
from XRootD.client.flags import OpenFlags
from t0dqm import storage
def half_then_die(src, dst, **kwargs):
    data = open(src, "rb").read()
    f = client.File()
    status, _ = f.open(dst, OpenFlags.NEW | OpenFlags.MAKEPATH)
    assert status.ok, status.message
    f.write(data[: len(data) // 2])
    f.sync()
    os.kill(os.getpid(), signal.SIGKILL)
storage.copy = half_then_die
from t0dqm.tasks.tape import stage
stage({aid})
"""


def test_worker_killed_mid_copy_then_reconcile_archives_once(tsettings: config.Settings) -> None:
    ids, aids = frozen_archives(tsettings, 2)
    aid = aids[0]
    assert run_killed(tsettings, KILL_MID_COPY.format(aid=aid)) == -9
    arch = get_catalog(tsettings.catalog_url).get("archive", aid)
    target = storage.join(tsettings.archive_endpoint, arch["path"])
    partial = storage.stat(target, 10)
    assert partial is not None and partial.size < arch["size"]  # the killed copy's leftover
    assert arch["state"] == states.FROZEN and arch["tries"] == 1 and arch["claimed_by"]
    # The claim's holder is a dead process of this host: taken over at once, leftover replaced.
    assert tape.stage(aid) == states.COPIED
    expire_leases(tsettings)
    reconcile(tsettings, only=("tape",))
    assert state(tsettings, aid) == states.VERIFIED
    assert storage.checksum(target, 10) == arch["adler32"] and storage.stat(target, 10).size == arch["size"]
    assert active_alarms(tsettings) == []
    assert_consistent(tsettings, ids)


def test_require_tape_keeps_verified_until_a_tape_copy(tmp_path: Path, xrootd_dir: str, sent: list) -> None:
    settings = tsettings_for(tmp_path / "root", xrootd_dir, archive__require_tape="true")
    try:
        _ids, aids = frozen_archives(settings, 2)
        aid = aids[0]
        assert tape.stage(aid) == states.COPIED
        for _ in range(3):
            assert tape.verify(aid) == states.VERIFIED  # the plain server never reports a tape copy
        assert tape.clean_zips()["cleaned"] == 0
        msg = [a["message"] for a in active_alarms(settings)]
        assert len(msg) == 1 and "no tape copy yet" in msg[0]
    finally:
        reset_catalogs()
        config.reset(None)


def test_index_backup_copies_checked_and_keeps_the_last_n(
    tmp_path: Path, xrootd_dir: str, sent: list
) -> None:
    settings = tsettings_for(tmp_path / "root", xrootd_dir, archive__index_backups_kept="2")
    try:
        settings.index_dir.mkdir(parents=True)
        db = sqlite3.connect(settings.index_dir / "offline.sqlite")
        db.execute("create table samples (run int, dataset text)")
        db.executemany("insert into samples values (?, ?)", [(i, f"/A/B{i}/DQMIO") for i in range(1000)])
        db.commit()
        db.close()
        (settings.index_dir / "sub").mkdir()
        (settings.index_dir / "sub" / "streamers.dat").write_bytes(os.urandom(5000))
        for day in ("20240101", "20240102", "20240103"):
            assert tape.backup_index(day=day)["copied"] == 2
        assert tape.backup_index(day="20240103") == {"copied": 0, "unchanged": 2, "dropped": 0}
        base = storage.join(xrootd_dir, steps_tape.BACKUP_DIR)
        assert [e.name for e in storage.listdir(base, 10)] == ["20240102", "20240103"]
        copy = storage.join(base, "20240103", "sub", "streamers.dat")
        assert storage.checksum(copy, 10) == storage.adler32_file(
            settings.index_dir / "sub" / "streamers.dat"
        )
        restored = tmp_path / "restored.sqlite"
        storage.copy(storage.join(base, "20240103", "offline.sqlite"), str(restored), timeout=30)
        assert sqlite3.connect(restored).execute("select count(*) from samples").fetchone() == (1000,)
    finally:
        reset_catalogs()
        config.reset(None)


def test_verify_waits_for_the_delay(tmp_path: Path, xrootd_dir: str, sent: list) -> None:
    settings = tsettings_for(tmp_path / "root", xrootd_dir, archive__verify_delay="86400")
    try:
        _ids, aids = frozen_archives(settings, 4)
        assert tape.stage(aids[0]) == states.COPIED
        assert tape.verify(aids[0]) == "not-due"
        assert tape.verify_due() == {"stage": 1, "verify": 0}  # the other, still frozen, is due
        with get_catalog(settings.catalog_url).begin() as conn:
            conn.execute(
                update(archives).where(archives.c.id == aids[0]).values(copied_at=time.time() - 86401)
            )
        assert tape.verify_due()["verify"] == 1 and tape.verify(aids[0]) == states.VERIFIED
    finally:
        reset_catalogs()
        config.reset(None)


def test_chain_through_a_real_worker(celery_stack: config.Settings, tmp_path: Path, xrootd_dir: str) -> None:
    """received -> zipped -> frozen -> copied -> verified, each step sent by the previous one over
    Redis to the in-process worker."""
    from t0dqm import celery as t0celery

    settings = make_settings(
        celery_stack.root, broker_url=celery_stack.broker_url, archive_endpoint=xrootd_dir, **OVERRIDES
    )
    t0celery.reload(settings)
    ids = add_received(settings, 5)
    for fid in ids:
        t0celery.app.signature("t0dqm.tasks.archive.zip_file").delay(fid)
    catalog = get_catalog(settings.catalog_url)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and catalog.counts("file").get(states.ZIPPED, 0) < len(ids):
        time.sleep(0.1)
    with catalog.read() as conn:
        aids = [r[0] for r in conn.execute(select(archives.c.id))]
    t0celery.app.signature("t0dqm.tasks.archive.freeze").delay(archive_ids=aids)
    while time.monotonic() < deadline and catalog.counts("archive").get(states.VERIFIED, 0) < len(aids):
        time.sleep(0.1)
    assert catalog.counts("archive") == {states.VERIFIED: len(aids)} and len(aids) == 2
    assert_consistent(settings, ids)
