"""Issue 14 on SQLite and PostgreSQL: the bounded queries decide exactly what the pure policies decide
over the whole catalog, and the running counts always match a recount.

Catalog rows are random but seeded. Deletions run for real through the guarded deleter: the ROOT files
are not on disk, so each deletion is audited as ``delete-missing`` and its row moves to ``removed``.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, event, func, insert, select, update

from t0dqm import config
from t0dqm.catalog import counts, queries
from t0dqm.catalog.db import Catalog, archives, files, get_catalog, reset_catalogs
from t0dqm.catalog.states import REMOVED, archive_safe_states
from t0dqm.policies import quota, versions
from t0dqm.steps import cleanup
from tests.conftest import make_settings

CLASSES = ("online_data", "offline_data", "relval_mc")
ARCHIVE_STATES = ("open", "frozen", "copied", "verified", "on_tape", "cleaned")


@pytest.fixture(params=["sqlite", "postgresql"])
def scale_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[config.Settings]:
    overrides = {f"quota__{c}": str(10**12) for c in CLASSES}
    if request.param == "postgresql":
        overrides["catalog_url"] = request.getfixturevalue("pg_url")
        Catalog(
            overrides["catalog_url"]
        ).upgrade()  # `t0dqm db upgrade`: PostgreSQL is never migrated implicitly
    current = make_settings(tmp_path / "root", **overrides)
    config.reset(current)
    yield current
    reset_catalogs()
    config.reset(None)


def add_archives(cat: Catalog, rng: random.Random, n: int) -> list[int]:
    now = time.time()
    with cat.begin() as conn:
        return [
            conn.execute(
                insert(archives).values(
                    path=f"z/a{i}_{rng.random()}.zip",
                    pattern=f"z/a{i}_S%04d.zip",
                    serial=1,
                    state=rng.choice(ARCHIVE_STATES),
                    size=rng.randrange(10**6),
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]
            for i in range(n)
        ]


def add_files(
    cat: Catalog,
    rng: random.Random,
    n: int,
    archive_ids: list[int],
    *,
    samples: int = 160,
    base: float = 1.7e9,
) -> None:
    """Random files: a few versions per sample, random states, archives, mtimes with ties, paths whose
    order differs between bytewise and locale collation (case, '_', '-')."""
    rows: list[dict[str, Any]] = []
    top: dict[tuple[int, str, str], int] = {}
    with cat.read() as conn:
        for run, ds, sub, version in conn.execute(
            select(files.c.run, files.c.dataset, files.c.subsystem, func.max(files.c.version)).group_by(
                files.c.run, files.c.dataset, files.c.subsystem
            )
        ):
            top[(run, ds, sub or "")] = max(top.get((run, ds, sub or ""), 0), version)
    for _ in range(n):
        run, ds = rng.randrange(samples // 4), rng.choice(("/A/B/DQMIO", "/A/C/DQMIO", "/a/b/DQMIO"))
        sub = rng.choice((None, "Ecal", ""))
        key = (run, ds, sub or "")
        version = top.get(key, 0) + 1
        top[key] = version
        state = rng.choice(("received", "zipped", "zipped", "removed"))
        arch = rng.choice(archive_ids) if state != "received" or rng.random() < 0.2 else None
        name = f"{rng.choice(('DQM', 'dqm', 'DQM_', 'DQM-'))}_V{version:04d}_R{run:09d}_{len(rows)}_{rng.random():.6f}.root"
        rows.append(
            dict(
                path=f"{rng.choice(CLASSES)}/{name}",
                name=name,
                cls=rng.choice(CLASSES),
                run=run,
                version=version,
                dataset=ds,
                subsystem=sub,
                size=rng.randrange(1, 10**6),
                adler32="00000001",
                mtime=base + rng.randrange(50) * 60.0,
                state=state,
                index_state="indexed",
                archive_id=arch,
                created_at=base,
                updated_at=base,
                attempts=0,
            )
        )
    with cat.begin() as conn:
        conn.execute(insert(files), rows)


def all_rows(cat: Catalog) -> list[Any]:
    with cat.read() as conn:
        return conn.execute(
            select(files, archives.c.state.label("archive_state")).select_from(
                files.outerjoin(archives, files.c.archive_id == archives.c.id)
            )
        ).all()


def pure_version_plan(settings: config.Settings, cat: Catalog) -> dict[int, str]:
    """The version policy over every row: file id -> action, for present files that are not the newest."""
    safe = archive_safe_states(settings["archive"]["require_tape"])
    vfiles = [
        versions.VersionedFile(
            r.path,
            r.run,
            r.dataset,
            r.subsystem,
            r.version,
            archived=r.archive_state in safe,
            present=r.state != REMOVED,
            file_id=r.id,
        )
        for r in all_rows(cat)
    ]
    return {d.file.file_id: d.action for d in versions.plan_versions(vfiles) if d.action != versions.KEEP}


def worklist_plan(settings: config.Settings, cat: Catalog) -> dict[int, str]:
    plan = cleanup.plan_version_control(settings, cat)
    assert not plan.more
    return {d.file.file_id: d.action for d in plan.decisions if d.action != versions.KEEP}


def recount(cat: Catalog) -> dict[counts.Key, counts.Total]:
    out: dict[counts.Key, counts.Total] = {}
    with cat.read() as conn:
        for cls, state, ix, n, size in conn.execute(
            select(
                files.c.cls, files.c.state, files.c.index_state, func.count(), func.sum(files.c.size)
            ).group_by(files.c.cls, files.c.state, files.c.index_state)
        ):
            out[counts.Key("file", cls, state, ix)] = counts.Total(n, int(size))
        for state, n, size in conn.execute(
            select(archives.c.state, func.count(), func.sum(archives.c.size)).group_by(archives.c.state)
        ):
            out[counts.Key("archive", "", state, "")] = counts.Total(n, int(size))
    return out


def current_totals(cat: Catalog) -> dict[counts.Key, counts.Total]:
    with cat.read() as conn:
        return {k: v for k, v in counts.totals(conn).items() if v != (0, 0)}


def test_version_worklist_decides_what_the_policy_decides(scale_settings: config.Settings) -> None:
    rng = random.Random(14)
    cat = get_catalog()
    arch = add_archives(cat, rng, 12)
    add_files(cat, rng, 300, arch)
    expected = pure_version_plan(scale_settings, cat)
    assert versions.DELETE in expected.values() and versions.WAIT in expected.values()
    assert worklist_plan(scale_settings, cat) == expected
    removals = cleanup.version_control(scale_settings, cat)
    assert sorted(r.file_id for r in removals) == sorted(
        i for i, a in expected.items() if a == versions.DELETE
    )
    assert {r.outcome for r in removals} == {"missing"}
    waiting = pure_version_plan(scale_settings, cat)
    assert set(waiting.values()) == {versions.WAIT}
    # only the samples that still wait stay on the worklist
    with cat.read() as conn:
        listed = {
            (r.run, r.dataset)
            for r in conn.execute(
                select(files.c.run, files.c.dataset).where(files.c.versions_checked_at.is_(None))
            )
        }
        by_id = {
            r.id: (r.run, r.dataset) for r in conn.execute(select(files.c.id, files.c.run, files.c.dataset))
        }
    assert listed == {by_id[i] for i in waiting} and len(listed) < len(set(by_id.values()))
    assert worklist_plan(scale_settings, cat) == waiting
    # archives become safe, new versions arrive (and an older version is imported late): still the same
    with cat.begin() as conn:
        conn.execute(update(archives).where(archives.c.id.in_(arch[:6])).values(state="on_tape"))
    add_files(cat, rng, 60, arch)
    with cat.begin() as conn:  # a late import of an old version of a sample already checked
        row = (
            conn.execute(select(files).where(files.c.versions_checked_at.is_not(None)).order_by(files.c.id))
            .mappings()
            .first()
        )
        assert row is not None
        old = {k: v for k, v in row.items() if k not in ("id", "versions_checked_at")}
        conn.execute(
            insert(files).values(
                {**old, "path": row["path"] + ".late", "version": 0, "state": "zipped", "archive_id": arch[0]}
            )
        )
    expected = pure_version_plan(scale_settings, cat)
    assert worklist_plan(scale_settings, cat) == expected
    assert cleanup.version_control(scale_settings, cat, dry_run=True)  # dry run: nothing leaves the worklist
    assert worklist_plan(scale_settings, cat) == expected


def test_quota_walk_decides_what_the_policy_decides(scale_settings: config.Settings) -> None:
    rng = random.Random(41)
    cat = get_catalog()
    arch = add_archives(cat, rng, 10)
    add_files(cat, rng, 400, arch)
    present = [r for r in all_rows(cat) if r.state != REMOVED]
    used = {c: sum(r.size for r in present if r.cls == c) for c in CLASSES}
    # one class under quota, one just over, one far over (its walk spans several chunks)
    quotas = {
        "online_data": used["online_data"] + 1,
        "offline_data": used["offline_data"] - 1,
        "relval_mc": max(1, used["relval_mc"] // 3),
    }
    settings = make_settings(
        scale_settings.root,
        catalog_url=scale_settings.catalog_url,
        **{f"quota__{c}": str(q) for c, q in quotas.items()},
    )
    safe = archive_safe_states(settings["archive"]["require_tape"])
    qfiles = [
        quota.QuotaFile(
            r.path,
            r.cls,
            r.size,
            r.mtime,
            archived=r.archive_state in safe,
            present=r.state != REMOVED,
            file_id=r.id,
        )
        for r in all_rows(cat)
    ]
    expected = quota.plan_quota(qfiles, quotas)
    plans, _, truncated = cleanup.plan_quota_control(settings, cat)
    assert truncated == ()
    for cls in CLASSES:
        got, want = plans[cls], expected[cls]
        assert (got.used, got.target, got.after, got.shortfall) == (
            want.used,
            want.target,
            want.after,
            want.shortfall,
        )
        assert [d.file.file_id for d in got.deletions] == [d.file.file_id for d in want.deletions]
        assert [f.file_id for f in got.blocked] == [f.file_id for f in want.blocked]
    assert not expected["online_data"].deletions and expected["relval_mc"].deletions
    # small chunks: the running sum carries over from one chunk to the next
    with cat.read() as conn:
        need = quota.excess(used["relval_mc"], quotas["relval_mc"])
        rows, cut = queries.quota_prefix(conn, "relval_mc", need, safe, False, first_chunk=2, max_chunk=4)
        assert not cut and [r.id for r in rows][-1] in {
            f.file_id
            for f in [*expected["relval_mc"].blocked, *(d.file for d in expected["relval_mc"].deletions)]
        }
        capped, cut = queries.quota_prefix(conn, "relval_mc", need, safe, False, max_rows=3, first_chunk=2)
        assert cut and [r.id for r in capped] == [r.id for r in rows][:3]
    report = cleanup.quota_control(settings, cat)
    assert sorted(r.file_id for r in report.removals) == sorted(
        d.file.file_id for p in expected.values() for d in p.deletions
    )


def test_running_counts_match_a_recount(scale_settings: config.Settings) -> None:
    rng = random.Random(7)
    cat = get_catalog()
    arch = add_archives(cat, rng, 8)
    add_files(cat, rng, 200, arch)
    assert current_totals(cat) == recount(cat)
    assert counts.compact(cat) > 0
    with cat.read() as conn:
        assert conn.execute(select(func.count()).select_from(counts.count_deltas)).scalar_one() == 0
    assert current_totals(cat) == recount(cat)
    with cat.begin() as conn:  # changes of state, index state, class, size; deletes; archive moves
        conn.execute(update(files).where(files.c.id % 3 == 0).values(state="removed"))
        conn.execute(
            update(files).where(files.c.id % 5 == 0).values(index_state="partial", size=files.c.size + 7)
        )
        conn.execute(update(files).where(files.c.id % 7 == 0).values(cls="relval_mc"))
        conn.execute(
            update(files).where(files.c.id % 11 == 0).values(updated_at=1.0)
        )  # not counted: no delta
        conn.execute(delete(files).where(files.c.id % 13 == 0))
        conn.execute(update(archives).where(archives.c.id == arch[0]).values(state="cleaned", size=5))
    assert current_totals(cat) == recount(cat)
    with pytest.raises(RuntimeError), cat.begin() as conn:  # a rolled-back change leaves no delta behind
        conn.execute(update(files).values(state="zipped"))
        raise RuntimeError("abort")
    assert current_totals(cat) == recount(cat)
    counts.compact(cat, chunk=7)  # several chunks
    assert current_totals(cat) == recount(cat)
    with cat.begin() as conn:
        counts.rebuild(conn)
    assert current_totals(cat) == recount(cat)


NOT_IN_SQL = re.compile(r"NOT\s+IN\s*\(\s*SELECT", re.IGNORECASE)


def test_periodic_decisions_send_no_not_in_subquery(scale_settings: config.Settings) -> None:
    """Every statement the periodic decisions send, watched at the cursor: anti-joins are NOT EXISTS."""
    from prometheus_client import generate_latest

    from t0dqm.policies import health as health_policy
    from t0dqm.servers.metrics import make_registry
    from t0dqm.steps import health, tape
    from t0dqm.steps.reconcile import RECOVERERS
    from t0dqm.tasks import archive, index  # noqa: F401 - registers the recoverers

    rng = random.Random(3)
    cat = get_catalog()
    add_files(cat, rng, 50, add_archives(cat, rng, 4))
    with (
        cat.begin() as conn
    ):  # received files with a zip pattern, in no archive: what the zip queries look for
        conn.execute(
            update(files).where(files.c.state == "received").values(zippat="z/p_S%04d.zip", created_at=1.0)
        )
    sent: list[str] = []

    def watch(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engines = {id(e): e for e in (cat.engine, cat.read_engine)}.values()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", watch)
    try:
        now = time.time()
        cleanup.plan_version_control(scale_settings, cat)
        cleanup.plan_quota_control(scale_settings, cat)
        scrape = generate_latest(
            make_registry(scale_settings, cat, broker_url="redis://127.0.0.1:9/0", prefix="")
        )
        cfg = scale_settings.health
        limits = health_policy.limits_from(
            cfg, scale_settings["alarms"]["latency_seconds"], scale_settings["archive"]["verify_delay"]
        )
        health.catalog_facts(cat, scale_settings)
        _waiting, totals = health.waiting_items(cat, scale_settings, limits, now, 10)
        with cat.read() as conn:
            for fn in RECOVERERS.values():
                list(fn(conn, scale_settings, now))
            tape._due(conn, scale_settings, now)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", watch)
    assert totals["zip"] > 0 and b't0dqm_oldest_waiting_seconds{step="zip"}' in scrape
    assert len(sent) > 10 and any("NOT (EXISTS" in s for s in sent)
    assert [s for s in sent if NOT_IN_SQL.search(s)] == []


def test_db_recount_cli(scale_settings: config.Settings) -> None:
    from click.testing import CliRunner

    from t0dqm.cli.stack import db

    rng = random.Random(5)
    cat = get_catalog()
    add_files(cat, rng, 30, add_archives(cat, rng, 2))
    runner = CliRunner()
    assert runner.invoke(db, ["recount", "--check"]).exit_code == 0
    with cat.begin() as conn:  # a bulk change made with the triggers off
        counts.drop_triggers(conn)
        conn.execute(update(files).values(state="removed"))
        counts.install_triggers(conn)
    result = runner.invoke(db, ["recount", "--check"])
    assert result.exit_code == 1 and "running" in result.output
    assert current_totals(cat) != recount(cat)  # --check changed nothing
    assert runner.invoke(db, ["recount"]).exit_code == 0
    assert current_totals(cat) == recount(cat)
    assert runner.invoke(db, ["recount", "--check"]).exit_code == 0
