"""Benchmark: receive's cost per upload in one process (claim, checks, reservation, link, catalog rows), to see
what the catalog-lease claims cost against flock claims.

    .venv/bin/python bench/bench_claims.py --batches 8 --per-batch 25
    # the version before, same script: git archive <commit> | tar -x -C /tmp/old; cp bench/bench_claims.py /tmp/old/bench/
    # PYTHONPATH=/tmp/old .venv/bin/python /tmp/old/bench/bench_claims.py --batches 8 --per-batch 25

Uploads ``--batches`` x ``--per-batch`` copies of one simulated DQM file (200 histograms) under distinct run
numbers, then times ``Receiver.receive_many`` batch by batch (SQLite catalog in a tmp root, no partial index).
Prints the median milliseconds per upload and the batch walls.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--per-batch", type=int, default=25)
    args = parser.parse_args()

    import t0dqm
    from t0dqm import config
    from t0dqm.catalog.db import get_catalog
    from t0dqm.dev import simulate
    from t0dqm.formats import dropbox
    from t0dqm.steps.receive import Receiver

    root = Path(tempfile.mkdtemp(prefix="t0dqm-bench-claims-"))
    try:
        settings = config.load(None, environ={"T0DQM_ROOT": str(root), "T0DQM_FLAVOUR": "dev"})
        config.reset(settings)
        template = root / "template.root"
        simulate.write_dqm_file(template, 300001, simulate.SUBSYSTEMS[:4], n_hists=200, strict=True)
        src = root / "src"
        src.mkdir()
        batches = []
        for b in range(args.batches):
            batch = []
            for k in range(args.per_batch):
                name = src / f"DQM_V0001_Ecal_R{300001 + b * args.per_batch + k:09d}.root"
                shutil.copyfile(template, name)
                batch.append(str(dropbox.upload(name, settings.dropbox)))
            batches.append(batch)
        receiver = Receiver(settings, get_catalog(settings.catalog_url))
        walls = []
        for batch in batches:
            started = time.perf_counter()
            outcomes = receiver.receive_many(batch)
            walls.append(time.perf_counter() - started)
            assert [o.status for o in outcomes] == ["filed"] * len(batch), outcomes
        per_file = [1000 * w / args.per_batch for w in walls]
        print(f"t0dqm from {Path(t0dqm.__file__).parent}")
        print(
            f"median {statistics.median(per_file):.2f} ms per upload; batch walls "
            + " ".join(f"{w:.3f}" for w in walls)
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
