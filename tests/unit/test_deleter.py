"""The guarded deleter (t0dqm.deleter): it refuses symlink and ``..`` escapes, targets outside the configured
roots, the roots themselves and folders, and a repository ROOT file whose archive is not verified on tape or
that the catalog does not know; what it deletes is audited."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from t0dqm import config, deleter
from t0dqm.catalog.db import archives, audit, files, get_catalog


def test_deleter_refuses_escapes_roots_and_unverified(settings: config.Settings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    keep = outside / "keep.txt"
    keep.write_text("precious")
    work = settings.work_dir
    work.mkdir(parents=True)
    (work / "link.txt").symlink_to(keep)
    (work / "dirlink").symlink_to(outside)
    refusals = {
        str(work / "link.txt"): "outside the configured roots",  # symlink escape (file)
        str(work / "dirlink" / "keep.txt"): "outside the configured roots",  # symlink escape (folder)
        str(work / ".." / ".." / ".." / "outside" / "keep.txt"): "outside the configured roots",
        str(keep): "outside the configured roots",
        str(settings.flavour_root): "is a root itself",
        str(settings.flavour_root) + "/.": "is a root itself",
        str(work / ".." / ".." / settings.flavour): "is a root itself",
        str(work): "is a directory",
        "root://127.0.0.1:1//store/../etc/passwd": "'..' in path",
        "root://127.0.0.1:1//elsewhere/x.root": "outside the configured roots",
    }
    for target, why in refusals.items():
        with pytest.raises(deleter.DeletionRefused, match=__import__("re").escape(why)):
            deleter.delete(target, rule="test", dry_run=False)
    assert keep.read_text() == "precious" and (work / "link.txt").is_symlink()

    # repository ROOT files: only once their archive is verified
    catalog = get_catalog()
    repo = settings.repository / "OnlineData" / "x"
    repo.mkdir(parents=True)
    now = time.time()
    states = {"none": None, "open": "open", "copied": "copied", "failed": "failed", "verified": "verified"}
    with catalog.begin() as conn:
        for key, state in states.items():
            archive_id = None
            if state:
                archive_id = conn.execute(
                    insert(archives).values(
                        path=f"z_{key}_S0001.zip",
                        pattern=f"z_{key}_S%04d.zip",
                        serial=1,
                        state=state,
                        created_at=now,
                        updated_at=now,
                    )
                ).inserted_primary_key[0]
            (repo / f"{key}.root").write_bytes(b"root\0data")
            conn.execute(
                insert(files).values(
                    path=f"OnlineData/x/{key}.root",
                    name=f"{key}.root",
                    cls="online_data",
                    run=300001,
                    version=1,
                    dataset="/Global/Online/ALL",
                    size=9,
                    adler32="00000000",
                    mtime=now,
                    state="zipped",
                    archive_id=archive_id,
                    created_at=now,
                    updated_at=now,
                )
            )
    (repo / "unknown.root").write_bytes(b"root\0data")
    for key in ("none", "open", "copied", "failed"):
        with pytest.raises(deleter.DeletionRefused, match="archive not verified on tape"):
            deleter.delete(str(repo / f"{key}.root"), rule="test", dry_run=False)
    with pytest.raises(deleter.DeletionRefused, match="not in the catalog"):
        deleter.delete(str(repo / "unknown.root"), rule="test", dry_run=False)
    assert sorted(p.name for p in repo.iterdir()) == sorted([f"{k}.root" for k in states] + ["unknown.root"])
    assert deleter.delete(str(repo / "verified.root"), rule="test", reason="archived", dry_run=False)
    assert not (repo / "verified.root").exists()
    with catalog.read() as conn:
        rows = [dict(r) for r in conn.execute(select(audit).where(audit.c.rule == "test")).mappings()]
    assert [(r["action"], r["path"].rsplit("/", 1)[-1]) for r in rows] == [("delete", "verified.root")]


def _deletion_audit(settings: config.Settings) -> list[tuple[str, str, int | None, str, str | None]]:
    with get_catalog(settings.catalog_url).read() as conn:
        return [
            (r.action, r.path.rsplit("/", 1)[-1], r.size, r.rule, r.detail)
            for r in conn.execute(select(audit).where(audit.c.entity == "path").order_by(audit.c.id))
        ]


def test_dry_run_keeps_the_file_and_audits_what_would_go(settings: config.Settings) -> None:
    work = settings.work_dir
    work.mkdir(parents=True)
    target = work / "scratch.txt"
    target.write_bytes(b"12345")
    assert deleter.delete(str(target), rule="test", reason="why", dry_run=True)
    assert target.read_bytes() == b"12345"
    assert _deletion_audit(settings) == [("dry-run-delete", "scratch.txt", 5, "test", "why")]


def test_a_file_already_gone_is_audited_as_missing(settings: config.Settings) -> None:
    work = settings.work_dir
    work.mkdir(parents=True)
    assert deleter.delete(str(work / "gone.txt"), rule="test", dry_run=False) is False
    assert deleter.delete(str(work / "gone.txt"), rule="test", dry_run=True) is False
    assert _deletion_audit(settings) == [
        ("delete-missing", "gone.txt", None, "test", None),
        ("dry-run-delete", "gone.txt", None, "test", None),
    ]
