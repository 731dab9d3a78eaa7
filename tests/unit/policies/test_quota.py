"""The quota policy over the oldest files only (what the catalog walk hands it) decides what it decides
over all of a class's files."""

from __future__ import annotations

import random

import pytest

from t0dqm.policies.quota import QuotaFile, excess, plan_class


def test_excess() -> None:
    assert excess(100, 100) == 0  # at quota: nothing to free
    assert excess(101, 100) == 101 - 95
    assert excess(1000, 100, fraction=0.5) == 950


@pytest.mark.parametrize("seed", range(40))
def test_plan_over_the_prefix_equals_plan_over_all(seed: int) -> None:
    rng = random.Random(seed)
    files = sorted(
        (
            QuotaFile(
                f"p/{rng.choice('aAb_-')}{i}",
                "c",
                rng.randrange(1, 100),
                float(rng.randrange(20)),
                archived=rng.random() < 0.6,
                file_id=i,
            )
            for i in range(rng.randrange(1, 60))
        ),
        key=lambda f: (f.mtime, f.path),
    )
    used = sum(f.size for f in files)
    quota = max(1, int(used * rng.choice((0.3, 0.8, 0.99, 1.0, 1.5))))
    full = plan_class("c", files, quota)
    need = excess(used, quota)
    prefix, freed = [], 0
    for f in files:  # what t0dqm.catalog.queries.quota_prefix returns: up to the file that reaches the excess
        if freed >= need:
            break
        prefix.append(f)
        freed += f.size if f.archived else 0
    part = plan_class("c", prefix, quota, used=used)
    assert (part.used, part.target, part.after, part.shortfall, part.alarm) == (
        full.used,
        full.target,
        full.after,
        full.shortfall,
        full.alarm,
    )
    assert part.deletions == full.deletions and part.blocked == full.blocked
