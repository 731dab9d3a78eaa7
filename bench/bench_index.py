"""Benchmark: where the DQM GUI index is written on shared storage. Merge throughput of N partial indexes
and the reading side, side by side, for SQLite in WAL mode (before), SQLite with a rollback journal
(journal_mode=DELETE, synchronous=FULL: what t0dqm writes now) and PostgreSQL (the catalog's server).

    .venv/bin/python bench/bench_index.py --partials 100 --per-partial 10 --mes 300 --repeat 3

Merge: the real SQLite merge code (t0dqm.steps.index._merge_batch: partials attached read-only and immutable,
INSERT ... SELECT, one transaction per 8 partials); for PostgreSQL, the same work in the same transaction
groups: samples inserted with RETURNING, monitor elements by COPY (values as text). Catalog updates are
left out: they are the same for every backend. Reads: the GUI's two queries (samples of a run, monitor
elements of the newest version of each subsystem of a sample), idle and while a merge writes (a reader
process in a loop). Medians over ``--repeat`` runs, backends alternating. Loopback PostgreSQL only.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import namedtuple
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from t0dqm.formats import rootcheck  # noqa: E402
from t0dqm.steps import index as dqmindex  # noqa: E402

Row = namedtuple("Row", "id run dataset version cls subsystem path")
NULL = "\\N"  # COPY's NULL
SUBSYSTEMS = ("Ecal", "Hcal", "Pixel", "Strip", "Muons", "L1T", "HLT", "Tracking")

PG_SCHEMA = """
CREATE TABLE samples (id BIGSERIAL PRIMARY KEY, file_id BIGINT NOT NULL UNIQUE, run BIGINT NOT NULL,
  dataset TEXT NOT NULL, version INTEGER NOT NULL, cls TEXT NOT NULL, subsystem TEXT, path TEXT NOT NULL,
  run_type TEXT, lumis INTEGER, start_time DOUBLE PRECISION, end_time DOUBLE PRECISION,
  n_mes INTEGER NOT NULL DEFAULT 0, imported_at DOUBLE PRECISION NOT NULL);
