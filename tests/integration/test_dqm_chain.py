"""End to end through a real Redis and a real worker: uploads -> receive -> repository -> index."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from t0dqm import config
from t0dqm.catalog.db import files, get_catalog, quarantine
from t0dqm.celery import app
from t0dqm.dev import simulate
from t0dqm.steps import index as dqmindex


def _wait(predicate, timeout: float = 120.0, step: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        app.send_task("t0dqm.tasks.receive.scan")  # what beat does every scan_interval
        time.sleep(step)
    return predicate()


def test_uploads_reach_repository_and_index(celery_stack: config.Settings, tmp_path: Path) -> None:
    settings = celery_stack
    n_good, n_bad = 24, 6
    manifest = simulate.simulate(
        tmp_path / "producer", n_good, seed=11, broken=n_bad, n_hists=40, dropbox=settings.dropbox
    )
    cat = get_catalog(settings.catalog_url)

    def settled() -> bool:
        with cat.read() as conn:
            done = conn.execute(
                select(files.c.id).where(files.c.index_state.in_(["indexed", "failed"]))
            ).all()
            bad = conn.execute(select(quarantine.c.id)).all()
        return len(done) == n_good and len(bad) == n_bad

    assert _wait(settled), "chain did not settle"
    with cat.read() as conn:
        rows = [dict(r) for r in conn.execute(select(files)).mappings()]
        quarantined = [dict(r) for r in conn.execute(select(quarantine)).mappings()]
    # every good upload is filed once, in the repository, indexed
    good = {e["name"]: e for e in manifest if not e["broken"]}
    assert sorted(r["name"] for r in rows) == sorted(good)
    assert Counter(r["index_state"] for r in rows) == {"indexed": n_good}
    for r in rows:
        path = settings.repository / r["path"]
        assert path.exists() and Path(str(path) + ".dqminfo").exists()
        assert r["md5"] == good[r["name"]]["md5"] and r["size"] == good[r["name"]]["size"]
        assert r["cls"] == good[r["name"]]["class"]
    samples = dqmindex.Index(settings).samples()
    assert sorted(s["file_id"] for s in samples) == sorted(r["id"] for r in rows)
    assert all(s["n_mes"] > 0 for s in samples)
    # every bad upload is quarantined with its reason, still in the dropbox
    bad = {e["name"]: e for e in manifest if e["broken"]}
    assert sorted(q["name"] for q in quarantined) == sorted(bad)
    for q in quarantined:
        assert bad[q["name"]]["reason"] in q["reason"] or q["reason"].startswith("bad name")
        assert (settings.dropbox / q["path"]).exists()
        assert (settings.dropbox / (q["path"] + ".bad")).exists()
    # nothing left behind: no candidate in the dropbox, no partial index
    from t0dqm.formats import dropbox

    assert dropbox.scan(settings.dropbox) == []
    assert list(dqmindex.partial_dir(settings).glob("*.sqlite")) == []
