"""Registration with the DQM GUI against a loopback server answering as the GUI does (201, 400 with a
message, 500), on real received files and a real catalog."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from t0dqm import config
from t0dqm.catalog import gui as gui_rows
from t0dqm.catalog.alarms import active_alarms
from t0dqm.catalog.db import files, get_catalog, reset_catalogs
from t0dqm.catalog.states import REMOVED
from t0dqm.cli import cli
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.steps import gui as g
from t0dqm.steps.receive import receive_one
from tests.conftest import make_settings
from tests.gui_server import FakeGui, fake_gui

MERGED = "DQM_V0001_R000300001.root"
ECAL = "DQM_V0001_Ecal_R000300001.root"
HCAL = "DQM_V0001_Hcal_R000300001.root"
OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"
RELVAL = "DQM_V0001_R000000001__RelValTTbar_14TeV__CMSSW_14_0_1-mcRun3_realistic_v3__DQMIO.root"


@pytest.fixture
def gui() -> Iterator[FakeGui]:
    with fake_gui() as server:
        yield server


@pytest.fixture
def gsettings(tmp_path: Path, gui: FakeGui) -> Iterator[config.Settings]:
    current = make_settings(tmp_path / "root", gui__register_url=gui.url, gui__batch="2")
    config.reset(current)
    yield current
    reset_catalogs()
    config.reset(None)


def filed(settings: config.Settings, name: str) -> int:
    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    run, subsystems, strict = simulate.content_for(name)
    simulate.write_dqm_file(src / name, run, subsystems, n_hists=10, strict=strict)
    out = receive_one(dropbox.upload(src / name, settings.dropbox))
    assert out.status == "filed", out
    return out.file_id


def rows() -> dict[int, dict]:
    with get_catalog().read() as conn:
        return {r["id"]: dict(r) for r in conn.execute(select(files)).mappings()}


def registrar(settings: config.Settings) -> g.Registrar:
    return g.Registrar(settings, get_catalog())


def test_register_payloads_batches_and_idempotence(gsettings: config.Settings, gui: FakeGui) -> None:
    ids = [filed(gsettings, n) for n in (MERGED, ECAL, HCAL, OFFLINE, RELVAL)]
    result = registrar(gsettings).register(ids)
    assert sorted(result.registered) == sorted(ids) and not result.rejected
    assert [len(p) for p in gui.posts()] == [2, 2, 1]  # gui.batch = 2
    by_key = dict(gui.samples)
    repo = gsettings.repository
    expect = {
        ("/Global/Online/ALL", 300001): MERGED,
        ("/Global/Online/Ecal", 300001): ECAL,
        ("/Global/Online/Hcal", 300001): HCAL,
        ("/ZeroBias/Run2024A-PromptReco-v1/DQMIO", 300002): OFFLINE,
        ("/RelValTTbar_14TeV/CMSSW_14_0_1-mcRun3_realistic_v3/DQMIO", 1): RELVAL,
    }
    assert set(by_key) == {(d, r, 0) for d, r in expect}
    for (dataset, run), name in expect.items():
        sample = by_key[(dataset, run, 0)]
        assert sample["fileformat"] == 1 and sample["lumi"] == 0 and sample["run"] == run
        path = Path(sample["file"])
        assert path.is_absolute() and path.name == name and path.is_file()
        assert str(path).startswith(str(repo))
    catalog_rows = rows()
    assert all(catalog_rows[i]["gui_registered_at"] for i in ids)
    from t0dqm.catalog.db import audit

    with get_catalog().read() as conn:
        trail = conn.execute(
            select(audit.c.entity_id, audit.c.path, audit.c.rule).where(audit.c.action == "gui-register")
        ).all()
    assert sorted(t.entity_id for t in trail) == sorted(ids) and {t.rule for t in trail} == {gui.url}
    assert {t.path for t in trail} == {s["file"] for s in by_key.values()}
    with get_catalog().read() as conn:
        assert gui_rows.counts(conn) == {
            "registered": 5,
            "waiting": 0,
            "not_sent": 0,
            "removed_registered": 0,
        }
        assert gui_rows.missing_ids(conn) == []
    assert registrar(gsettings).register(ids).counts()["requests"] == 0  # nothing new: nothing sent


def test_newest_version_only_and_never_an_older_one_after(gsettings: config.Settings, gui: FakeGui) -> None:
    v1 = filed(gsettings, OFFLINE)
    registrar(gsettings).register([v1])
    v2 = filed(gsettings, OFFLINE)  # version 2 of the same sample
    assert registrar(gsettings).register([v2]).registered == [v2]
    key = ("/ZeroBias/Run2024A-PromptReco-v1/DQMIO", 300002, 0)
    assert "V0002" in gui.samples[key]["file"]
    # an explicit re-send of the old version is refused by the plan: it would replace the newer one
    result = registrar(gsettings).register([v1], force=True)
    assert result.registered == [] and "superseded by version 2" in result.skipped[v1]
    assert "V0002" in gui.samples[key]["file"]


def test_400_bisects_keeps_message_alarms_and_is_not_resent(gsettings: config.Settings, gui: FakeGui) -> None:
    ids = [filed(gsettings, n) for n in (MERGED, ECAL, HCAL, OFFLINE)]
    bad_path = str(gsettings.repository / rows()[ids[2]]["path"])
    gui.refuse.add(bad_path)
    result = registrar(gsettings).register(ids)
    assert sorted(result.registered) == sorted([ids[0], ids[1], ids[3]])
    assert list(result.rejected) == [ids[2]] and "Please provide a readable file" in result.rejected[ids[2]]
    assert bad_path not in gui.files() and len(gui.files()) == 3
    assert "Please provide a readable file" in rows()[ids[2]]["gui_reason"]
    (alarm,) = [a for a in active_alarms(get_catalog()) if a["key"] == g.ALARM_REJECTED]
    assert "Please provide a readable file" in alarm["message"] and alarm["severity"] == "critical"
    with get_catalog().read() as conn:
        assert gui_rows.missing_ids(conn) == []  # reconcile leaves it alone
        assert gui_rows.counts(conn)["not_sent"] == 1
    # the operator fixes the cause and sends the run again
    gui.refuse.clear()
    env = {"T0DQM_ROOT": str(gsettings.root), "T0DQM_GUI__REGISTER_URL": gui.url}
    out = CliRunner().invoke(cli, ["gui", "register", "--run", "300001", "--json"], env=env)
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["registered"] == 3 and report["check"]["readable"] == 3
    assert bad_path in gui.files() and rows()[ids[2]]["gui_reason"] is None


def test_invalid_fileformat_gives_400_with_the_guis_message(gsettings: config.Settings, gui: FakeGui) -> None:
    from t0dqm.policies import gui as policy

    reply = g.client_for(gsettings).register([policy.Sample(1, "/A/B/C", 5, "/x.root")])
    assert reply.status == 201
    client = g.client_for(gsettings)
    bad = client._call(
        __import__("urllib.request", fromlist=["Request"]).Request(
            gui.url + g.REGISTER_PATH,
            data=json.dumps(
                [{"dataset": "/A/B/C", "run": 5, "lumi": 0, "file": "/x.root", "fileformat": "1"}]
            ).encode(),
            method="POST",
        )
    )
    assert bad.status == 400 and bad.message() == "Please provide a valid file format"


def test_500_and_no_connection_are_unavailable(gsettings: config.Settings, gui: FakeGui) -> None:
    ids = [filed(gsettings, n) for n in (MERGED, OFFLINE)]
    gui.register_status = 500
    with pytest.raises(g.GuiUnavailable, match="HTTP 500"):
        registrar(gsettings).register(ids)
    assert not any(r["gui_registered_at"] for r in rows().values())
    dead = g.Registrar(gsettings, get_catalog(), g.GuiClient("http://127.0.0.1:9", timeout=5))
    with pytest.raises(g.GuiUnavailable):
        dead.register(ids)


def test_task_retries_with_backoff_then_alarms_and_reconcile_backs_off(
    gsettings: config.Settings, gui: FakeGui
) -> None:
    from t0dqm.policies import gui as policy
    from t0dqm.steps.reconcile import RECOVERERS
    from t0dqm.tasks import gui as tasks

    ids = [filed(gsettings, n) for n in (MERGED, OFFLINE)]
    gui.register_status = 503
    outcome = tasks.register.apply(args=[ids]).get()  # eager: each retry runs at once
    assert outcome == {"unreachable": 2}
    assert len(gui.posts()) == tasks.register.max_retries + 1
    (alarm,) = [a for a in active_alarms(get_catalog()) if a["key"] == g.ALARM_UNREACHABLE]
    assert "reconcile sends them again" in alarm["message"]
    recover = RECOVERERS["gui-register"]
    stale = gsettings["reconcile"]["stale_seconds"]
    with get_catalog().read() as conn:
        assert list(recover(conn, gsettings, time.time())) == []  # fresh files: the chain's job
    with get_catalog().begin() as conn:  # the files were received long ago
        conn.execute(update(files).values(created_at=time.time() - 2 * stale))
    with get_catalog().read() as conn:
        assert list(recover(conn, gsettings, time.time())) == []  # the GUI was down just now: back off
    with get_catalog().begin() as conn:  # the alarm is old
        from t0dqm.catalog.db import alarms

        conn.execute(update(alarms).values(last_at=time.time() - 2 * stale))
    with get_catalog().read() as conn:
        resumes = list(recover(conn, gsettings, time.time()))
    assert [(r.task, r.args) for r in resumes] == [(tasks.REGISTER_TASK, (ids,))]
    gui.register_status = 201
    assert tasks.register.apply(args=[ids]).get()["registered"] == 2
    assert not [a for a in active_alarms(get_catalog()) if a["key"] == g.ALARM_UNREACHABLE]
    assert tasks.register.max_retries >= 3
    assert [policy.retry_delay(n, 5, 600) for n in range(4)] == [5.0, 10.0, 20.0, 40.0]


def test_check_alarms_when_the_gui_cannot_read(gsettings: config.Settings, gui: FakeGui) -> None:
    ids = [filed(gsettings, n) for n in (MERGED, OFFLINE)]
    reg = registrar(gsettings)
    result = reg.register(ids)
    unreadable = result.registered_samples()[0]
    gui.unreadable.add(unreadable.file)
    assert reg.check(result.registered_samples()) == {"readable": 1, "unreadable": 1, "unknown": 0}
    key = f"{g.ALARM_UNREADABLE}:{unreadable.run}:{unreadable.dataset}"
    (alarm,) = [a for a in active_alarms(get_catalog()) if a["key"] == key]
    assert "cannot read" in alarm["message"] and unreadable.file in alarm["message"]
    gets = [p for m, p, _ in gui.requests if m == "GET"]
    assert f"/api/v1/archive/{unreadable.run}{unreadable.dataset}/" in gets
    gui.unreadable.clear()
    assert reg.check(result.registered_samples())["readable"] == 2
    assert not [a for a in active_alarms(get_catalog()) if a["key"] == key]


def test_removed_files_stay_registered_and_status_shows_counts(
    gsettings: config.Settings, gui: FakeGui
) -> None:
    ids = [filed(gsettings, n) for n in (MERGED, ECAL, OFFLINE)]
    registrar(gsettings).register(ids[:2])
    with get_catalog().begin() as conn:
        conn.execute(update(files).where(files.c.id == ids[0]).values(state=REMOVED))
    with get_catalog().read() as conn:
        assert gui_rows.counts(conn) == {
            "registered": 1,
            "waiting": 1,
            "not_sent": 0,
            "removed_registered": 1,
        }
    env = {
        "T0DQM_ROOT": str(gsettings.root),
        "T0DQM_GUI__REGISTER_URL": gui.url,
        "T0DQM_BROKER_URL": "redis://127.0.0.1:9/0",
    }
    out = CliRunner().invoke(cli, ["status"], env=env)
    line = [x for x in out.output.splitlines() if x.startswith("gui")]
    assert line and "registered=1" in line[0] and "waiting=1" in line[0] and "removed_registered=1" in line[0]
    out = CliRunner().invoke(cli, ["gui", "register", "--no-check"], env=env)  # what is missing
    assert out.exit_code == 0 and "registered=1" in out.output
    out = CliRunner().invoke(cli, ["gui", "register", "--all", "--json", "--no-check"], env=env)
    assert json.loads(out.output)["registered"] == 2  # the removed file is not sent again
    out = CliRunner().invoke(cli, ["gui", "removed", "--json"], env=env)
    assert [json.loads(x) for x in out.output.splitlines()] == [
        {
            "file_id": ids[0],
            "run": 300001,
            "dataset": "/Global/Online/ALL",
            "file": str(gsettings.repository / rows()[ids[0]]["path"]),
        }
    ]
    # version control deletes an older version once a newer one is registered: the GUI points at the newer
    v2 = filed(gsettings, OFFLINE)
    registrar(gsettings).register([v2])
    with get_catalog().begin() as conn:
        conn.execute(update(files).where(files.c.id == ids[2]).values(state=REMOVED))
    with get_catalog().read() as conn:
        assert [r["id"] for r in gui_rows.removed_but_registered(conn)] == [ids[0]]
        assert gui_rows.counts(conn)["removed_registered"] == 1


def test_off_without_url_and_config_validation(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "r")
    assert not g.enabled(settings)
    for key, value, message in (
        ("gui__register_url", "ftp://x", "http"),
        ("gui__online_dataset", "/Global/Online", "online_dataset"),
        ("gui__online_subsystem_dataset", "/Global/{subsystem}", "online_subsystem"),
        ("gui__batch", "0", "gui.batch"),
    ):
        with pytest.raises(config.ConfigError, match=message):
            make_settings(tmp_path / "r", **{key: value})
    out = CliRunner().invoke(cli, ["gui", "register"], env={"T0DQM_ROOT": str(tmp_path / "r")})
    assert out.exit_code != 0 and "gui.register_url" in out.output


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_gui_revision_adds_the_columns_and_keeps_rows(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from alembic import command
    from sqlalchemy import insert, inspect, text

    from t0dqm.catalog.db import Catalog
    from t0dqm.catalog.schema import alembic_config, head, scripts

    (ours,) = [r for r in scripts().walk_revisions() if r.revision.endswith("_gui_registration")]
    before = ours.down_revision  # the schema just without the columns
    url = f"sqlite:///{tmp_path / 'c.sqlite'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    cat = Catalog(url)
    try:
        with cat.engine.begin() as conn:
            command.upgrade(alembic_config(conn), before)
            now = time.time()
            conn.execute(
                text(
                    "INSERT INTO files (path, name, cls, run, version, dataset, size, adler32, mtime, "
                    "state, index_state, created_at, updated_at, attempts) VALUES ('a/x.root', "
                    "'x.root', 'offline_data', 5, 1, '/A/B/C', 1, '00000001', :t, 'received', "
                    "'indexed', :t, :t, 0)"
                ),
                {"t": now - 3600},
            )
        assert "gui_registered_at" not in {c["name"] for c in inspect(cat.engine).get_columns("files")}
        assert cat.upgrade() == head()
        assert {"gui_registered_at", "gui_reason"} <= {
            c["name"] for c in inspect(cat.engine).get_columns("files")
        }
        with cat.read() as conn:
            assert gui_rows.missing_ids(conn, older_than=time.time()) == [1]
            assert gui_rows.counts(conn)["waiting"] == 1
        with cat.begin() as conn:
            conn.execute(
                insert(files).values(
                    path="b/y.root",
                    name="y.root",
                    cls="offline_data",
                    run=6,
                    version=1,
                    dataset="/A/B/C",
                    size=1,
                    adler32="1",
                    mtime=now,
                    state="received",
                    index_state="indexed",
                    created_at=now,
                    updated_at=now,
                    gui_registered_at=now,
                )
            )
        with cat.engine.begin() as conn:
            command.downgrade(alembic_config(conn), before)
        assert "gui_reason" not in {c["name"] for c in inspect(cat.engine).get_columns("files")}
        with cat.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM files")).scalar() == 2
    finally:
        cat.dispose()
