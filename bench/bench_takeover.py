"""A host is lost: how long until another host has taken over its beat, its merge lease and its claim.

hostA runs the elected beat, holds the index merge lease and a claim on a frozen archive (as a copy
would); hostB runs a standby beat and a worker (tape, ops, index-merge). hostA's processes each have
their own UTS and pid namespaces (another machine as far as /proc can tell; needs root), so only the
heartbeat can reveal their death. All of hostA is killed with SIGKILL at once; the times are from the
kill to the takeovers recorded in the catalog's audit (beat leader lease, merge lease, archive claim).
Default configuration (heartbeat.interval 5 s, stale_after 20 s, reconcile.interval 20 s); PostgreSQL
catalog, redis-server broker, both on loopback.

    .venv/bin/python bench/bench_takeover.py [--repeat 3] [--pg postgresql+psycopg2://postgres@127.0.0.1/postgres]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text

from t0dqm import config
from t0dqm.beat_election import current_leader
from t0dqm.catalog.db import Catalog, archives, audit
from t0dqm.dev import services
from t0dqm.dev.hosts import can_rename, on_host

REPO = Path(__file__).resolve().parents[1]

HOLDER = r"""
import json, sys
from t0dqm import config
from t0dqm.steps import index
from t0dqm.catalog.db import get_catalog
settings = config.get()
cat = get_catalog(settings.catalog_url)
with index.merge_lease(settings, cat):
    ok = cat.claim("archive", int(sys.argv[1]), "frozen", settings.timeout("copy") + 300)
    print(json.dumps({"claimed": ok}), flush=True)
    sys.stdin.read()
"""


def wait(predicate: Callable[[], Any], deadline: float, what: str) -> Any:
    end = time.monotonic() + deadline
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(what)
        time.sleep(0.2)


def fresh_database(admin_url: str) -> str:
    name = f"t0dqm_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, url: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def frozen_archive(cat: Catalog) -> int:
    now = time.time()
    with cat.begin() as conn:
        return conn.execute(
            insert(archives).values(
                path="bench/x_S0001.zip",
                pattern="bench/x_S%04d.zip",
                serial=1,
                state="frozen",
                nfiles=1,
                size=10,
                adler32="00000001",
                tries=0,
                created_at=now,
                updated_at=now,
                frozen_at=now,
            )
        ).inserted_primary_key[0]


def takeover_at(cat: Catalog, action: str, path: str | None = None) -> float | None:
    query = select(audit.c.at).where(audit.c.action == action)
    if path is not None:
        query = query.where(audit.c.path == path)
    with cat.read() as conn:
        return conn.execute(query.order_by(audit.c.id)).scalars().first()


def one_run(admin_url: str, work: Path) -> dict[str, float]:
    url = fresh_database(admin_url)
    redis = services.start_redis(work / "redis")
    procs: list[subprocess.Popen[str]] = []
    cat = Catalog(url)
    settings = config.load(None, environ={"T0DQM_FLAVOUR": "dev", "T0DQM_ROOT": str(work / "root")})
    try:
        cat.upgrade()
        archive_id = frozen_archive(cat)
        env = {k: v for k, v in os.environ.items() if not k.startswith("T0DQM_")}
        env.update(
            T0DQM_ROOT=str(work / "root"),
            T0DQM_FLAVOUR="dev",
            T0DQM_CATALOG_URL=url,
            T0DQM_BROKER_URL=redis.url,
            PYTHONUNBUFFERED="1",
        )
        celery = [sys.executable, "-m", "celery", "-A", "t0dqm"]
        quiet = {"cwd": REPO, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}

        def beat(host: str) -> subprocess.Popen[str]:
            return on_host(
                host,
                [*celery, "beat", "-s", str(work / f"beat-{host}")],
                env,
                own_pids=True,
                start_new_session=True,
                **quiet,
            )

        host_a = [beat("hostA")]
        procs += host_a
        wait(lambda: (current_leader(cat, settings) or "").startswith("hostA:"), 120, "beat A leads")
        procs.append(beat("hostB"))
        procs.append(
            on_host(
                "hostB",
                [
                    *celery,
                    "worker",
                    "-Q",
                    "tape,ops,index-merge",
                    "-c",
                    "2",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env,
                own_pids=True,
                start_new_session=True,
                **quiet,
            )
        )
        holder = on_host(
            "hostA",
            [sys.executable, "-c", HOLDER, str(archive_id)],
            env,
            own_pids=True,
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        host_a.append(holder)
        procs.append(holder)
        assert holder.stdout is not None and json.loads(holder.stdout.readline())["claimed"]
        wait(
            lambda: sum(p["role"] == "worker-child" for p in cat.live_processes()) == 2,
            120,
            "hostB worker up",
        )
        killed = time.time()
        for proc in host_a:
            proc.kill()  # SIGKILL; --kill-child takes the namespace's processes with it
        for proc in host_a:
            proc.wait(60)
        times = {}
        for label, action, path in (
            ("beat leader", "lease-takeover", "beat-leader:dev"),
            ("merge lease", "lease-takeover", "index-merge:dev"),
            ("archive claim", "claim-takeover", None),
        ):
            at = wait(lambda a=action, p=path: takeover_at(cat, a, p), 600, label)
            times[label] = at - killed
        return times
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()  # unshare dies, --kill-child ends its namespace
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        cat.dispose()
        redis.stop()
        drop_database(admin_url, url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--pg",
        default=os.environ.get("T0DQM_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    if not can_rename():
        sys.exit("bench_takeover needs root (unshare) to give hostA its own namespaces")
    runs = []
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="t0dqm-takeover-") as tmp:
            runs.append(one_run(args.pg, Path(tmp)))
        print(f"run {i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in runs[-1].items()), flush=True)
    print("\n| taken over after hostA's kill | median | max |\n| --- | --- | --- |")
    for label in runs[0]:
        values = [r[label] for r in runs]
        print(f"| {label} | {statistics.median(values):.1f} s | {max(values):.1f} s |")


if __name__ == "__main__":
    main()
