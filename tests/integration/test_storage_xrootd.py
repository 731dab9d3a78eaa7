"""Storage against a real XRootD server: copy with end-to-end adler32, checksum, stat, list, remove."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from t0dqm import storage


def write(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return f"{zlib.adler32(data, 1):08x}"


def test_copy_checksum_stat_list_remove(tmp_path: Path, xrootd_dir: str) -> None:
    src = tmp_path / "a.zip"
    expected = write(src, 3 * 1024 * 1024 + 17)
    assert storage.adler32_file(src) == expected
    target = f"{xrootd_dir}/deep/er/a.zip"
    assert storage.copy(str(src), target, timeout=30) == expected
    st = storage.stat(target, 10)
    assert st is not None and st.size == src.stat().st_size and not st.is_dir
    assert st.on_tape is False  # a plain XRootD server reports no tape copy
    assert storage.checksum(target, 10) == expected
    assert [e.name for e in storage.listdir(f"{xrootd_dir}/deep/er", 10)] == ["a.zip"]
    assert storage.remove(target, 10) is True
    assert storage.stat(target, 10) is None
    assert storage.remove(target, 10) is False


def test_copy_with_precomputed_checksum_reads_source_once(tmp_path: Path, xrootd_dir: str) -> None:
    src = tmp_path / "b.zip"
    expected = write(src, 1024 * 1024)
    assert storage.copy(str(src), f"{xrootd_dir}/b.zip", timeout=30, expected_adler32=expected) == expected


def test_corrupted_copy_is_detected_and_target_removed(tmp_path: Path, xrootd_dir: str) -> None:
    src = tmp_path / "c.zip"
    good = write(src, 512 * 1024)
    wrong = f"{(int(good, 16) ^ 0x1) & 0xFFFFFFFF:08x}"  # what the source should have been
    target = f"{xrootd_dir}/c.zip"
    with pytest.raises(storage.ChecksumMismatch):
        storage.copy(str(src), target, timeout=30, expected_adler32=wrong)
    assert storage.stat(target, 10) is None


def test_existing_target_is_not_overwritten(tmp_path: Path, xrootd_dir: str) -> None:
    src = tmp_path / "d.zip"
    write(src, 1000)
    target = f"{xrootd_dir}/d.zip"
    storage.copy(str(src), target, timeout=30)
    with pytest.raises(FileExistsError):
        storage.copy(str(src), target, timeout=30)


def test_remote_to_local_copy_is_verified(tmp_path: Path, xrootd_dir: str) -> None:
    src = tmp_path / "e.zip"
    expected = write(src, 200_000)
    storage.copy(str(src), f"{xrootd_dir}/e.zip", timeout=30)
    back = tmp_path / "back" / "e.zip"
    assert storage.copy(f"{xrootd_dir}/e.zip", str(back), timeout=30) == expected
    assert back.read_bytes() == src.read_bytes()


def test_missing_remote_file(xrootd_dir: str) -> None:
    assert storage.stat(f"{xrootd_dir}/nope", 10) is None
    with pytest.raises(storage.StorageError):
        storage.checksum(f"{xrootd_dir}/nope", 10)
