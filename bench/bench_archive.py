"""Benchmark: bytes/s through zip + stage + verify, t0dqm against the raw tools, in one run.

2 GiB of 50 MB random files (generated once into /tmp) go through
  t0dqm: archive.zip_file for each file, archive.freeze, tape.stage, tape.verify (tasks called in
         process, catalog in SQLite, endpoint a local XRootD server), and
  raw:   `zip -0 -j` into the same zips, then `xrdcp --cksum adler32:source` to the same server.
Target: ratio t0dqm/raw time <= 1.0.

    .venv/bin/python bench/bench_archive.py [--total-mb 2048] [--file-mb 50] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from pathlib import Path

SRC = Path("/tmp/t0dqm-bench-archive-src")
PATTERN = "OfflineData/Run2024A/ZeroBias/DQM_Offline_Run2024A_ZeroBias_R0003800xx_S%04d.zip"


def generate(total_mb: int, file_mb: int) -> list[tuple[Path, str]]:
    """Random files, made once and reused; their adler32 (what receive records) cached beside them."""
    SRC.mkdir(parents=True, exist_ok=True)
    n = max(1, total_mb * (1 << 20) // (file_mb * 1_000_000))
    index_file = SRC / f"index-{n}-{file_mb}.json"
    if index_file.exists():
        known = json.loads(index_file.read_text())
        if all((SRC / name).is_file() for name in known):
            return [(SRC / name, cks) for name, cks in known.items()]
    out: dict[str, str] = {}
    for i in range(n):
        name = f"DQM_V0001_R{380000 + i:09d}__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
        data = os.urandom(file_mb * 1_000_000)
        (SRC / name).write_bytes(data)
        out[name] = f"{zlib.adler32(data):08x}"
    index_file.write_text(json.dumps(out))
    return [(SRC / name, cks) for name, cks in out.items()]


def run_t0dqm(sources: list[tuple[Path, str]], work: Path, endpoint: str) -> tuple[float, list[list[str]]]:
    from sqlalchemy import insert, select

    from t0dqm import config
    from t0dqm.catalog.db import archives, files, get_catalog, members, reset_catalogs
    from t0dqm.tasks import archive as archive_tasks
    from t0dqm.tasks import tape
    from t0dqm.tasks.base import T0Task

    settings = config.load(
        None,
        environ={
            "T0DQM_ROOT": str(work),
            "T0DQM_FLAVOUR": "dev",
            "T0DQM_ARCHIVE_ENDPOINT": endpoint,
            "T0DQM_ARCHIVE__VERIFY_DELAY": "0",
        },
    )
    config.reset(settings)
    T0Task.send_next = lambda self, outcome: 0  # type: ignore[method-assign]  # tasks driven here
    catalog = get_catalog(settings.catalog_url)
    ids = []
    for path, cks in sources:  # what receive leaves behind: a repository file and its row
        rel = f"OfflineData/Run2024A/ZeroBias/0003800xx/{path.name}"
        (settings.repository / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(path, settings.repository / rel)
        now = time.time()
        with catalog.begin() as conn:
            ids.append(
                conn.execute(
                    insert(files).values(
                        path=rel,
                        name=path.name,
                        cls="offline_data",
                        run=0,
                        version=1,
                        dataset="/ZeroBias/A/DQMIO",
                        size=path.stat().st_size,
                        adler32=cks,
                        mtime=now,
                        zippat=PATTERN,
                        state="received",
                        index_state="pending",
                        created_at=now,
                        updated_at=now,
                        attempts=0,
                    )
                ).inserted_primary_key[0]
            )
    start = time.perf_counter()
    for fid in ids:
        assert archive_tasks.zip_file(fid) == "zipped"
    with catalog.read() as conn:
        aids = [r[0] for r in conn.execute(select(archives.c.id).order_by(archives.c.serial))]
    assert archive_tasks.freeze(archive_ids=aids) == {"frozen": len(aids)}
    for aid in aids:
        assert tape.stage(aid) == "copied"
        assert tape.verify(aid) == "verified"
    elapsed = time.perf_counter() - start
    with catalog.read() as conn:
        groups = [
            [
                r[0]
                for r in conn.execute(
                    select(members.c.name).where(members.c.archive_id == aid).order_by(members.c.added_at)
                )
            ]
            for aid in aids
        ]
    reset_catalogs()
    config.reset(None)
    return elapsed, groups


def run_raw(groups: list[list[str]], work: Path, endpoint: str) -> float:
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for serial, names in enumerate(groups, 1):
        zpath = work / (PATTERN % serial).rsplit("/", 1)[1]
        subprocess.run(["zip", "-0", "-j", "-q", str(zpath), *[str(SRC / n) for n in names]], check=True)
        subprocess.run(
            ["xrdcp", "-s", "-f", "--cksum", "adler32:source", str(zpath), f"{endpoint}/{zpath.name}"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mb", type=int, default=2048)
    parser.add_argument("--file-mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from t0dqm.dev import services

    sources = generate(args.total_mb, args.file_mb)
    total = sum(p.stat().st_size for p, _ in sources)
    xrd_base = Path(tempfile.mkdtemp(prefix="t0dqm-bench-xrd-"))
    server = services.start_xrootd(xrd_base)
    rows = []
    try:
        for rnd in range(1, args.rounds + 1):
            work = Path(tempfile.mkdtemp(prefix="t0dqm-bench-archive-"))
            try:
                ours, groups = run_t0dqm(sources, work / "t0dqm", f"{server.url}/store/t0dqm{rnd}")
                raw = run_raw(groups, work / "raw", f"{server.url}/store/raw{rnd}")
            finally:
                shutil.rmtree(work, ignore_errors=True)
                shutil.rmtree(server.data_dir / "store", ignore_errors=True)
            rows.append((rnd, len(sources), len(groups), ours, raw))
    finally:
        server.stop()
        shutil.rmtree(xrd_base, ignore_errors=True)

    print(
        f"{len(sources)} files x {args.file_mb} MB = {total / (1 << 30):.2f} GiB, zips <= 1.99 GiB, "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"{'round':>5} {'zips':>4} {'t0dqm s':>8} {'t0dqm MB/s':>10} {'raw s':>7} {'raw MB/s':>9} {'ratio':>6}"
    )
    for rnd, _n, nzips, ours, raw in rows:
        print(
            f"{rnd:>5} {nzips:>4} {ours:>8.2f} {total / ours / 1e6:>10.0f} {raw:>7.2f} "
            f"{total / raw / 1e6:>9.0f} {ours / raw:>6.2f}"
        )
    best_ours, best_raw = min(r[3] for r in rows), min(r[4] for r in rows)
    print(
        f"best: t0dqm {total / best_ours / 1e6:.0f} MB/s, raw {total / best_raw / 1e6:.0f} MB/s, "
        f"ratio {best_ours / best_raw:.2f} (target <= 1.0)"
    )


if __name__ == "__main__":
    main()
