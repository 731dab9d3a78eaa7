"""Catalog: conditional updates, races between processes, leases, schema upgrade; SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing as mp
import time

import pytest
from sqlalchemy import insert, select

from t0dqm.catalog.db import Catalog, archives, audit, files
from t0dqm.catalog.schema import head


def new_file(cat: Catalog, path: str = "a/DQM_V0001_R000123456.root") -> int:
    now = time.time()
    with cat.begin() as conn:
        return conn.execute(
            insert(files).values(
                path=path,
                name=path.rsplit("/", 1)[-1],
                cls="online_data",
                run=123456,
                version=1,
                dataset="/Global/Online/ALL",
                size=10,
                adler32="00000001",
                mtime=now,
                state="received",
                index_state="pending",
                created_at=now,
                updated_at=now,
                attempts=0,
            )
        ).inserted_primary_key[0]


def _race(url: str, row_id: int, barrier, results) -> None:
    cat = Catalog(url, host="racer")
    barrier.wait()
    with cat.begin() as conn:
        won = cat.transition(conn, "file", row_id, "received", "zipped")
    results.put(won)
    barrier.wait()
    cat.dispose()


def _claim(url: str, row_id: int, barrier, results) -> None:
    cat = Catalog(url, host="racer")
    barrier.wait()
    results.put(cat.claim("file", row_id, "received", 60))
    barrier.wait()  # both alive until both tried: a holder that exits frees its claim (no heartbeat)
    cat.dispose()


@pytest.mark.parametrize("worker", [_race, _claim])
def test_two_processes_one_winner(catalog_url: str, worker) -> None:
    cat = Catalog(catalog_url)
    cat.upgrade()
    wins = []
    for round_ in range(5):
        row_id = new_file(cat, f"r{round_}/DQM_V0001_R000123456.root")
        ctx = mp.get_context("spawn")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=worker, args=(catalog_url, row_id, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        outcome = sorted(results.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(timeout=30)
        wins.append(outcome)
    assert all(o == [False, True] for o in wins), wins
    cat.dispose()


def test_transition_audits_and_refuses_wrong_state(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.upgrade()
    row_id = new_file(cat)
    with cat.begin() as conn:
        assert cat.transition(conn, "file", row_id, "received", "zipped", detail="test")
        assert not cat.transition(conn, "file", row_id, "received", "zipped")
    with cat.read() as conn:
        rows = conn.execute(select(audit).where(audit.c.entity_id == row_id)).mappings().all()
    assert [(r["from_state"], r["to_state"]) for r in rows] == [("received", "zipped")]
    cat.dispose()


def test_leases_exclusive_and_expiring(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    cat.upgrade()
    assert cat.acquire_lease("zip:a", "w1", 60)
    assert not cat.acquire_lease("zip:a", "w2", 60)
    assert cat.acquire_lease("zip:a", "w1", 60)  # renewal by the holder
    cat.release_lease("zip:a", "w1")
    assert cat.acquire_lease("zip:a", "w2", 0.01)
    time.sleep(0.05)
    assert cat.acquire_lease("zip:a", "w3", 60)  # expired lease taken over
    cat.dispose()


def test_upgrade_is_idempotent_and_versioned(catalog_url: str) -> None:
    cat = Catalog(catalog_url)
    assert cat.revision() is None
    assert cat.upgrade() == head()
    assert cat.upgrade() == head()
    assert cat.revision() == head()
    now = time.time()
    with cat.begin() as conn:
        conn.execute(
            insert(archives).values(
                path="p_S0001.zip",
                pattern="p_S%04d.zip",
                serial=1,
                state="open",
                nfiles=0,
                size=0,
                tries=0,
                created_at=now,
                updated_at=now,
            )
        )
    with pytest.raises(Exception), cat.begin() as conn:  # noqa: B017 - unique (pattern, serial) is the guard
        conn.execute(
            insert(archives).values(
                path="p_S0001b.zip",
                pattern="p_S%04d.zip",
                serial=1,
                state="open",
                nfiles=0,
                size=0,
                tries=0,
                created_at=now,
                updated_at=now,
            )
        )
    cat.dispose()


def test_claim_of_a_dead_local_process_is_taken_over(catalog_url: str) -> None:
    """Same machine (boot id and pid namespace in the holder's heartbeat): its death is seen at once."""
    import subprocess

    from t0dqm.identity import locator

    cat = Catalog(catalog_url)
    cat.upgrade()
    row_id = new_file(cat)
    child = subprocess.Popen(["sleep", "30"])
    holder = f"somehost:{child.pid}:abcdefghij"
    cat.beat(holder, "worker", locator(child.pid), time.time())  # fresh heartbeat
    owner = f"{holder}:1"
    assert cat.claim("file", row_id, "received", 3600, owner=owner)
    assert cat.acquire_lease("zip:x", owner, 3600)
    assert not cat.claim("file", row_id, "received", 60)  # the holder lives: the claim stands
    assert not cat.acquire_lease("zip:x", "other", 60)
    child.kill()
    child.wait()
    assert cat.claim("file", row_id, "received", 60)  # the holder died: taken over at once
    assert cat.acquire_lease("zip:x", "other", 60)
    legacy = f"{cat.host}:{child.pid}:1"  # an owner without a heartbeat identity only expires
    assert cat.acquire_lease("zip:y", legacy, 3600) and not cat.acquire_lease("zip:y", "other", 60)
    with cat.read() as conn:
        details = [
            r.detail
            for r in conn.execute(
                select(audit.c.detail)
                .where(audit.c.action.in_(["claim-takeover", "lease-takeover"]))
                .order_by(audit.c.id)
            )
        ]
    assert len(details) == 2 and all(f"from {owner}: process gone (same machine)" in d for d in details)
    cat.dispose()
