"""Benchmark: streamer cleanup plan over a generated 10-million-line EOS dump.

Usage: .venv/bin/python bench/bench_streamer_plan.py [--lines 10000000] [--area-fraction 1.0]

Generates (once, cached under /tmp) a gzip dump in the `eos find` format, then runs, each in its own
process, `zcat FILE | wc -l` and `t0dqm streamer plan --json`, and prints wall time and peak RSS
side by side. area-fraction 1.0 = every line in /store/t0streamer (worst case); 0.2 = a dump where
one line in five is a streamer file (the rest other /store areas, as in the real whole-EOS dump).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

NOW = 1_700_000_000
STREAMS = [
    "PhysicsMuons",
    "PhysicsEGamma",
    "Express",
    "HLTMonitor",
    "Calibration",
    "PhysicsZeroBias1",
    "PhysicsJetMET",
    "ALCAPHISYM",
    "NanoDST",
    "ALCALUMIPIXELSEXPRESS",
]
OTHER = [
    "/eos/cms/store/data/Run2023C/Muon0/AOD/PromptReco-v1/000/367/{:03d}/00000/{:08x}.root",
    "/eos/cms/store/mc/Run3Summer23/TTto2L2Nu/NANOAODSIM/130X-v2/{:05d}/{:08x}.root",
    "/eos/cms/store/user/someone/ntuples/batch{:04d}/out_{:08x}.root",
]


def generate(path: Path, lines: int, area_fraction: float, seed: int = 1) -> None:
    rnd = random.Random(seed)
    ns = [rnd.randint(0, 999_999_999) for _ in range(4096)]
    cks = [f"{rnd.getrandbits(32):08x}" for _ in range(4096)]
    tmp = path.with_suffix(".part")
    written = 0
    run = 300000
    k = 0
    with gzip.open(tmp, "wb", compresslevel=3) as fh:
        while written < lines:
            buf = []
            if rnd.random() < area_fraction:
                run += rnd.randint(1, 3)
                label = (
                    "Data"
                    if rnd.random() < 0.9
                    else rnd.choice(["Minidaq", "TransferTest", "TransferTestWithSafety"])
                )
                stream = rnd.choice(STREAMS)
                base = NOW - rnd.randint(0, 500 * 86400)
                d = f"/eos/cms/store/t0streamer/{label}/{stream}/000/{run // 1000 % 1000:03d}/{run % 1000:03d}"
                for ls in range(1, rnd.randint(100, 800)):
                    m = base + ls * 23
                    k += 1
                    buf.append(
                        f"path={d}/run{run}_ls{ls:04d}_stream{stream}_StorageManager.dat "
                        f"size={rnd.randint(10**6, 4 * 10**9)} checksum={cks[k & 4095]} "
                        f"ctime={m}.{ns[k & 4095]} mtime={m}.{ns[(k * 7) & 4095]}\n"
                    )
                    buf.append(
                        f"path={d}/run{run}_ls{ls:04d}_stream{stream}_StorageManager.jsn "
                        f"size={rnd.randint(200, 400)} checksum={cks[(k * 3) & 4095]} "
                        f"ctime={m}.{ns[(k * 5) & 4095]} mtime={m}.{ns[(k * 11) & 4095]}\n"
                    )
            else:
                tpl = rnd.choice(OTHER)
                a = rnd.randint(0, 999)
                for _ in range(rnd.randint(200, 1600)):
                    k += 1
                    m = NOW - rnd.randint(0, 10**8)
                    buf.append(
                        "path="
                        + tpl.format(a, rnd.getrandbits(32))
                        + f" size={rnd.randint(10**6, 4 * 10**9)} checksum={cks[k & 4095]} "
                        f"ctime={m}.{ns[k & 4095]} mtime={m}.{ns[(k * 7) & 4095]}\n"
                    )
            buf = buf[: lines - written]
            written += len(buf)
            fh.write("".join(buf).encode())
    os.replace(tmp, path)


def _tree_rss_kb(pid: int) -> int:
    """Summed VmRSS of a process and all its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(x) for x in fh.read().split())
        except (OSError, ValueError):
            continue
    return total


def measure(cmd: list[str]) -> tuple[float, float, float, str]:
    """Wall seconds, peak RSS (MB) of the largest single process, peak summed RSS (MB) of the whole
    process tree (sampled every 20 ms: inflater + parser processes together), and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))  # type: ignore[union-attr]
    reader.start()
    tree = 0
    while proc.poll() is None:
        tree = max(tree, _tree_rss_kb(proc.pid))
        time.sleep(0.02)
    reader.join()
    wall = time.monotonic() - t0
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(after, before) / 1024, tree / 1024, out[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=10_000_000)
    ap.add_argument("--area-fraction", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    path = Path(f"/tmp/t0dqm-bench-eosdump-{args.lines}-{args.area_fraction:g}.txt.gz")
    if not path.exists():
        t0 = time.monotonic()
        generate(path, args.lines, args.area_fraction)
        print(
            f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.monotonic() - t0:.0f} s",
            file=sys.stderr,
        )
    t0dqm = str(Path(sys.executable).with_name("t0dqm"))
    runs: dict[str, list[tuple[float, float, float]]] = {"zcat": [], "plan": []}
    notes = {}
    for _ in range(args.repeat):
        # Separate measurement processes, in the same run. RUSAGE_CHILDREN keeps the max over all
        # children so far, so the cheaper zcat runs first; the tree sum is sampled per command.
        wall, rss, tree, out = measure(["bash", "-c", f"zcat {path} | wc -l"])
        runs["zcat"].append((wall, rss, tree))
        notes["zcat"] = out.strip() + " lines"
        wall, rss, tree, out = measure(
            [
                t0dqm,
                "streamer",
                "plan",
                "--dump",
                str(path),
                "--now",
                str(NOW + 86400),
                "--max-dump-age",
                "1e12",
                "--json",
            ]
        )
        plan = json.loads(out)
        runs["plan"].append((wall, rss, tree))
        notes["plan"] = f"{len(plan['delete'])} units to delete, total {plan['total_bytes']} B"
    print(
        f"dump: {path} ({args.lines} lines, streamer fraction {args.area_fraction:g}, "
        f"{path.stat().st_size / 1e6:.0f} MB gz), {os.cpu_count()} CPUs, "
        f"load average before {os.getloadavg()[0]:.2f}, {args.repeat} runs (median; all walls listed)"
    )
    print(f"| {'command':<28} | {'wall s':>7} | {'max proc MB':>11} | {'tree MB':>7} | walls | result")
    print(f"|{'-' * 30}|{'-' * 9}|{'-' * 13}|{'-' * 9}|{'-' * 7}|{'-' * 40}")
    for key, name in (("zcat", "zcat FILE | wc -l"), ("plan", "t0dqm streamer plan --json")):
        rows = runs[key]
        walls = [r[0] for r in rows]
        print(
            f"| {name:<28} | {statistics.median(walls):7.2f} | {statistics.median(r[1] for r in rows):11.0f} | "
            f"{statistics.median(r[2] for r in rows):7.0f} | {' '.join(f'{w:.1f}' for w in walls)} | {notes[key]}"
        )


if __name__ == "__main__":
    main()
