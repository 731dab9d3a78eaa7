"""Helpers for Tier-0 tests: write EOS dump lines and gzip dumps."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from t0dqm.formats import eosdump
from t0dqm.formats.streamer_names import file_path

NOW = 1_700_000_000
DAY = 86400


def line(
    path: str,
    size: int,
    mtime: tuple[int, int] | int,
    checksum: str = "0a1b2c3d",
    ctime: tuple[int, int] | None = None,
) -> str:
    m = mtime if isinstance(mtime, tuple) else (mtime, 0)
    c = ctime or m
    return f"path={path} size={size} checksum={checksum} ctime={c[0]}.{c[1]} mtime={m[0]}.{m[1]}"


def unit_lines(
    label: str,
    stream: str,
    run: int,
    sizes: list[int],
    mtime: int | tuple[int, int],
    prefix: str = "/eos/cms",
) -> list[str]:
    out = []
    for i, size in enumerate(sizes, 1):
        out.append(line(file_path(label, stream, run, i, "dat", prefix), size, mtime))
    return out


def write_dump(path: Path, lines: list[str] | bytes, *, members: int = 1) -> Path:
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    if members == 1:
        path.write_bytes(gzip.compress(data))
    else:
        step = max(1, len(data) // members)
        parts = [data[i : i + step] for i in range(0, len(data), step)]
        path.write_bytes(b"".join(gzip.compress(p) for p in parts))
    return path


@pytest.fixture(autouse=True, params=["c", "python"])
def scanner(request, monkeypatch):
    """Every test against the compiled scanner and against the pure-Python fallback."""
    if request.param == "c":
        assert eosdump._scan is not None, "t0dqm.formats._dumpscan not built: pip install -e ."
    else:
        monkeypatch.setattr(eosdump, "_scan", None)
    return request.param
