"""Helpers for the archive and tape tests: received files inserted straight into the catalog."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

from sqlalchemy import insert, select, update

from t0dqm import config
from t0dqm.catalog import states
from t0dqm.catalog.db import archives, files, get_catalog, leases, members
from t0dqm.steps.reconcile import RECOVERERS

PATTERN = "OfflineData/Run2024A/ZeroBias/DQM_Offline_Run2024A_ZeroBias_R0003800xx_S%04d.zip"


def add_received(
    settings: config.Settings, n: int, size: int = 200_000, pattern: str = PATTERN, start: int = 0
) -> list[int]:
    """Write ``n`` files into the repository and insert their rows in state received."""
    catalog = get_catalog(settings.catalog_url)
    ids = []
    for i in range(start, start + n):
        run = 380000 + i
        name = f"DQM_V0001_R{run:09d}__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
        rel = f"OfflineData/Run2024A/ZeroBias/0003800xx/{name}"
        path = settings.repository / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size + i)
        path.write_bytes(data)
        now = time.time()
        with catalog.begin() as conn:
            result = conn.execute(
                insert(files).values(
                    path=rel,
                    name=name,
                    cls="offline_data",
                    run=run,
                    version=1,
                    dataset="/ZeroBias/Run2024A-PromptReco-v1/DQMIO",
                    size=len(data),
                    adler32=f"{zlib.adler32(data):08x}",
                    mtime=now,
                    zippat=pattern,
                    state=states.RECEIVED,
                    index_state=states.INDEX_PENDING,
                    created_at=now,
                    updated_at=now,
                    attempts=0,
                )
            )
            ids.append(int(result.inserted_primary_key[0]))
    return ids


def assert_consistent(settings: config.Settings, file_ids: list[int]) -> None:
    """Every file is in exactly one archive; every zip on disk holds exactly its catalog members."""
    catalog = get_catalog(settings.catalog_url)
    with catalog.read() as conn:
        rows = conn.execute(select(members.c.file_id, members.c.archive_id, members.c.name)).all()
        arch = {r.id: r for r in conn.execute(select(archives)).all()}
        frows = {r.id: r for r in conn.execute(select(files)).all()}
    member_ids = [r.file_id for r in rows]
    assert sorted(member_ids) == sorted(file_ids), "each file exactly once"
    for fid in file_ids:
        assert frows[fid].state == states.ZIPPED
        assert frows[fid].archive_id == next(r.archive_id for r in rows if r.file_id == fid)
    for a in arch.values():
        names = sorted(r.name for r in rows if r.archive_id == a.id)
        assert a.nfiles == len(names)
        local = settings.zip_root / a.path
        if a.state == states.CLEANED or not names:
            continue
        with zipfile.ZipFile(local) as zf:
            assert sorted(zf.namelist()) == names
            assert zf.testzip() is None
        assert local.stat().st_size == a.size


def expire_leases(settings: config.Settings) -> None:
    """What time does to a killed worker's leases and claims."""
    catalog = get_catalog(settings.catalog_url)
    past = time.time() - 1
    with catalog.begin() as conn:
        conn.execute(update(leases).values(expires_at=past))
        conn.execute(update(archives).where(archives.c.claimed_until.is_not(None)).values(claimed_until=past))
        conn.execute(update(files).where(files.c.claimed_until.is_not(None)).values(claimed_until=past))


def reconcile(settings: config.Settings, only: tuple[str, ...] = ("zip", "freeze", "tape")) -> int:
    """Run the recoverers and their resumed tasks in process (what the reconcile beat sends)."""
    from t0dqm.celery import app

    catalog = get_catalog(settings.catalog_url)
    with catalog.read() as conn:
        resumes = [
            r for name, fn in RECOVERERS.items() if name in only for r in fn(conn, settings, time.time())
        ]
    for resume in resumes:
        app.tasks[resume.task](*resume.args)
    return len(resumes)


def run_killed(settings: config.Settings, code: str) -> int:
    """Run ``code`` in a child python with these settings; return its exit status (-9 when killed)."""
    env = dict(os.environ)
    env.update(
        {f"T0DQM_{k.upper()}": str(v) for k, v in {"root": settings["root"], "flavour": "dev"}.items()}
    )
    for key, value in settings["archive"].items():
        env[f"T0DQM_ARCHIVE__{key.upper()}"] = str(value)
    for key in ("archive_endpoint", "catalog_url"):
        if settings[key]:
            env[f"T0DQM_{key.upper()}"] = settings[key]
    env["T0DQM_RECONCILE__STALE_SECONDS"] = str(settings["reconcile"]["stale_seconds"])
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr)
    return proc.returncode


def capture_sends(monkeypatch: object) -> list[tuple[str, tuple]]:
    """Record the next steps tasks send instead of going to a broker (tests drive them explicitly)."""
    from t0dqm.steps import tape
    from t0dqm.steps.next import Next
    from t0dqm.tasks.base import T0Task

    sent: list[tuple[str, tuple]] = []

    def enqueue(self: object, task: object, *args: object, **kwargs: object) -> None:
        sent.append((getattr(task, "task", str(task)), args))

    def enqueue_many(self: object, items: list[tuple[object, tuple, dict]], **_: object) -> int:
        for task, args, _kwargs in items:
            sent.append((getattr(task, "task", str(task)), tuple(args)))
        return len(items)

    monkeypatch.setattr(T0Task, "enqueue", enqueue)  # type: ignore[attr-defined]
    monkeypatch.setattr(T0Task, "enqueue_many", enqueue_many)  # type: ignore[attr-defined]
    monkeypatch.setattr(
        tape,
        "_later",  # type: ignore[attr-defined]
        lambda name, archive_id, delay: [Next(name, (archive_id,))],
    )
    return sent


def remote_path(data_dir: Path, endpoint: str, rel: str) -> Path:
    """Where the XRootD server keeps ``endpoint``/``rel`` on its disk."""
    from t0dqm import storage

    _server, path = storage.split_url(storage.join(endpoint, rel))
    return data_dir / path.lstrip("/")
