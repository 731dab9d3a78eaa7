"""Liveness by heartbeat (principle 6) on a real PostgreSQL catalog: a holder is dead when its heartbeat
is stale, whatever hosts are called; takeovers are audited; plain celery workers and pool children beat.
Staleness is driven by writing heartbeat times, never by waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from t0dqm import heartbeat
from t0dqm.catalog.db import Catalog, audit, db_now, files, heartbeats
from t0dqm.catalog.recovery import dead_claim_ids
from t0dqm.dev.hosts import can_rename, on_host
from t0dqm.identity import locator
from tests.integration.catalog.test_db import new_file
from tests.integration.workerproc import REPO, t0dqm_env

CLAIMANT = r"""
import json, socket, sys
from t0dqm.catalog.db import Catalog
from t0dqm.identity import process_identity
cat = Catalog(sys.argv[1])
won = cat.claim("file", int(sys.argv[2]), "received", 3600)
print(json.dumps({"won": won, "hostname": socket.gethostname(), "identity": process_identity()}), flush=True)
if len(sys.argv) > 3:
    sys.stdin.read()  # hold the claim until told to go
"""

FOREIGN = "0f0f0f0f-other-machine/4026531836/{pid}/12345"  # a locator of another machine


@pytest.fixture
def cat(pg_url: str) -> Catalog:
    catalog = Catalog(pg_url)
    catalog.upgrade()
    yield catalog
    catalog.dispose()


def claim_from(
    host: str, cat: Catalog, row_id: int, tmp_path: Path, hold: bool = False
) -> subprocess.Popen[str]:
    argv = [sys.executable, "-c", CLAIMANT, cat.url, str(row_id)] + (["hold"] if hold else [])
    env = t0dqm_env(tmp_path / "root", T0DQM_CATALOG_URL=cat.url)
    return on_host(host, argv, env, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def outcome(proc: subprocess.Popen[str]) -> dict:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"claimant said nothing (rc {proc.poll()})"
    return json.loads(line)


def remote_holder(cat: Catalog, host: str, pid: int, age: float) -> str:
    """A holder process on another machine whose last heartbeat is ``age`` seconds old; its owner string."""
    identity = f"{host}:{pid}:abcdefghij"
    cat.beat(identity, "worker-child", FOREIGN.format(pid=pid), time.time())
    with cat.begin() as conn:
        conn.execute(
            update(heartbeats).where(heartbeats.c.identity == identity).values(beat_at=db_now(conn) - age)
        )
    return f"{identity}:140000"


def takeovers(cat: Catalog) -> list[dict]:
    with cat.read() as conn:
        return [
            dict(r) for r in conn.execute(select(audit).where(audit.c.action == "claim-takeover")).mappings()
        ]


def test_stale_holder_taken_over_from_a_host_with_another_name(cat: Catalog, tmp_path: Path) -> None:
    row_id = new_file(cat)
    owner = remote_holder(cat, "hostA", 4_000_000, age=cat.stale_after + 1)
    assert cat.claim("file", row_id, "received", 3600, owner=owner)
    proc = claim_from("hostB", cat, row_id, tmp_path)
    result = outcome(proc)
    proc.wait(60)
    assert result["won"] is True
    assert result["identity"].startswith("hostB:")
    if can_rename():
        assert result["hostname"] == "hostB"
    assert cat.get("file", row_id)["claimed_by"].startswith(result["identity"] + ":")
    [row] = takeovers(cat)
    assert row["entity_id"] == row_id and row["host"] == "hostB"
    assert row["detail"].startswith(f"from {owner}: heartbeat stale for ")


def test_live_holder_with_the_same_short_hostname_keeps_its_claim(cat: Catalog, tmp_path: Path) -> None:
    """hostA on another machine (a pid that does not exist here) with a fresh heartbeat: a process
    also called hostA must not take its claim; once the heartbeat is stale, it may."""
    row_id = new_file(cat)
    owner = remote_holder(cat, "hostA", 4_000_001, age=0)
    assert cat.claim("file", row_id, "received", 3600, owner=owner)
    proc = claim_from("hostA", cat, row_id, tmp_path)
    assert outcome(proc)["won"] is False
    proc.wait(60)
    assert cat.get("file", row_id)["claimed_by"] == owner and takeovers(cat) == []
    with cat.begin() as conn:  # the remote host stops beating
        conn.execute(update(heartbeats).values(beat_at=db_now(conn) - cat.stale_after - 1))
    proc = claim_from("hostA", cat, row_id, tmp_path)
    assert outcome(proc)["won"] is True
    proc.wait(60)
    assert len(takeovers(cat)) == 1


def test_real_holder_killed_is_taken_over_and_alive_is_not(cat: Catalog, tmp_path: Path) -> None:
    """Two processes named hostA (separate UTS namespaces when root): the live one's claim stands;
    after kill -9 its heartbeat row is still fresh, yet on this same machine its death is a fact."""
    row_id = new_file(cat)
    holder = claim_from("hostA", cat, row_id, tmp_path, hold=True)
    try:
        first = outcome(holder)
        assert first["won"] is True
        rival = claim_from("hostA", cat, row_id, tmp_path)
        assert outcome(rival)["won"] is False
        rival.wait(60)
        os.kill(int(first["identity"].split(":")[1]), signal.SIGKILL)  # the python process itself
        holder.wait(60)  # unshare --fork returns once its child is dead and reaped
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(60)
    with cat.read() as conn:
        assert (
            conn.execute(
                select(heartbeats.c.identity).where(heartbeats.c.identity == first["identity"])
            ).scalar()
            == first["identity"]
        )  # not cleaned up
    rival = claim_from("hostC", cat, row_id, tmp_path)
    assert outcome(rival)["won"] is True
    rival.wait(60)
    [row] = takeovers(cat)
    assert "process gone (same machine)" in row["detail"]


def test_recovery_finds_dead_holders_on_any_host(cat: Catalog) -> None:
    ids = [new_file(cat, f"d{i}/DQM_V0001_R000123456.root") for i in range(3)]
    dead = remote_holder(cat, "hostA", 4_000_002, age=cat.stale_after + 5)
    live = remote_holder(cat, "hostZ", 4_000_003, age=0)
    assert cat.claim("file", ids[0], "received", 3600, owner=dead)
    assert cat.claim("file", ids[1], "received", 3600, owner=live)
    assert cat.claim("file", ids[2], "received", 3600, owner="legacy-host:1:2")  # no identity: expires only
    with cat.read() as conn:
        assert dead_claim_ids(conn, files, "state", ["received"], time.time()) == [ids[0]]


def test_ensure_beats_synchronously_and_a_clean_stop_forgets(cat: Catalog) -> None:
    hb = heartbeat.ensure(cat.url, role="cli")
    try:
        with cat.begin() as conn:
            conn.execute(update(heartbeats).values(beat_at=0.0))
        hb.beat()
        with cat.read() as conn:
            row = (
                conn.execute(select(heartbeats).where(heartbeats.c.identity == hb.identity)).mappings().one()
            )
            now = db_now(conn)
        assert row["role"] == "cli" and now - 60 < row["beat_at"] <= now
        assert row["locator"] == locator() and row["pid"] == os.getpid()
        assert [r["identity"] for r in cat.live_processes()] == [hb.identity]
    finally:
        heartbeat.stop_all()
    with cat.read() as conn:
        assert conn.execute(select(heartbeats)).all() == []


def wait_for(predicate, deadline: float = 120.0):
    """Poll an end state until a generous deadline (the state is asserted, not the time it took)."""
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.2)


def test_plain_celery_worker_and_pool_children_beat(cat: Catalog, redis_server, tmp_path: Path) -> None:
    env = t0dqm_env(
        tmp_path / "root", T0DQM_CATALOG_URL=cat.url, T0DQM_BROKER_URL=redis_server.url, T0DQM_HOST="hostW"
    )
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "t0dqm",
            "worker",
            "-Q",
            "dev.ops",
            "-c",
            "2",
            "-P",
            "prefork",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def roles() -> list[str]:
            rows = cat.live_processes()
            got = sorted(r["role"] for r in rows)
            return got if got == ["worker", "worker-child", "worker-child"] else []

        assert wait_for(roles) == ["worker", "worker-child", "worker-child"]
        rows = cat.live_processes()
        assert len({r["identity"] for r in rows}) == 3 and {r["host"] for r in rows} == {"hostW"}
        os.kill(proc.pid, signal.SIGTERM)  # warm shutdown of the main process, which stops its pool
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
    assert cat.live_processes() == []  # a clean shutdown removes the rows: nothing left to wait out


def test_liveness_command_reports_processes_and_lease_holders(cat: Catalog, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from t0dqm.cli import cli

    dead = remote_holder(cat, "hostA", 4_000_004, age=cat.stale_after + 5)
    live = remote_holder(cat, "hostB", 4_000_005, age=0)
    assert cat.acquire_lease("index-merge:dev", dead, 600) and cat.acquire_lease("beat-leader:dev", live, 600)
    assert cat.acquire_lease("old", "legacy", 0.001)
    env = {"T0DQM_ROOT": str(tmp_path / "root"), "T0DQM_CATALOG_URL": cat.url, "T0DQM_FLAVOUR": "dev"}
    try:
        result = CliRunner().invoke(cli, ["liveness", "--json"], env=env)
    finally:
        from t0dqm.catalog.db import reset_catalogs

        reset_catalogs()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [p["identity"] for p in report["processes"]] == [live.rsplit(":", 1)[0]]
    assert report["beat_leader"] == live
    holders = {lease["name"]: lease["holder"] for lease in report["leases"]}
    assert holders["beat-leader:dev"] == "live" and holders["old"] == "expired"
    assert holders["index-merge:dev"].startswith("dead: heartbeat stale for ")
