"""Collector rules with real ROOT files, a real process holding a file open, a real dropbox."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from t0dqm import beat, config, storage
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.policies import collect as policy
from t0dqm.steps import collect as collector

RUN = 123456
FINAL = f"DQM_V0001_Ecal_R{RUN:09d}.root"


def snap(n: int, sub: str = "Ecal", run: int = RUN) -> str:
    return f"DQM_V0001_{sub}_R{run:09d}_T{n:08d}.root"


@pytest.fixture
def producer(settings: config.Settings, tmp_path: Path) -> Iterator[collector.Producer]:
    collect_dir = tmp_path / "producer" / "collect"
    collect_dir.mkdir(parents=True)
    data = dict(settings.data, producers=[{"host": "prod1", "dir": str(collect_dir)}])
    current = config.Settings(data=data)
    config.reset(current)
    [p] = collector.producers(current, "prod1")
    yield p
    config.reset(settings)


def good(path: Path, run: int = RUN, sub: str = "Ecal") -> Path:
    simulate.write_dqm_file(path, run, [sub], n_hists=10, strict=False)
    return path


def truncated(path: Path) -> Path:
    good(path)
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(size // 2)
    return path


def uploads(box: Path) -> list[Path]:
    return sorted(p for p in box.glob("[0-9][0-9][0-9][0-9]/*.root"))


def run_collector(p: collector.Producer, **kw: object) -> collector.CollectReport:
    return collector.Collector(p, config.get(), retry_wait=0.01).run_once(**kw)


def test_content_check_three_answers(tmp_path: Path) -> None:
    assert collector.check_content(good(tmp_path / "a.root"))[0] == collector.OK
    assert collector.check_content(truncated(tmp_path / "b.root"))[0] == collector.INCOMPLETE
    (tmp_path / "c.root").write_bytes(b"not root at all")
    assert collector.check_content(tmp_path / "c.root")[0] == collector.ZOMBIE
    (tmp_path / "d.root").write_bytes(b"")
    assert collector.check_content(tmp_path / "d.root")[0] == collector.ZOMBIE
    simulate.write_dqm_file(tmp_path / "e.root", RUN, ["Ecal"], n_hists=5, strict=False, run_summary=False)
    assert collector.check_content(tmp_path / "e.root") == (collector.INCOMPLETE, "no Run summary folder")


def test_good_final_uploaded_snapshots_kept_as_two_d_files(producer: collector.Producer) -> None:
    final = good(producer.dir / FINAL)
    md5 = hashlib.md5(final.read_bytes()).hexdigest()
    for n in (1, 2, 3):
        good(producer.dir / snap(n))
    report = run_collector(producer)
    [up] = uploads(config.get().dropbox)
    assert up.name == FINAL and up.parent.name == "0000"
    origin = dropbox.read_origin(str(up) + ".origin")
    assert origin.md5 == md5 and origin.size == up.stat().st_size and origin.source.startswith("prod1:")
    done = producer.done / "000" / "123"
    assert (done / FINAL).exists() and not final.exists()
    # three snapshots became _d files; the two newest are kept
    assert sorted(p.name for p in done.glob("*_d")) == [snap(2) + "_d", snap(3) + "_d"]
    assert [Path(p).name for p in report.pruned] == [snap(1) + "_d"]
    assert list(producer.dir.glob("*.root")) == []


def test_same_run_twice_gets_next_slot(producer: collector.Producer) -> None:
    good(producer.dir / FINAL)
    run_collector(producer)
    good(producer.dir / FINAL)
    run_collector(producer)
    assert [p.parent.name for p in uploads(config.get().dropbox)] == ["0000", "0001"]


def test_file_held_open_by_a_process_is_skipped(producer: collector.Producer) -> None:
    final = good(producer.dir / FINAL)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            ("import sys, time\nf = open(sys.argv[1], 'rb')\nprint('ready', flush=True)\ntime.sleep(600)\n"),
            str(final),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert str(final) in collector.open_files(producer.dir)
        report = run_collector(producer)
        assert report.skipped_open == [str(final)] and report.uploaded == []
        assert final.exists() and uploads(config.get().dropbox) == []
    finally:
        holder.kill()
        holder.wait()
    report = run_collector(producer)
    assert len(report.uploaded) == 1 and not final.exists()


def test_bad_final_falls_back_to_newest_good_snapshot(producer: collector.Producer) -> None:
    (producer.dir / FINAL).write_bytes(b"\0" * 100)  # zombie
    truncated(producer.dir / snap(9))  # newest, incomplete
    good(producer.dir / snap(5))  # the one to upload
    good(producer.dir / snap(2))
    expected_md5 = hashlib.md5((producer.dir / snap(5)).read_bytes()).hexdigest()
    report = run_collector(producer)
    [up] = uploads(config.get().dropbox)
    assert up.name == FINAL and dropbox.read_origin(str(up) + ".origin").md5 == expected_md5
    done = producer.done / "000" / "123"
    assert (done / snap(5)).exists()  # uploaded snapshot kept under its own name
    assert {Path(p).name for p in report.bad} == {FINAL + "_d", snap(9) + "_d"}
    # _d files: bad final, T9 (bad), T2 (left over): keep the two newest snapshots
    assert sorted(p.name for p in done.glob("*_d")) == [snap(2) + "_d", snap(9) + "_d"]


def test_all_bad_moves_everything_to_done(producer: collector.Producer) -> None:
    (producer.dir / FINAL).write_bytes(b"junk")
    truncated(producer.dir / snap(1))
    report = run_collector(producer)
    assert report.uploaded == [] and uploads(config.get().dropbox) == []
    assert len(report.bad) == 2 and list(producer.dir.glob("*.root")) == []


def test_orphan_snapshots_get_a_placeholder_after_fifteen_minutes(producer: collector.Producer) -> None:
    good(producer.dir / f"DQM_V0001_Hcal_R{RUN + 1:09d}.root", run=RUN + 1, sub="Hcal")
    run_collector(producer)  # uploads Hcal, last seen run = RUN + 1
    orphan = good(producer.dir / snap(4))
    report = run_collector(producer)
    assert report.placeholders == []  # an upload happened just now
    state = json.loads((producer.done / collector.STATE_FILE).read_text())
    later = state["last_upload"] + policy.ORPHAN_WAIT + 1
    report = run_collector(producer, now=later)
    assert report.placeholders == [str(producer.dir / FINAL)] and (producer.dir / FINAL).stat().st_size == 0
    report = run_collector(producer)  # empty placeholder is a zombie: the snapshot goes up instead
    assert [Path(p).name for p in report.bad] == [FINAL + "_d"]
    assert len(report.uploaded) == 1 and not orphan.exists()


def test_stale_orphan_removed_when_newer_file_done(producer: collector.Producer) -> None:
    good(producer.dir / FINAL)
    run_collector(producer)
    stale = good(producer.dir / snap(1))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    report = run_collector(producer, now=time.time() + 2 * policy.ORPHAN_WAIT)
    assert report.removed_orphans == [str(stale)] and not stale.exists()


def test_stop_file(producer: collector.Producer) -> None:
    good(producer.dir / FINAL)
    producer.done.mkdir(parents=True, exist_ok=True)
    (producer.done / collector.STOP_FILE).touch()
    assert run_collector(producer).stopped
    assert (producer.dir / FINAL).exists()


def test_upload_to_root_url_dropbox(producer: collector.Producer, xrootd_dir: str, tmp_path: Path) -> None:
    src = good(tmp_path / snap(3))
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    first = collector.upload_as(str(src), FINAL, xrootd_dir, timeout=30, source="prod1:x")
    second = collector.upload_as(str(src), FINAL, xrootd_dir, timeout=30, source="prod1:x")
    assert first == f"{xrootd_dir}/0000/{FINAL}" and second == f"{xrootd_dir}/0001/{FINAL}"
    st = storage.stat(first + ".origin", 30)
    assert st is not None and st.size > 0
    local = tmp_path / "origin"
    storage.copy(first + ".origin", str(local), timeout=30)
    origin = dropbox.read_origin(local)
    assert origin.md5 == md5 and origin.size == src.stat().st_size


def test_collect_task_and_schedule(producer: collector.Producer) -> None:
    from t0dqm.tasks import collect as tasks

    good(producer.dir / FINAL)
    result = tasks.collect.apply(args=("prod1",)).get()
    assert len(result[str(producer.dir)]["uploaded"]) == 1
    schedule = beat.producer_schedule(config.get())
    assert schedule["collect-prod1"]["options"]["queue"].endswith("collect.prod1")
    assert schedule["clean-producer-prod1"]["task"] == "t0dqm.tasks.collect.clean_producer"
