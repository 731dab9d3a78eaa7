"""Benchmark: time to write one simulated DQM file, record writer (t0dqm.formats.rootwrite) against uproot.

Usage: .venv/bin/python bench/bench_simulate.py [--repeat 15]

Both writers produce the same content (simulate._layout): `write_dqm_file` (the CMSSW-shaped layout,
scalar keys named with the tag string, ROOT's free-space rules) and `write_dqm_file_uproot` (the former
writer). They run interleaved in one process, after one warm-up each (templates and the StreamerInfo list
are built once per process); the table gives the median and the ratio per file shape.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from t0dqm.dev import simulate

SHAPES = (  # (label, subsystems, histograms, strict)
    ("online subsystem, 60 histograms, loose", ["Ecal"], 60, False),
    ("offline, 4 subsystems, 200 histograms", ["Ecal", "Hcal", "Pixel", "DT"], 200, True),
    (
        "merged online, 6 subsystems, 2000 histograms",
        ["Ecal", "Hcal", "Pixel", "DT", "CSC", "L1T"],
        2000,
        True,
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    writers = {"rootwrite": simulate.write_dqm_file, "uproot": simulate.write_dqm_file_uproot}
    with tempfile.TemporaryDirectory(prefix="t0dqm-bench-sim-") as tmp:
        path = Path(tmp) / "DQM_V0001_R000367013.root"
        for fn in writers.values():  # warm-up: templates, StreamerInfo
            fn(path, 367013, ["Ecal"], 10)
        print(
            "| file | rootwrite median ms | uproot median ms | uproot / rootwrite | size (rootwrite / uproot) |"
        )
        print("| --- | ---: | ---: | ---: | ---: |")
        for label, subs, n, strict in SHAPES:
            times: dict[str, list[float]] = {k: [] for k in writers}
            sizes: dict[str, int] = {}
            for _ in range(args.repeat):
                for key, fn in writers.items():
                    start = time.perf_counter()
                    sizes[key] = fn(path, 367013, subs, n, strict)
                    times[key].append(time.perf_counter() - start)
            med = {k: statistics.median(v) * 1000 for k, v in times.items()}
            print(
                f"| {label} | {med['rootwrite']:.1f} | {med['uproot']:.1f} | "
                f"{med['uproot'] / med['rootwrite']:.2f} | {sizes['rootwrite']} / {sizes['uproot']} |"
            )


if __name__ == "__main__":
    main()
