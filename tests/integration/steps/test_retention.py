"""Tier-0 disk retention end to end: outputs registered in the catalog, real files under the deletion
roots, the task in dry-run then executed, the CLI plan and --execute; audit rows match what disappeared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from t0dqm import config
from t0dqm.catalog import outputs as catalog_outputs
from t0dqm.catalog.db import audit, get_catalog, t0_outputs
from t0dqm.cli import cli
from t0dqm.steps import retention as outputs

NOW = 1_700_000_000.0
DAY = 86400
ENDPOINTS = ("T1_US_FNAL_Disk", "T2_CH_CERN")


@pytest.fixture
def disk(settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Outputs on a "Tier-0 disk" inside the deletion roots, plus one outside them."""
    monkeypatch.setenv("T0DQM_ROOT", str(settings.root))
    cat = get_catalog(settings.catalog_url)
    base = settings.flavour_root / "t0disk" / "store" / "data"
    base.mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    spec = {  # name: (dir, age, endpoints done, needed_by)
        "released": (base, 8 * DAY, ENDPOINTS, 0),
        "exactly7": (base, 7 * DAY, ENDPOINTS, 0),
        "young": (base, 7 * DAY - 1, ENDPOINTS, 0),
        "one-endpoint": (base, 30 * DAY, ENDPOINTS[:1], 0),
        "needed": (base, 30 * DAY, ENDPOINTS, 2),
        "outside": (outside, 30 * DAY, ENDPOINTS, 0),
    }
    paths = {}
    for name, (where, age, done, needed) in spec.items():
        p = where / f"{name}.root"
        p.write_bytes(b"x" * (100 + len(name)))
        paths[name] = p
        catalog_outputs.record_output(
            cat, str(p), p.stat().st_size, "0000abcd", ENDPOINTS, created_at=NOW - age
        )
        for endpoint in done:
            assert catalog_outputs.mark_endpoint_done(cat, str(p), endpoint)
        assert catalog_outputs.set_needed_by(cat, str(p), needed)
    return paths


def states(settings: config.Settings) -> dict[str, str]:
    with get_catalog(settings.catalog_url).read() as conn:
        return {
            Path(r.path).stem: r.state for r in conn.execute(select(t0_outputs.c.path, t0_outputs.c.state))
        }


def path_audit(settings: config.Settings) -> list[tuple[str, str, int, str]]:
    with get_catalog(settings.catalog_url).read() as conn:
        return sorted(
            (r.action, Path(r.path).stem, r.size, r.rule)
            for r in conn.execute(
                select(audit.c.action, audit.c.path, audit.c.size, audit.c.rule).where(
                    audit.c.entity == "path"
                )
            )
        )


def test_registration_api(settings: config.Settings) -> None:
    cat = get_catalog(settings.catalog_url)
    path = str(settings.flavour_root / "a.root")
    first = catalog_outputs.record_output(cat, path, 5, "00000001", ["B", "A", "A"])
    assert catalog_outputs.record_output(cat, path, 999, None, ["C"]) == first  # idempotent, facts kept
    assert catalog_outputs.mark_endpoint_done(cat, path, "A") and catalog_outputs.mark_endpoint_done(
        cat, path, "A"
    )
    assert not catalog_outputs.mark_endpoint_done(cat, "/nope", "A")
    assert catalog_outputs.set_needed_by(cat, path, 3) and not catalog_outputs.set_needed_by(cat, "/nope", 1)
    with pytest.raises(ValueError):
        catalog_outputs.set_needed_by(cat, path, -1)
    with cat.read() as conn:
        row = conn.execute(select(t0_outputs)).mappings().one()
    assert (
        row["size"],
        json.loads(row["endpoints_required"]),
        json.loads(row["endpoints_done"]),
        row["needed_by"],
        row["state"],
    ) == (5, ["A", "B"], ["A"], 3, "present")


