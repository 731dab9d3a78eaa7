"""Tier-0 placement against a real Rucio server (rucio 41 from PyPI, PostgreSQL, no Docker).

The server is started once per session (tests/integration/rucio_server.py); each test uses its own
acquisition era, so its datasets and blocks are its own. Rule states are driven as Rucio's daemons would
drive them: replicas declared available at the tape RSE (``update_replicas_states``) make a rule OK,
``failed_transfer`` in rucio core makes it STUCK.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from t0dqm import config, storage
from t0dqm.catalog import outputs as catalog_outputs
from t0dqm.catalog.alarms import active_alarms
from t0dqm.catalog.db import audit, get_catalog, quarantine, reset_catalogs, t0_outputs, t0_rules
from t0dqm.cli import cli
from t0dqm.clients.rucio import RucioGateway, RucioUnavailable
from t0dqm.dev import services
from t0dqm.steps import placement
from t0dqm.steps import retention as outputs
from tests.integration.rucio_server import RucioServer, drop, start

PG_ADMIN_URL = os.environ.get("T0DQM_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
DAY = 86400
RSES = ("T0_CH_CERN_Disk", "T1_US_FNAL_Tape", "T1_IT_CNAF_Tape", "T1_IT_CNAF_Disk")
STUCK_AFTER = 3600


@pytest.fixture(scope="session")
def rucio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    server = start(tmp_path_factory.mktemp("rucio"), PG_ADMIN_URL)
    admin = client(server)
    for rse in RSES:
        admin.add_rse(rse, deterministic=True)
    admin.add_scope("root", "cms")
    admin.add_account("transfer", "SERVICE", "transfer@localhost")
    for account in ("root", "transfer"):
        for rse in RSES:
            admin.set_local_account_limit(account, rse, 10**15)
    yield server
    drop(server, PG_ADMIN_URL)


def client(server: RucioServer) -> Any:
    from rucio.client import Client

    return Client(
        rucio_host=server.url,
        auth_host=server.url,
        account="root",
        auth_type="userpass",
        creds={"username": server.username, "password": server.password},
        timeout=30,
    )


@pytest.fixture
def admin(rucio: RucioServer) -> Any:
    return client(rucio)


def write_config(path: Path, root: Path, url: str, server: RucioServer | None, extra: str = "") -> Path:
    rucio_table = (
        ""
        if server is None
        else (
            f'[rucio]\nurl = "{url}"\naccount = "root"\nusername = "{server.username}"\n'
            f'password = "{server.password}"\nstuck_alarm_after = {STUCK_AFTER}\ntimeout = 20\n'
        )
    )
    path.write_text(
        f'root = "{root}"\nflavour = "dev"\n[retention]\nenabled = true\n{rucio_table}'
        f'[subscriptions]\ndisk_tiers = ["AOD"]\n[subscriptions.sites]\nZeroBias = "T1_IT_CNAF"\n'
        f"{extra}"
    )
    return path


def use(path: Path) -> config.Settings:
    reset_catalogs()
    settings = config.load(path, environ={})
    config.reset(settings)
    return settings


@pytest.fixture
def t0cfg(tmp_path: Path, rucio: RucioServer) -> Iterator[config.Settings]:
    yield use(write_config(tmp_path / "t0dqm.toml", tmp_path / "root", rucio.url, rucio))
    reset_catalogs()
    config.reset(None)


def era() -> str:
    return f"Run2024{uuid.uuid4().hex[:8].upper()}"


def make_files(settings: config.Settings, dataset: str, n: int = 3) -> list[dict[str, Any]]:
    """Real files on the Tier-0 disk (inside the deletion roots), with their size and adler32."""
    pd, proc, tier = dataset.strip("/").split("/")
    base = settings.flavour_root / "t0disk" / "store" / "data" / proc / pd / tier / "000" / "123" / "456"
    base.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        data = os.urandom(1000 + i)
        p = base / f"{uuid.uuid4().hex}.root"
        p.write_bytes(data)
        out.append({"path": str(p), "size": len(data), "adler32": f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"})
    return out


def new_output(
    settings: config.Settings, n: int, needed_by: int = 0
) -> tuple[Any, list[dict[str, Any]], str]:
    """A registered RAW output of n files in a fresh era: (catalog, files, block)."""
    dataset = f"/ZeroBias/{era()}-v1/RAW"
    files = make_files(settings, dataset, n)
    cat = get_catalog(settings.catalog_url)
    return cat, files, placement.register(cat, settings, dataset, files, needed_by=needed_by)["block"]


def rows(settings: config.Settings, table: Any, **where: Any) -> list[dict[str, Any]]:
    q = select(table)
    for key, value in where.items():
        q = q.where(table.c[key] == value)
    with get_catalog(settings.catalog_url).read() as conn:
        return [dict(r) for r in conn.execute(q.order_by(table.c.id)).mappings()]


def our_rules(admin: Any, block: str) -> dict[str, dict[str, Any]]:
    return {r["rse_expression"]: r for r in admin.list_did_rules("cms", block) if r["account"] == "root"}


def make_ok(admin: Any, rse: str, files: list[dict[str, Any]]) -> None:
    names = [placement.lfn_of(f["path"]) for f in files]
    assert admin.update_replicas_states(rse, [{"scope": "cms", "name": n, "state": "A"} for n in names])


def alarm_keys(settings: config.Settings) -> dict[str, dict[str, Any]]:
    return {a["key"]: a for a in active_alarms(get_catalog(settings.catalog_url))}


# ------------------------------------------------------------------------------------------- registration


def test_register_creates_rules_and_is_idempotent(t0cfg: config.Settings, admin: Any) -> None:
    dataset = f"/ZeroBias/{era()}-v1/RAW"
    files = make_files(t0cfg, dataset)
    cat = get_catalog(t0cfg.catalog_url)
    result = placement.register(cat, t0cfg, dataset, files, needed_by=2)
    block = result["block"]
    assert block.startswith(dataset + "#") and result["placement"]["site"] == "T1_IT_CNAF"
    assert "notice" not in result
    rules = our_rules(admin, block)
    assert set(rules) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}
    assert rules["T0_CH_CERN_Disk"]["state"] == "OK"  # the replicas are registered there
    assert rules["T1_IT_CNAF_Tape"]["state"] == "REPLICATING"
    assert all(r["expires_at"] is None and r["priority"] == 4 for r in rules.values())
    assert (
        rules["T1_IT_CNAF_Tape"]["activity"] == "T0 Tape"
        and rules["T0_CH_CERN_Disk"]["activity"] == "T0 Export"
    )
    assert {f["name"] for f in admin.list_files("cms", block)} == {placement.lfn_of(f["path"]) for f in files}
    assert [d["name"] for d in admin.list_content("cms", dataset)] == [block]
    # the catalog: one row per file, one per rule, ids as in Rucio
    out = rows(t0cfg, t0_outputs, block=block)
    assert len(out) == 3 and all(r["needed_by"] == 2 and r["dataset"] == dataset for r in out)
    assert {json.loads(r["endpoints_required"])[0] for r in out} == {"T1_IT_CNAF_Tape"}
    recorded = {r["rse"]: r for r in rows(t0cfg, t0_rules, block=block)}
    assert {k: v["rule_id"] for k, v in recorded.items()} == {k: v["id"] for k, v in rules.items()}
    # the same registration again, and again with the files in another order: nothing new
    again = placement.register(cat, t0cfg, dataset, list(reversed(files)), needed_by=2)
    assert again["block"] == block and again["rules"] == result["rules"]
    assert our_rules(admin, block).keys() == rules.keys()
    assert len(rows(t0cfg, t0_outputs, block=block)) == 3
    # a kill between Rucio's rule creation and the catalog update: the rules are found and reused
    with cat.begin() as conn:
        conn.execute(update(t0_rules).where(t0_rules.c.block == block).values(state="pending", rule_id=None))
    run = placement.poll(cat, t0cfg)
    assert run.created == 2 and run.refused == []
    assert {r["rse"]: r["rule_id"] for r in rows(t0cfg, t0_rules, block=block)} == {
        k: v["id"] for k, v in rules.items()
    }
    assert len(our_rules(admin, block)) == 2
    actions = [r["action"] for r in rows(t0cfg, audit, entity="t0rule", path=block)]
    assert actions.count("rule-create") == 2 and actions.count("rule-reuse") == 2


def test_every_tier_follows_raw_and_disk_tiers(t0cfg: config.Settings, admin: Any) -> None:
    e = era()
    cat = get_catalog(t0cfg.catalog_url)
    aod = placement.register(
        cat,
        t0cfg,
        f"/ZeroBias/{e}-PromptReco-v1/AOD",
        make_files(t0cfg, f"/ZeroBias/{e}-PromptReco-v1/AOD", 1),
    )
    assert set(our_rules(admin, aod["block"])) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape", "T1_IT_CNAF_Disk"}
    alca = placement.register(
        cat,
        t0cfg,
        f"/ZeroBias/{e}-TkAlMinBias-PromptReco-v1/ALCARECO",
        make_files(t0cfg, f"/ZeroBias/{e}-TkAlMinBias-PromptReco-v1/ALCARECO", 1),
    )
    assert set(our_rules(admin, alca["block"])) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}


def test_unknown_pd_goes_to_default_site_with_notice(t0cfg: config.Settings, admin: Any) -> None:
    pd = f"NewPD{uuid.uuid4().hex[:6]}"
    dataset = f"/{pd}/{era()}-v1/RAW"
    result = placement.register(get_catalog(t0cfg.catalog_url), t0cfg, dataset, make_files(t0cfg, dataset, 1))
    assert set(our_rules(admin, result["block"])) == {"T0_CH_CERN_Disk", "T1_US_FNAL_Tape"}
    assert pd in result["notice"] and "T1_US_FNAL" in result["notice"]
    alarm = alarm_keys(t0cfg)[f"t0-new-pd:{pd}"]
    assert alarm["severity"] == "info" and "subscriptions.sites" in alarm["message"]


def test_bad_names_and_files_are_refused_and_quarantined(t0cfg: config.Settings, admin: Any) -> None:
    from rucio.common.exception import DataIdentifierNotFound

    cat = get_catalog(t0cfg.catalog_url)
    bad = f"/ZeroBias/{era()}-Garbage/RAW"
    with pytest.raises(placement.PlacementRefused, match="follows no Tier-0 convention"):
        placement.register(cat, t0cfg, bad, make_files(t0cfg, "/ZeroBias/x-v1/RAW", 1))
    with pytest.raises(DataIdentifierNotFound):
        admin.get_did("cms", bad)
    good = f"/ZeroBias/{era()}-v1/RAW"
    with pytest.raises(placement.PlacementRefused, match="adler32"):
        placement.register(cat, t0cfg, good, [{"path": "/x/store/a.root", "size": 1, "adler32": "zz"}])
    files = make_files(t0cfg, good, 1)
    first = placement.register(cat, t0cfg, good, files)
    with pytest.raises(placement.PlacementRefused, match="already registered"):
        placement.register(cat, t0cfg, good, [dict(files[0], size=files[0]["size"] + 1)])
    reasons = [r["reason"] for r in rows(t0cfg, quarantine)]
    assert len(reasons) == 3 and "dataset name refused" in reasons[0] and "already registered" in reasons[2]
    assert rows(t0cfg, t0_outputs, dataset=bad) == []
    assert len(rows(t0cfg, t0_outputs, dataset=good)) == 1 and our_rules(admin, first["block"])


# ------------------------------------------------------------------------------ rule states and retention


def test_rule_states_drive_retention_which_removes_only_the_t0_disk_rule(
    t0cfg: config.Settings, admin: Any
) -> None:
    cat, files, block = new_output(t0cfg, 3, needed_by=1)
    # the transfer team's own rules on the same block: never touched
    theirs = {
        rse: admin.add_replication_rule([{"scope": "cms", "name": block}], 1, rse, account="transfer")[0]
        for rse in ("T0_CH_CERN_Disk", "T1_IT_CNAF_Disk")
    }
    later = time.time() + 8 * DAY
    run = placement.poll(cat, t0cfg)
    assert run.endpoints_done == 0 and run.states == {"OK": 1, "REPLICATING": 1}
    # not at its endpoint yet: retention keeps it whatever its age
    ret = outputs.run_retention(cat, t0cfg, now=later, dry_run=False)
    assert ret.delete == [] and ret.kept == {"not-at-endpoints": 3}
    make_ok(admin, "T1_IT_CNAF_Tape", files)
    run = placement.poll(cat, t0cfg)
    assert run.endpoints_done == 3 and run.states == {"OK": 2}
    assert all(
        json.loads(r["endpoints_done"]) == ["T1_IT_CNAF_Tape"] for r in rows(t0cfg, t0_outputs, block=block)
    )
    # at its endpoint, still needed by processing
    assert outputs.run_retention(cat, t0cfg, now=later, dry_run=False).kept == {"needed-by-processing": 3}
    for f in files:
        assert catalog_outputs.set_needed_by(cat, f["path"], 0)
    # younger than 7 days
    assert outputs.run_retention(cat, t0cfg, now=time.time(), dry_run=False).kept == {"minimum-age": 3}
    # dry-run first: the guard runs, the audit says what would go, nothing changes
    dry = outputs.run_retention(cat, t0cfg, now=later, dry_run=True)
    assert dry.rucio == {
        "dry_run": True,
        "released": [block],
        "files": 3,
        "refused": [],
        "lost_race": [],
        "kept_partial": [],
    }
    assert set(our_rules(admin, block)) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}
    assert [r["action"] for r in rows(t0cfg, audit, path=block) if "remove" in r["action"]] == [
        "dry-run-remove-rule"
    ]
    assert {r["state"] for r in rows(t0cfg, t0_outputs, block=block)} == {"present"}
    # for real
    wet = outputs.run_retention(cat, t0cfg, now=later, dry_run=False)
    assert wet.rucio is not None and wet.rucio["released"] == [block] and wet.deleted == []
    mine = our_rules(admin, block)  # Rucio deletes a rule by expiring it (the judge-cleaner drops it)
    assert mine["T0_CH_CERN_Disk"]["expires_at"] is not None
    assert mine["T1_IT_CNAF_Tape"]["state"] == "OK" and mine["T1_IT_CNAF_Tape"]["expires_at"] is None
    others = [r for r in admin.list_did_rules("cms", block) if r["account"] == "transfer"]
    assert {r["id"] for r in others} == set(theirs.values()) and all(r["expires_at"] is None for r in others)
    assert {r["state"] for r in rows(t0cfg, t0_outputs, block=block)} == {"released"}
    assert all(Path(f["path"]).exists() for f in files), (
        "with Rucio the files go by Rucio's reaper, not by us"
    )
    t0_row = next(r for r in rows(t0cfg, t0_rules, block=block) if r["role"] == "t0-disk")
    assert t0_row["state"] == "removed"
    removal = [r for r in rows(t0cfg, audit, path=block) if r["action"] == "remove-rule"]
    assert len(removal) == 1 and t0_row["rule_id"] in removal[0]["detail"]
    # a second run has nothing left to do
    assert outputs.run_retention(cat, t0cfg, now=later, dry_run=False).delete == []


def test_stuck_rule_raises_an_alarm_after_the_configured_time(
    t0cfg: config.Settings, admin: Any, rucio: RucioServer
) -> None:
    cat, files, block = new_output(t0cfg, 2)
    rucio.drive("stuck", scope="cms", names=[placement.lfn_of(files[0]["path"])], rse="T1_IT_CNAF_Tape")
    assert our_rules(admin, block)["T1_IT_CNAF_Tape"]["state"] == "STUCK"
    t = time.time()
    key = f"t0-rule-stuck:{block}:T1_IT_CNAF_Tape"
    run = placement.poll(cat, t0cfg, now=t)
    assert run.states["STUCK"] == 1 and run.stuck == [] and key not in alarm_keys(t0cfg)
    assert placement.poll(cat, t0cfg, now=t + STUCK_AFTER - 1).stuck == []
    assert key not in alarm_keys(t0cfg)
    run = placement.poll(cat, t0cfg, now=t + STUCK_AFTER)
    assert run.stuck == [f"{block} T1_IT_CNAF_Tape"]
    assert "STUCK" in alarm_keys(t0cfg)[key]["message"]
    # a stuck endpoint is not an endpoint reached: nothing released
    for f in files:
        assert catalog_outputs.set_needed_by(cat, f["path"], 0)
    assert outputs.run_retention(cat, t0cfg, now=t + 30 * DAY, dry_run=False).kept == {"not-at-endpoints": 2}
    # the transfer recovers (the replicas arrive, the judge-repairer re-evaluates the rule): the rule goes
    # OK, the alarm clears, the endpoint is done
    make_ok(admin, "T1_IT_CNAF_Tape", files)
    rucio.drive("repair", rule_id=our_rules(admin, block)["T1_IT_CNAF_Tape"]["id"])
    run = placement.poll(cat, t0cfg, now=t + STUCK_AFTER + 60)
    assert run.states == {"OK": 2} and run.endpoints_done == 2 and key not in alarm_keys(t0cfg)


def test_disappearing_rule_alarms_and_blocks_retention(
    t0cfg: config.Settings, admin: Any, rucio: RucioServer
) -> None:
    from rucio.common.exception import RuleNotFound

    cat, files, block = new_output(t0cfg, 2)
    make_ok(admin, "T1_IT_CNAF_Tape", files)
    assert placement.poll(cat, t0cfg).endpoints_done == 2
    tape = our_rules(admin, block)["T1_IT_CNAF_Tape"]["id"]
    admin.delete_replication_rule(tape)  # the REST API schedules the deletion an hour ahead
    # retention before the poll noticed: its own fresh check refuses
    later = time.time() + 8 * DAY
    ret = outputs.run_retention(cat, t0cfg, now=later, dry_run=False)
    assert ret.rucio is not None and ret.rucio["released"] == []
    assert ret.rucio["refused"][0].startswith(
        f"{block}: endpoint rule {tape} to T1_IT_CNAF_Tape is scheduled for deletion"
    )
    key = f"t0-rule-missing:{block}:T1_IT_CNAF_Tape"
    run = placement.poll(cat, t0cfg)
    assert run.missing == [f"{block} T1_IT_CNAF_Tape"] and "scheduled" in alarm_keys(t0cfg)[key]["message"]
    rucio.drive("purge_rule", rule_id=tape)  # what the judge-cleaner does at expiry
    with pytest.raises(RuleNotFound):
        admin.get_replication_rule(tape)
    ret = outputs.run_retention(cat, t0cfg, now=later, dry_run=False)
    assert ret.rucio is not None
    assert ret.rucio["refused"] == [f"{block}: endpoint rule {tape} to T1_IT_CNAF_Tape is no longer in Rucio"]
    run = placement.poll(cat, t0cfg)
    assert run.missing == [f"{block} T1_IT_CNAF_Tape"]
    alarm = alarm_keys(t0cfg)[key]
    assert alarm["severity"] == "critical" and tape in alarm["message"] and "disappeared" in alarm["message"]
    assert {r["rse"]: r["state"] for r in rows(t0cfg, t0_rules, block=block)}["T1_IT_CNAF_Tape"] == "missing"
    ret = outputs.run_retention(cat, t0cfg, now=later, dry_run=False)
    assert ret.rucio is not None and ret.rucio["released"] == [] and len(ret.rucio["refused"]) == 1
    assert set(our_rules(admin, block)) == {"T0_CH_CERN_Disk"}, "the Tier-0 copy stays"
    assert {r["state"] for r in rows(t0cfg, t0_outputs, block=block)} == {"present"}


def test_rucio_down_retries_and_deletes_nothing(
    tmp_path: Path, rucio: RucioServer, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from t0dqm.tasks.placement import register_output

    dead = f"http://127.0.0.1:{services.free_port()}"
    settings = use(write_config(tmp_path / "down.toml", tmp_path / "root", dead, rucio))
    try:
        cat = get_catalog(settings.catalog_url)
        dataset = f"/ZeroBias/{era()}-v1/RAW"
        files = make_files(settings, dataset, 2)
        assert issubclass(RucioUnavailable, register_output.autoretry_for)
        calls = []
        real = placement.register
        monkeypatch.setattr(placement, "register", lambda *a, **k: calls.append(1) or real(*a, **k))
        result = register_output.apply(kwargs={"dataset": dataset, "files": files})  # eager: retries inline
        assert result.failed() and isinstance(result.result, RucioUnavailable)
        assert len(calls) == register_output.max_retries + 1
        block = rows(settings, t0_outputs)[0]["block"]
        assert {r["state"] for r in rows(settings, t0_rules, block=block)} == {"pending"}
        assert len(rows(settings, t0_outputs)) == 2
        # the endpoint marked done by hand: still no rule to remove, nothing is deleted
        for f in files:
            catalog_outputs.mark_endpoint_done(cat, f["path"], "T1_IT_CNAF_Tape")
        later = time.time() + 8 * DAY
        ret = outputs.run_retention(cat, settings, now=later, dry_run=False)
        assert ret.rucio is not None and ret.rucio["refused"] == [f"{block}: no recorded Tier-0 disk rule"]
        # Rucio is back: the beat's poll creates the pending rules, the tape copy arrives
        settings = use(write_config(tmp_path / "up.toml", tmp_path / "root", rucio.url, rucio))
        cat = get_catalog(settings.catalog_url)
        assert placement.poll(cat, settings).created == 2
        assert set(our_rules(admin, block)) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}
        make_ok(admin, "T1_IT_CNAF_Tape", files)
        assert placement.poll(cat, settings).states == {"OK": 2}
        # Rucio goes down again just before retention: the guard cannot confirm, nothing is released
        settings = use(write_config(tmp_path / "down.toml", tmp_path / "root", dead, rucio))
        cat = get_catalog(settings.catalog_url)
        with pytest.raises(RucioUnavailable):
            outputs.run_retention(cat, settings, now=later, dry_run=False)
        from t0dqm.tasks.retention import retention_cleanup

        assert (
            "nothing released"
            in retention_cleanup.apply(kwargs={"now": later, "dry_run": False}).get()["refused"]
        )
        assert {r["state"] for r in rows(settings, t0_outputs)} == {"present"}
        assert all(Path(f["path"]).exists() for f in files)
        assert [r for r in rows(settings, audit) if r["action"] in ("remove-rule", "delete")] == []
        assert all(r["expires_at"] is None for r in our_rules(admin, block).values())
    finally:
        reset_catalogs()
        config.reset(None)


def test_gateway_never_deletes_a_rule_it_did_not_check(t0cfg: config.Settings, admin: Any) -> None:
    """check_release refuses a Tier-0 rule row that points at another account's or another RSE's rule."""
    cat, files, block = new_output(t0cfg, 1)
    make_ok(admin, "T1_IT_CNAF_Tape", files)
    placement.poll(cat, t0cfg)
    theirs = admin.add_replication_rule(
        [{"scope": "cms", "name": block}], 1, "T1_IT_CNAF_Disk", account="transfer"
    )[0]
    gw = RucioGateway(t0cfg["rucio"], 20)
    recorded = rows(t0cfg, t0_rules, block=block)
    tampered = [dict(r, rule_id=theirs) if r["role"] == "t0-disk" else r for r in recorded]
    rule_id, reason = placement.check_release(gw, tampered, "T0_CH_CERN_Disk")
    assert rule_id is None and "not touched" in reason
    rule_id, reason = placement.check_release(gw, recorded, "T0_CH_CERN_Disk")
    assert reason == "" and rule_id == our_rules(admin, block)["T0_CH_CERN_Disk"]["id"]


# ----------------------------------------------------------------------------------------- no Rucio


def test_without_rucio_retention_deletes_local_and_xrootd_copies(tmp_path: Path, xrootd_dir: str) -> None:
    server = xrootd_dir.split("//store/", maxsplit=1)[0]
    settings = use(
        write_config(
            tmp_path / "norucio.toml",
            tmp_path / "root",
            "",
            None,
            extra=f'[deletion]\nextra_roots = ["{server}//store"]\n',
        )
    )
    try:
        cat = get_catalog(settings.catalog_url)
        dataset = f"/ZeroBias/{era()}-v1/RAW"
        local = make_files(settings, dataset, 2)
        remote = []
        for f in local[:1]:
            url = f"{xrootd_dir}/{Path(f['path']).name}"
            storage.copy(f["path"], url, timeout=60, expected_adler32=f["adler32"])
            remote.append(dict(f, path=url))
        result = placement.register(cat, settings, dataset, local + remote)
        assert result["rules"] == [] and "not configured" in result["rucio"]
        later = time.time() + 8 * DAY
        assert outputs.run_retention(cat, settings, now=later, dry_run=False).kept == {"not-at-endpoints": 3}
        for f in local + remote:
            assert catalog_outputs.mark_endpoint_done(cat, f["path"], "T1_IT_CNAF_Tape")
        dry = outputs.run_retention(cat, settings, now=later, dry_run=True)
        assert sorted(dry.deleted) == sorted(f["path"] for f in local + remote) and dry.rucio is None
        assert (
            all(Path(f["path"]).exists() for f in local) and storage.stat(remote[0]["path"], 30) is not None
        )
        wet = outputs.run_retention(cat, settings, now=later, dry_run=False)
        assert sorted(wet.deleted) == sorted(f["path"] for f in local + remote)
        assert (
            not any(Path(f["path"]).exists() for f in local) and storage.stat(remote[0]["path"], 30) is None
        )
        assert {r["state"] for r in rows(settings, t0_outputs)} == {"deleted"}
        deletes = [r for r in rows(settings, audit) if r["action"] == "delete"]
        assert sorted(r["path"] for r in deletes) == sorted(f["path"] for f in local + remote)
    finally:
        reset_catalogs()
        config.reset(None)


# ----------------------------------------------------------------------------------- task and CLI


@pytest.fixture
def stack_env(tmp_path: Path, rucio: RucioServer) -> dict[str, str]:
    return {"config": str(write_config(tmp_path / "stack.toml", tmp_path / "root", rucio.url, rucio))}


def test_task_sent_by_name_like_the_tier0(celery_stack: config.Settings, admin: Any) -> None:
    from t0dqm.celery import app

    dataset = f"/ZeroBias/{era()}-Express-v1/FEVT"
    files = make_files(celery_stack, dataset, 2)
    sent = app.send_task(
        "t0dqm.tasks.tier0.register_output", kwargs={"dataset": dataset, "files": files, "needed_by": 1}
    )
    result = sent.get(timeout=120)
    assert set(our_rules(admin, result["block"])) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}
    refused = app.send_task(
        "t0dqm.tasks.tier0.register_output", kwargs={"dataset": "/ZeroBias/bad/FEVT", "files": files}
    ).get(timeout=120)
    assert "dataset name refused" in refused["refused"]
    polled = app.send_task("t0dqm.tasks.tier0.poll_rules").get(timeout=120)
    assert polled["checked"] >= 2


def test_cli_add_ls_subscriptions_and_status(t0cfg: config.Settings, admin: Any) -> None:
    from t0dqm.status import catalog_counts

    runner = CliRunner(env={"T0DQM_CONFIG": t0cfg.source})
    dataset = f"/ZeroBias/{era()}-v1/RAW"
    files = make_files(t0cfg, dataset, 2)
    res = runner.invoke(
        cli, ["t0", "output", "add", dataset, *[f["path"] for f in files], "--needed-by", "1"]
    )
    assert res.exit_code == 0, res.output
    added = json.loads(res.stdout)
    assert added["files"] == 2 and added["bytes"] == sum(f["size"] for f in files)
    assert set(our_rules(admin, added["block"])) == {"T0_CH_CERN_Disk", "T1_IT_CNAF_Tape"}
    res = runner.invoke(cli, ["t0", "output", "add", "/ZeroBias/nope/RAW", files[0]["path"]])
    assert res.exit_code != 0 and "refused" in res.output
    res = runner.invoke(cli, ["t0", "output", "ls", "--dataset", dataset, "--json"])
    listed = json.loads(res.stdout)
    assert len(listed) == 1 and listed[0]["retention"] == "minimum-age" and listed[0]["needed_by"] == 1
    assert {r["rse"]: r["state"] for r in listed[0]["rules"]} == {
        "T0_CH_CERN_Disk": "OK",
        "T1_IT_CNAF_Tape": "REPLICATING",
    }
    res = runner.invoke(cli, ["t0", "output", "ls", "--dataset", dataset])
    assert res.exit_code == 0 and "T1_IT_CNAF_Tape" in res.output and "REPLICATING" in res.output
    assert runner.invoke(cli, ["t0", "output", "needed", added["block"], "0"]).exit_code == 0
    make_ok(admin, "T1_IT_CNAF_Tape", files)
    res = runner.invoke(cli, ["t0", "output", "poll"])
    assert res.exit_code == 0 and json.loads(res.stdout)["endpoints_done"] >= 2
    later = str(time.time() + 8 * DAY)
    res = runner.invoke(cli, ["t0", "retention", "--dry-run", "--now", later])
    assert res.exit_code == 0, res.output
    assert added["block"] in json.loads(res.stdout)["execution"]["rucio"]["released"]
    assert "T0_CH_CERN_Disk" in our_rules(admin, added["block"])
    res = runner.invoke(cli, ["t0", "retention", "--execute", "--now", later])
    assert res.exit_code == 0, res.output
    assert our_rules(admin, added["block"])["T0_CH_CERN_Disk"]["expires_at"] is not None
    assert our_rules(admin, added["block"])["T1_IT_CNAF_Tape"]["expires_at"] is None
    counts = catalog_counts(get_catalog(t0cfg.catalog_url))
    assert counts["t0_outputs"] == {"released": 2} and counts["t0_rules"] == {"OK": 1, "removed": 1}
    res = runner.invoke(cli, ["t0", "subscriptions", "show", "--json"])
    shown = json.loads(res.stdout)
    assert shown["pds"] == [{"pd": "ZeroBias", "site": "T1_IT_CNAF", "rses": ["T1_IT_CNAF_Tape"]}]
    res = runner.invoke(
        cli,
        ["t0", "subscriptions", "plan", "--free", "T1_IT_CNAF=1000", "--free", "T1_US_FNAL=3000", "--json"],
    )
    planned = json.loads(res.stdout)
    assert planned["total"] == sum(f["size"] for f in files)  # RAW bytes registered in the catalog
    assert planned["moves"][0]["pd"] == "ZeroBias" and planned["moves"][0]["to"] == "T1_US_FNAL"
    assert 'ZeroBias = "T1_US_FNAL"' in planned["toml"]
    res = runner.invoke(cli, ["t0", "subscriptions", "where", "/NewPD/Run2024A-PromptReco-v1/AOD"])
    assert json.loads(res.stdout)["site"] == "T1_US_FNAL" and "new PD" in json.loads(res.stdout)["reason"]


def test_interrupted_release_is_finished_and_foreign_t0_deletion_alarms(
    t0cfg: config.Settings, admin: Any, rucio: RucioServer
) -> None:
    cat = get_catalog(t0cfg.catalog_url)
    blocks = {}
    for key in ("stopped", "foreign"):
        dataset = f"/ZeroBias/{era()}-v1/RAW"
        files = make_files(t0cfg, dataset, 1)
        blocks[key] = placement.register(cat, t0cfg, dataset, files, needed_by=int(key == "foreign"))["block"]
        make_ok(admin, "T1_IT_CNAF_Tape", files)
    assert placement.poll(cat, t0cfg).endpoints_done == 2
    # a retention run took the rows and removed the rule, then died; Rucio has since purged the rule
    stopped = blocks["stopped"]
    t0_rule = our_rules(admin, stopped)["T0_CH_CERN_Disk"]["id"]
    with cat.begin() as conn:
        conn.execute(update(t0_outputs).where(t0_outputs.c.block == stopped).values(state="deleting"))
    rucio.drive("purge_rule", rule_id=t0_rule)
    ret = outputs.run_retention(cat, t0cfg, now=time.time() + 8 * DAY, dry_run=False)
    assert ret.rucio is not None and ret.rucio["released"] == [stopped] and ret.rucio["refused"] == []
    assert {r["state"] for r in rows(t0cfg, t0_outputs, block=stopped)} == {"released"}
    assert {r["rse"]: r["state"] for r in rows(t0cfg, t0_rules, block=stopped)}[
        "T0_CH_CERN_Disk"
    ] == "removed"
    # someone else deletes a Tier-0 disk rule: critical alarm, the poll does not mistake it for ours
    foreign = blocks["foreign"]
    admin.delete_replication_rule(our_rules(admin, foreign)["T0_CH_CERN_Disk"]["id"])
    run = placement.poll(cat, t0cfg)
    assert run.missing == [f"{foreign} T0_CH_CERN_Disk"]
    alarm = alarm_keys(t0cfg)[f"t0-rule-missing:{foreign}:T0_CH_CERN_Disk"]
    assert alarm["severity"] == "critical" and "may be reaped" in alarm["message"]
    assert {r["state"] for r in rows(t0cfg, t0_outputs, block=foreign)} == {"present"}
