from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from t0dqm import storage


def test_adler32_format_and_seed(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"")
    assert storage.adler32_file(path) == "00000001"  # seeded 1, zero padded
    path.write_bytes(b"Wikipedia")
    assert storage.adler32_file(path) == "11e60398"
    assert storage.normalise_adler32("1e60398") == "01e60398"


def test_adler32_across_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10_000
    path = tmp_path / "g"
    path.write_bytes(data)
    assert storage.adler32_file(path, chunk=4096) == f"{zlib.adler32(data):08x}"


def test_local_copy_verifies_and_refuses_existing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x" * 5000)
    dst = tmp_path / "sub" / "dst"
    cks = storage.copy(str(src), str(dst), timeout=5)
    assert cks == storage.adler32_file(src) and dst.read_bytes() == src.read_bytes()
    with pytest.raises(FileExistsError):
        storage.copy(str(src), str(dst), timeout=5)
    with pytest.raises(storage.ChecksumMismatch):
        storage.copy(str(src), str(tmp_path / "other"), timeout=5, expected_adler32="deadbeef")
    assert not (tmp_path / "other").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_split_url() -> None:
    assert storage.split_url("root://h:1094//eos/a/b") == ("root://h:1094", "/eos/a/b")
    with pytest.raises(storage.StorageError):
        storage.split_url("root://h:1094/relative")