def test_dry_run_then_execute(settings: config.Settings, disk: dict[str, Path]) -> None:
    from t0dqm.tasks.retention import retention_cleanup

    runner = CliRunner()
    # disabled by default: the beat task does nothing
    assert retention_cleanup.apply(kwargs={"now": NOW}).get() == {"skipped": "retention.enabled is false"}

    # CLI plan: nothing deleted, no audit
    r = runner.invoke(cli, ["t0", "retention", "--now", str(NOW)])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert [d["path"] for d in plan["delete"]] == sorted(d["path"] for d in plan["delete"])
    assert sorted(Path(d["path"]).stem for d in plan["delete"]) == ["exactly7", "outside", "released"]
    assert {d["reason"] for d in plan["delete"]} == {"released"}
    assert plan["kept"] == {"minimum-age": 1, "not-at-endpoints": 1, "needed-by-processing": 1}
    assert plan["bytes"] == sum(disk[n].stat().st_size for n in ("exactly7", "released", "outside"))
    assert "execution" not in plan and path_audit(settings) == []

    # the task in dry-run: dry-run audit rows for what would go, nothing goes, rows unchanged
    res = retention_cleanup.apply(kwargs={"dry_run": True, "now": NOW, "force": True}).get()
    ex = res["execution"]
    assert ex["dry_run"] is True and sorted(Path(p).stem for p in ex["deleted"]) == ["exactly7", "released"]
    assert len(ex["refused"]) == 1 and "outside" in ex["refused"][0]
    assert all(p.exists() for p in disk.values())
    assert set(states(settings).values()) == {"present"}
    dry = path_audit(settings)
    assert dry == sorted(
        ("dry-run-delete", n, disk[n].stat().st_size, "t0-retention") for n in ("exactly7", "released")
    )

    # executed through the CLI: exit 1 because one target is refused
    r = runner.invoke(cli, ["t0", "retention", "--execute", "--now", str(NOW)])
    assert r.exit_code == 1, r.output
    ex = json.loads(r.stdout)["execution"]
    assert ex["dry_run"] is False and sorted(Path(p).stem for p in ex["deleted"]) == ["exactly7", "released"]
    gone = {n for n, p in disk.items() if not p.exists()}
    assert gone == {"exactly7", "released"}
    deleted_audit = [row for row in path_audit(settings) if row[0] == "delete"]
    assert {row[1] for row in deleted_audit} == gone
    assert all(row[3] == "t0-retention" and row[2] == 100 + len(row[1]) for row in deleted_audit)
    assert states(settings) == {
        "released": "deleted",
        "exactly7": "deleted",
        "young": "present",
        "one-endpoint": "present",
        "needed": "present",
        "outside": "present",
    }
    # a deleted output cannot be claimed by processing any more
    assert not catalog_outputs.set_needed_by(get_catalog(settings.catalog_url), str(disk["released"]), 1)

    # the missing endpoint arrives: released at the next run; the needed one once its jobs finish
    cat = get_catalog(settings.catalog_url)
    catalog_outputs.mark_endpoint_done(cat, str(disk["one-endpoint"]), ENDPOINTS[1])
    catalog_outputs.set_needed_by(cat, str(disk["needed"]), 0)
    res = retention_cleanup.apply(kwargs={"dry_run": False, "now": NOW, "force": True}).get()
    assert sorted(Path(p).stem for p in res["execution"]["deleted"]) == ["needed", "one-endpoint"]
    assert {n for n, p in disk.items() if not p.exists()} == {
        "exactly7",
        "released",
        "needed",
        "one-endpoint",
    }
    assert {row[1] for row in path_audit(settings) if row[0] == "delete"} == {
        "exactly7",
        "released",
        "needed",
        "one-endpoint",
    }


def test_lost_race_and_resume(settings: config.Settings, disk: dict[str, Path]) -> None:
    cat = get_catalog(settings.catalog_url)
    _run, rows = outputs.plan(cat, NOW, 7)
    row = rows[str(disk["released"])]
    # a job registers itself after the plan was made: the conditional take refuses
    assert catalog_outputs.set_needed_by(cat, str(disk["released"]), 1)
    assert catalog_outputs.take(cat, row) is False
    assert catalog_outputs.set_needed_by(cat, str(disk["released"]), 0)
    # a run killed after taking the row ("deleting") is finished by the next run, whatever the facts now
    with cat.begin() as conn:
        conn.execute(
            update(t0_outputs).where(t0_outputs.c.path == str(disk["young"])).values(state="deleting")
        )
    res = outputs.run_retention(cat, settings, now=NOW, dry_run=False)
    assert sorted(Path(p).stem for p in res.deleted) == ["exactly7", "released", "young"]
    assert [d["reason"] for d in res.delete if Path(d["path"]).stem == "young"] == ["resume"]
    assert states(settings)["young"] == "deleted" and not disk["young"].exists()
    # the already-deleted file: gone before the next run -> nothing more to do
    again = outputs.run_retention(cat, settings, now=NOW + 30 * DAY, dry_run=False)
    assert not again.deleted and not again.missing and len(again.refused) == 1
