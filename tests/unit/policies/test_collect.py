"""Producer collector and cleaner decisions (pure)."""

from __future__ import annotations

from t0dqm.policies import collect as pc


def pf(name: str, mtime: float = 0.0, size: int = 0, folder: str = "/c/") -> pc.ProducerFile:
    f = pc.parse(folder + name, mtime=mtime, size=size)
    assert f is not None, name
    return f


def test_parse_final_snapshot_done_and_rejects() -> None:
    final = pf("DQM_V0001_Ecal_R000123456.root")
    assert final.is_final and final.subsystem == "Ecal" and final.run == 123456 and final.prefix == "DQM"
    snap = pf("Playback_V0003_Pixel_R000123456_T00000012.root")
    assert snap.snapshot == 12 and snap.version == 3 and snap.prefix == "Playback"
    done = pf("DQM_V0001_Ecal_R000123456_T00000002.root_d")
    assert done.done and done.snapshot == 2
    for bad in (
        "DQM_V1_Ecal_R000123456.root",
        "DQM_V0001_Ecal_R12345.root",
        "DQM_V0001_Ecal_R000123456.root.tmp",
        "Other_V0001_Ecal_R000123456.root",
        "DQM_V0001_Ec-al_R000123456.root",
        "DQM_V0001_Ecal_R000123456_T123.root",
    ):
        assert pc.parse(bad) is None, bad


def test_plan_collect_orders_snapshots_newest_first_and_skips_open() -> None:
    files = [
        pf("DQM_V0001_Ecal_R000000100.root"),
        pf("DQM_V0001_Ecal_R000000100_T00000001.root"),
        pf("DQM_V0001_Ecal_R000000100_T00000010.root"),
        pf("DQM_V0001_Ecal_R000000100_T00000002.root"),
        pf("DQM_V0001_Hcal_R000000100_T00000005.root"),  # other subsystem: not Ecal's
        pf("Playback_V0001_Ecal_R000000100_T00000007.root"),  # other prefix
        pf("DQM_V0001_Hcal_R000000200.root"),
        pf("DQM_V0001_Pixel_R000000300.root"),
        pf("DQM_V0001_Ecal_R000000050.root_d"),
    ]
    jobs = pc.plan_collect(
        files,
        open_paths={"/c/DQM_V0001_Pixel_R000000300.root", "/c/DQM_V0001_Ecal_R000000100_T00000002.root"},
    )
    assert [j.final.name for j in jobs] == [
        "DQM_V0001_Hcal_R000000200.root",
        "DQM_V0001_Ecal_R000000100.root",
    ]
    ecal = jobs[1]
    assert [s.snapshot for s in ecal.snapshots] == [10, 1]  # T2 is open
    assert jobs[0].snapshots == ()


def test_snapshot_order_ties_broken_by_mtime() -> None:
    a = pf("DQM_V0001_Ecal_R000000100_T00000003.root", mtime=10)
    b = pf("DQM_V0001_Ecal_R000000100_T00000003.root", mtime=20, folder="/d/")
    assert pc.snapshot_order([a, b]) == [b, a]


def test_upload_name_and_done_subdir() -> None:
    assert pc.upload_name("Ecal", 123456) == "DQM_V0001_Ecal_R000123456.root"
    assert pc.done_subdir(123456) == "000/123"
    assert pc.done_subdir(987654321) == "987/654"


def test_done_keeps_two_newest_per_subsystem_and_run() -> None:
    files = [
        pf("DQM_V0001_Ecal_R000000100.root_d", mtime=50),
        pf("DQM_V0001_Ecal_R000000100_T00000001.root_d", mtime=10),
        pf("DQM_V0001_Ecal_R000000100_T00000003.root_d", mtime=30),
        pf("DQM_V0001_Ecal_R000000100_T00000002.root_d", mtime=20),
        pf("DQM_V0001_Hcal_R000000100_T00000001.root_d"),
        pf("DQM_V0001_Hcal_R000000100_T00000002.root_d"),
        pf("DQM_V0001_Ecal_R000000101_T00000002.root_d"),
        pf("DQM_V0001_Ecal_R000000100_T00000009.root"),  # not a _d file: never touched
    ]
    gone = {f.name for f in pc.done_to_delete(files)}
    assert gone == {"DQM_V0001_Ecal_R000000100.root_d", "DQM_V0001_Ecal_R000000100_T00000001.root_d"}
    assert pc.done_to_delete(files, keep=5) == []