CREATE INDEX ix_samples_run ON samples (run, dataset);
CREATE TABLE monitor_elements (sample_id BIGINT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, value TEXT);
CREATE INDEX ix_me_sample ON monitor_elements (sample_id);
"""
SAMPLES_SQL = "SELECT * FROM samples WHERE run = {p} ORDER BY run DESC, dataset, subsystem, version"
MES_SQL = (
    "SELECT s.subsystem, s.version, m.path, m.kind, m.value FROM samples s "
    "JOIN monitor_elements m ON m.sample_id = s.id WHERE s.run = {p} AND s.dataset = {p} AND s.version = "
    "(SELECT MAX(version) FROM samples t WHERE t.run = s.run AND t.dataset = s.dataset AND "
    "t.subsystem {same} s.subsystem) ORDER BY m.path"
)


def make_partials(
    folder: Path, n: int, per: int, n_mes: int, seed: int, first_id: int = 0
) -> list[tuple[Row, Path]]:
    """n batch partial indexes of ``per`` samples with ``n_mes`` elements each (a receive batch each)."""
    rng = random.Random(seed)
    out: list[tuple[Row, Path]] = []
    file_id = first_id
    for k in range(n):
        entries = []
        for _ in range(per):
            file_id += 1
            run = 300000 + rng.randrange(2000)
            sub = rng.choice(SUBSYSTEMS)
            row = Row(
                file_id,
                run,
                "/Global/Online/ALL",
                1,
                "online_data",
                sub,
                f"OnlineData/{run:09d}/DQM_V0001_{sub}_R{run:09d}_{file_id}.root",
            )
            mes = [
                rootcheck.ME(f"{sub}/Folder{j % 20}/h{j}", "TH1F" if j % 5 else "INT", None if j % 5 else j)
                for j in range(n_mes)
            ]
            entries.append((row, mes, dqmindex.RunFacts("COLLISIONS", 100, 1.7e9, None)))
        path = dqmindex._write_partial_file(folder / f"batch-{first_id}-{k}.sqlite", entries)
        out += [(row, path) for row, _mes, _facts in entries]
    return out


# -- SQLite -----------------------------------------------------------------------------------------


def sqlite_writer(path: Path, mode: str) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}", timeout=60, isolation_level=None, uri=True)
    conn.execute(f"PRAGMA journal_mode={mode}")
    conn.execute("PRAGMA synchronous=" + ("NORMAL" if mode == "WAL" else "FULL"))
    conn.executescript(dqmindex.SCHEMA)
    return conn


def merge_sqlite(path: Path, mode: str, ready: list[tuple[Row, Path]]) -> float:
    conn = sqlite_writer(path, mode)
    started = time.perf_counter()
    for start in range(0, len(ready), dqmindex.MERGE_BATCH):
        _done, failed = dqmindex._merge_batch(conn, ready[start : start + dqmindex.MERGE_BATCH], None)
        assert not failed, failed
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def sqlite_query(path: Path, sql: str, args: tuple) -> float:
    started = time.perf_counter()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)  # as Index does: per query
    try:
        conn.execute(sql, args).fetchall()
    finally:
        conn.close()
    return time.perf_counter() - started


# -- PostgreSQL -------------------------------------------------------------------------------------


def pg_database(admin_url: str) -> tuple[str, str]:
    """A fresh database with the index tables; (name, URL)."""
    from sqlalchemy import create_engine, text

    name = f"t0dqm_bench_index_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    conn = pg_connect(url)
    with conn, conn.cursor() as cur:
        cur.execute(PG_SCHEMA)
    conn.close()
    return name, url


def pg_drop(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def pg_connect(url: str):
    import psycopg2

    return psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))


def merge_pg(url: str, ready: list[tuple[Row, Path]]) -> float:
    conn = pg_connect(url)
    columns = ", ".join(dqmindex.SAMPLE_COLUMNS)
    partials = list(dict.fromkeys(p for _row, p in ready))
    started = time.perf_counter()
    for start in range(0, len(partials), dqmindex.ATTACH_MAX):
        with conn, conn.cursor() as cur:  # one transaction per group, as the SQLite merge
            for partial in partials[start : start + dqmindex.ATTACH_MAX]:
                src = sqlite3.connect(dqmindex.attach_uri(partial), uri=True)
                try:
                    samples = src.execute(f"SELECT id, {columns} FROM samples").fetchall()
                    buf = io.StringIO()
                    for sample in samples:
                        cur.execute(
                            f"INSERT INTO samples ({columns}) VALUES ({', '.join(['%s'] * 13)}) RETURNING id",
                            sample[1:],
                        )
                        new_id = cur.fetchone()[0]
                        for path, kind, value in src.execute(
                            "SELECT path, kind, value FROM monitor_elements WHERE sample_id = ? ORDER BY rowid",
                            (sample[0],),
                        ):
                            text = NULL if value is None else value
                            buf.write(f"{new_id}\t{path}\t{kind}\t{text}\n")
                    buf.seek(0)
                    cur.copy_expert("COPY monitor_elements (sample_id, path, kind, value) FROM STDIN", buf)
                finally:
                    src.close()
    seconds = time.perf_counter() - started
    conn.close()
    return seconds


def pg_query(conn, sql: str, args: tuple) -> float:
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute(sql, args)
        cur.fetchall()
    conn.rollback()
    return time.perf_counter() - started


# -- reads ------------------------------------------------------------------------------------------


def read_once(backend: str, target: str, run: int, conn=None) -> float:
    dataset = "/Global/Online/ALL"
    if backend == "pg":
        return pg_query(conn, SAMPLES_SQL.format(p="%s"), (run,)) + pg_query(
            conn, MES_SQL.format(p="%s", same="IS NOT DISTINCT FROM"), (run, dataset)
        )
    path = Path(target)
    return sqlite_query(path, SAMPLES_SQL.format(p="?"), (run,)) + sqlite_query(
        path, MES_SQL.format(p="?", same="IS"), (run, dataset)
    )


def reader_loop(backend: str, target: str, runs: list[int], stop, out) -> None:
    conn = pg_connect(target) if backend == "pg" else None
    latencies, errors = [], 0
    i = 0
    while not stop.is_set():
        try:
            latencies.append(read_once(backend, target, runs[i % len(runs)], conn))
        except Exception:  # noqa: BLE001 - counted: a reader that fails while the writer commits
            errors += 1
        i += 1
    out.put((latencies, errors))


def run_backend(
    backend: str,
    workdir: Path,
    base: list[tuple[Row, Path]],
    fresh: list[tuple[Row, Path]],
    runs: list[int],
    admin_url: str,
    reads: int,
) -> dict[str, float]:
    """A fresh index filled with ``base``; then ``fresh`` is merged into it (timed) while a reader process
    loops on it (the GUI while a merge commits); then idle reads."""
    pg_name = None
    mode = {"sqlite-wal": "WAL", "sqlite-delete": "DELETE"}.get(backend, "")
    try:
        if backend == "pg":
            pg_name, target = pg_database(admin_url)
            merge_pg(target, base)
        else:
            target = str(workdir / f"{backend}-{uuid.uuid4().hex[:6]}.sqlite")
            merge_sqlite(Path(target), mode, base)
        ctx = mp.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        reader = ctx.Process(target=reader_loop, args=(backend, target, runs, stop, out))
        reader.start()
        merge_seconds = (
            merge_pg(target, fresh) if backend == "pg" else merge_sqlite(Path(target), mode, fresh)
        )
        stop.set()
        busy, errors = out.get(timeout=120)
        reader.join(30)
        conn = pg_connect(target) if backend == "pg" else None
        idle = [read_once(backend, target, runs[i % len(runs)], conn) for i in range(reads)]
        if conn is not None:
            conn.close()
        else:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(target + suffix).unlink(missing_ok=True)
        return {
            "merge_s": merge_seconds,
            "read_idle_ms": 1000 * statistics.median(idle),
            "read_busy_ms": 1000 * statistics.median(busy) if busy else float("nan"),
            "read_busy_p99_ms": 1000 * _p99(busy),
            "reads_busy": len(busy),
            "read_errors": errors,
        }
    finally:
        if pg_name:
            pg_drop(admin_url, pg_name)


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(0.99 * (len(values) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--partials", type=int, default=100)
    parser.add_argument("--per-partial", type=int, default=10)
    parser.add_argument("--mes", type=int, default=300)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pg", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--backends", default="sqlite-wal,sqlite-delete,pg")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="t0dqm-bench-index-"))
    try:
        base = make_partials(workdir / "partial", args.partials, args.per_partial, args.mes, seed=1)
        ready = make_partials(
            workdir / "partial", args.partials, args.per_partial, args.mes, seed=2, first_id=len(base)
        )
        runs = sorted({row.run for row, _ in base})
        random.Random(2).shuffle(runs)
        backends = args.backends.split(",")
        results: dict[str, list[dict[str, float]]] = {b: [] for b in backends}
        for _ in range(args.repeat):
            for backend in backends:
                results[backend].append(run_backend(backend, workdir, base, ready, runs, args.pg, args.reads))
        samples = len(ready)
        mes = samples * args.mes
        print(
            f"merged: {args.partials} partials x {args.per_partial} samples x {args.mes} elements = {samples} "
            f"samples, {mes} elements, into an index holding as many; medians of {args.repeat} runs"
        )
        print(
            "| backend | merge s | samples/s | elements/s | read idle ms | read during merge ms (p50 / p99) "
            "| reads during merge | read errors |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for backend, runs_ in results.items():

            def med(key: str, runs_: list[dict[str, float]] = runs_) -> float:
                return statistics.median(r[key] for r in runs_)

            merge_s = med("merge_s")
            print(
                f"| {backend} | {merge_s:.2f} | {samples / merge_s:.0f} | {mes / merge_s:.0f} | "
                f"{med('read_idle_ms'):.2f} | {med('read_busy_ms'):.2f} / {med('read_busy_p99_ms'):.2f} | "
                f"{med('reads_busy'):.0f} | {med('read_errors'):.0f} |"
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
