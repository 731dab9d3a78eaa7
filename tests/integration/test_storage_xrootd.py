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


# A child that copies its stdin to argv[1] with storage.copy: the test feeds the bytes, so it knows the
# copy is in flight (no race with a copy that finishes before it can be killed).
COPY_STDIN = "import sys; from t0dqm import storage; storage.copy('-', sys.argv[1], timeout=120)"


def _kill_mid_copy(target: str, fed: int) -> int:
    """Start a copy in a child process, feed it ``fed`` bytes, SIGKILL it once the target exists with a
    partial size; return that size."""
    import signal
    import subprocess
    import sys
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", COPY_STDIN, target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert child.stdin is not None
        block = os.urandom(1 << 20)
        for _ in range(fed >> 20):  # blocks until the child has read nearly all of it
            child.stdin.write(block)
        child.stdin.flush()
        deadline = time.monotonic() + 120  # a bound against a hang, not a synchronisation
        while (st := storage.stat(target, 10)) is None or st.size == 0:
            assert child.poll() is None, child.stdout.read() if child.stdout else ""
            assert time.monotonic() < deadline, "the copy never wrote to the target"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        return st.size
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("how", ["force", "remove-then-copy"])
def test_copy_killed_mid_transfer_is_retried_at_once(tmp_path: Path, xrootd_dir: str, how: str) -> None:
    """No POSC: a SIGKILLed copy leaves a plain partial file, not one the server holds busy for 600 s
    ([3003] already opened / [3020] text file busy), so the first retry from another process succeeds."""
    target = f"{xrootd_dir}/killed.zip"
    storage.mkdir(xrootd_dir, 10)
    partial = _kill_mid_copy(target, 48 << 20)
    src = tmp_path / "killed.zip"
    expected = write(src, (48 << 20) + 12345)
    assert 0 < partial < src.stat().st_size
    # what tape.stage asks first of an existing target: is it already the complete copy?
    assert storage.checksum(target, 10) != expected
    if how == "force":
        got = storage.copy(str(src), target, timeout=60, expected_adler32=expected, force=True)
    else:  # what tape.stage does with its own leftover
        assert storage.remove(target, 10) is True
        got = storage.copy(str(src), target, timeout=60, expected_adler32=expected)
    assert got == expected
    st = storage.stat(target, 10)
    assert st is not None and st.size == src.stat().st_size
    assert storage.checksum(target, 10) == expected