def test_orphans_wait_fifteen_minutes() -> None:
    snaps = [pf("DQM_V0001_Ecal_R000000100_T00000001.root", mtime=100)]
    assert (
        pc.plan_orphans(snaps, [], {}, last_upload=1000, last_seen_run=200, now=1000 + 899)
        == pc.OrphanDecision()
    )
    d = pc.plan_orphans(snaps, [], {}, last_upload=1000, last_seen_run=200, now=1000 + 900)
    assert d.placeholders == ("/c/DQM_V0001_Ecal_R000000100.root",) and d.remove == ()


def test_orphans_rules() -> None:
    snaps = [
        pf("DQM_V0001_Ecal_R000000100_T00000001.root", mtime=100),
        pf("DQM_V0001_Ecal_R000000100_T00000002.root", mtime=110),  # same final: one placeholder
        pf("DQM_V0001_Hcal_R000000100_T00000001.root", mtime=100),  # final exists
        pf("DQM_V0001_Pixel_R000000100_T00000001.root", mtime=100),  # newer file already done -> remove
        pf("DQM_V0001_Ecal_R000000300_T00000001.root", mtime=100),  # run newer than last seen: wait
    ]
    d = pc.plan_orphans(
        snaps,
        ["/c/DQM_V0001_Hcal_R000000100.root"],
        {("Pixel", 100): 500.0, ("Ecal", 100): 50.0},
        last_upload=0,
        last_seen_run=200,
        now=10_000,
    )
    assert d.placeholders == ("/c/DQM_V0001_Ecal_R000000100.root",)
    assert [s.name for s in d.remove] == ["DQM_V0001_Pixel_R000000100_T00000001.root"]


def test_cleaner_idle_below_high_mark() -> None:
    plan = pc.plan_clean(
        pc.DiskUsage(total=1000, used=899), [pf("DQM_V0001_Ecal_R000000100.root_d", size=500)]
    )
    assert not plan.act and plan.delete == ()


def test_cleaner_frees_done_files_by_run_order_down_to_half() -> None:
    done = [
        pf("DQM_V0001_Ecal_R000000300.root_d", size=100),
        pf("DQM_V0001_Ecal_R000000100_T00000001.root_d", size=150),
        pf("DQM_V0001_Hcal_R000000200.root_d", size=200),
        pf("DQM_V0001_Ecal_R000000100_T00000002.root_d", size=150),
        pf("DQM_V0001_Ecal_R000000400.root_d", size=100),
    ]
    plan = pc.plan_clean(pc.DiskUsage(total=1000, used=900), done)
    assert plan.act and plan.to_free == 400
    assert [p.rsplit("/", 1)[1] for p in plan.delete] == [
        "DQM_V0001_Ecal_R000000100_T00000001.root_d",
        "DQM_V0001_Ecal_R000000100_T00000002.root_d",
        "DQM_V0001_Hcal_R000000200.root_d",
    ]
    assert plan.freed == 500 and not plan.short


def test_cleaner_reports_short_when_done_cannot_free_enough() -> None:
    plan = pc.plan_clean(
        pc.DiskUsage(total=1000, used=950),
        [pf("DQM_V0001_Ecal_R000000100.root_d", size=100)],
        other_done=[("/done/junk", 50)],
    )
    assert plan.short and plan.delete == ("/c/DQM_V0001_Ecal_R000000100.root_d", "/done/junk")
    assert plan.freed == 150


def test_cleaner_collect_folder() -> None:
    names = [
        ("/c/DQM_V0001_Ecal_R000000100.root", 1.0),  # waiting for the collector: stays
        ("/c/DQM_V0001_Ecal_R000000100_T00000001.root", 1.0),  # snapshot: stays
        ("/c/a.tmp", 1.0),
        ("/c/b.tmp", 3.0),
        ("/c/c.tmp", 2.0),  # all but the newest go
        ("/c/notes.txt", 1.0),  # stray
        ("/c/held.txt", 1.0),  # stray but open: stays
    ]
    plan = pc.plan_clean(
        pc.DiskUsage(total=100, used=95),
        [],
        collect_names=names,
        collect_dirs=["/c/sub"],
        open_paths={"/c/held.txt"},
    )
    assert set(plan.collect_delete) == {"/c/notes.txt", "/c/c.tmp", "/c/a.tmp", "/c/sub"}
    assert plan.reasons["/c/sub"].startswith("subfolder")
