"""Tier-0 file size limits (t0dqm.policies.size_limits)."""

from __future__ import annotations

import pytest

from t0dqm.policies import size_limits
from t0dqm.policies.size_limits import GiB


@pytest.mark.parametrize(
    "size,verdict",
    [(0, "ok"), (16 * GiB, "ok"), (16 * GiB + 1, "soft"), (24 * GiB, "soft"), (24 * GiB + 1, "hard")],
)
def test_raw(size, verdict):
    assert size_limits.check("raw", size).verdict == verdict


@pytest.mark.parametrize(
    "size,verdict",
    [(30 * GiB, "ok"), (30 * GiB + 1, "notify"), (80 * GiB, "notify"), (80 * GiB + 1, "refuse")],
)
def test_streamer(size, verdict):
    assert size_limits.check("streamer", size).verdict == verdict


def test_configurable_limits_and_errors():
    lim = size_limits.SizeLimits(raw_soft_gib=1, raw_hard_gib=2)
    assert size_limits.check("raw", GiB + 1, lim).as_dict() == {
        "kind": "raw",
        "bytes": GiB + 1,
        "verdict": "soft",
    }
    with pytest.raises(ValueError):
        size_limits.SizeLimits(raw_soft_gib=3, raw_hard_gib=2)
    with pytest.raises(ValueError):
        size_limits.check("aod", 1)
    with pytest.raises(ValueError):
        size_limits.check("raw", -1)
