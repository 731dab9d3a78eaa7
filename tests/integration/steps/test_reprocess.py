"""Reprocess and retry-bad: conditional catalog resets with audit rows, messages after the commit,
and a quarantined upload that is received after the operator fixed its .origin."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from t0dqm import config
from t0dqm.catalog.db import archives, audit, files, get_catalog, members, quarantine
from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.steps import reprocess
from t0dqm.steps.receive import receive_one

pytestmark = pytest.mark.integration

OFFLINE = "DQM_V0001_R000300002__ZeroBias__Run2024A-PromptReco-v1__DQMIO.root"


class Capture:
    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    def __call__(self, name: str, args: tuple[Any, ...]) -> None:
        self.sent.append((name, args))

    def names(self, task: str) -> list[tuple[Any, ...]]:
        return [a for n, a in self.sent if n == task]


def _file(
    fid: int, run: int, dataset: str, state: str, index_state: str, zippat: str | None = "z/Z_S%04d.zip"
):
    now = time.time()
    return dict(
        id=fid,
        path=f"d/{fid}.root",
        name=f"{fid}.root",
        cls="offline_data",
        run=run,
        version=1,
        dataset=dataset,
        size=10,
        adler32="00000001",
        mtime=now,
        zippat=zippat,
        state=state,
        index_state=index_state,
        reason="import: broken" if index_state == "failed" else None,
        created_at=now,
        updated_at=now,
        attempts=0,
    )


def _archive(aid: int, state: str, frozen: bool = True, **kw) -> dict:
    now = time.time()
    return dict(
        id=aid,
        path=f"z/A{aid}_S0001.zip",
        pattern=f"z/A{aid}_S%04d.zip",
        serial=1,
        state=state,
        size=100,
        nfiles=1,
        adler32="0badcafe" if frozen else None,
        frozen_at=now - 10 if frozen else None,
        created_at=now,
        updated_at=now,
        tries=6,
        next_try_at=now + 9999,
        reason="copy failed",
        **kw,
    )


@pytest.fixture
def populated(settings: config.Settings):
    catalog = get_catalog(settings.catalog_url)
    with catalog.begin() as conn:
        for row in (
            _file(1, 100, "/A/B/C", "received", "failed"),
            _file(2, 100, "/A/B/C", "zipped", "indexed"),
            _file(3, 100, "/X/Y/Z", "received", "pending"),
            _file(4, 100, "/A/B/C", "removed", "skipped"),
            _file(5, 100, "/A/B/C", "zipped", "failed"),
            _file(6, 100, "/A/B/C", "zipped", "indexed"),
            _file(7, 100, "/A/B/C", "zipped", "indexed"),
            _file(8, 100, "/A/B/C", "zipped", "indexed"),
            _file(9, 101, "/A/B/C", "received", "failed"),
        ):
            conn.execute(insert(files).values(**row))
        for row in (
            _archive(1, "failed"),
            _archive(2, "conflict"),
            _archive(3, "failed", frozen=False),
            _archive(4, "on_tape"),
            _archive(5, "copied", copied_at=time.time() - 100),
            _archive(6, "frozen"),
        ):
            conn.execute(insert(archives).values(**row))
        for aid, fid in ((1, 2), (2, 5), (3, 6), (4, 7), (5, 8), (6, 1)):
            conn.execute(
                insert(members).values(
                    archive_id=aid,
                    file_id=fid,
                    name=f"{fid}.root",
                    size=10,
                    adler32="00000001",
                    added_at=time.time(),
                )
            )
    return catalog


def _state(catalog, table, row_id: int, column: str = "state") -> Any:
    with catalog.read() as conn:
        return conn.execute(select(table.c[column]).where(table.c.id == row_id)).scalar()


def _audits(catalog, action: str) -> list[dict]:
    with catalog.read() as conn:
        return [dict(r) for r in conn.execute(select(audit).where(audit.c.action == action)).mappings()]


def test_from_index_resets_failed_imports_and_sends_every_later_step(settings, populated) -> None:
    catalog = populated
    send = Capture()
    actions = reprocess.reprocess(settings, catalog, 100, dataset="/A/B/C", from_step="index", send=send)
    # index: failed -> pending for present files; removed and other datasets/runs untouched
    assert _state(catalog, files, 1, "index_state") == "pending"
    assert _state(catalog, files, 5, "index_state") == "pending"
    assert _state(catalog, files, 3, "index_state") == "pending"  # other dataset: not sent
    assert _state(catalog, files, 9, "index_state") == "failed"  # other run
    assert _state(catalog, files, 4, "index_state") == "skipped"
    assert sorted(send.names(reprocess.TASKS["index"])) == [(1,), (5,)]
    # zip: only received files outside any archive (file 1 is in archive 6; file 3 other dataset)
    assert send.names(reprocess.TASKS["zip"]) == []
    # stage: failed/conflict after freezing -> frozen, tries reset; never-frozen failed and on_tape left
    assert _state(catalog, archives, 1) == "frozen" and _state(catalog, archives, 2) == "frozen"
    assert _state(catalog, archives, 1, "tries") == 0 and _state(catalog, archives, 1, "next_try_at") is None
    assert _state(catalog, archives, 3) == "failed" and _state(catalog, archives, 4) == "on_tape"
    assert _state(catalog, archives, 6, "next_try_at") is None
    assert sorted(send.names(reprocess.TASKS["stage"])) == [(1,), (2,), (6,)]
    # verify: the copied archive is sent, its back-off cleared
    assert send.names(reprocess.TASKS["verify"]) == [(5,)]
    assert _state(catalog, archives, 5, "next_try_at") is None
    # audited: transitions plus one reprocess row per change or message
    transitions = [a for a in _audits(catalog, "transition") if a["entity"] == "archive"]
    assert {(a["entity_id"], a["from_state"], a["to_state"]) for a in transitions} == {
        (1, "failed", "frozen"),
        (2, "conflict", "frozen"),
    }
    rows = _audits(catalog, "reprocess")
    assert {(r["entity"], r["entity_id"]) for r in rows} >= {
        ("file", 1),
        ("file", 5),
        ("archive", 1),
        ("archive", 5),
    }
    assert all(r["rule"] == "operator" for r in rows)
    lines = [a.line() for a in actions]
    assert any("failed -> pending, sent" in line for line in lines)
    assert any("skipped: failed before it was frozen" in line for line in lines)


def test_from_stage_does_not_touch_the_index(settings, populated) -> None:
    send = Capture()
    reprocess.reprocess(settings, populated, 100, from_step="stage", send=send)
    assert _state(populated, files, 1, "index_state") == "failed"
    assert send.names(reprocess.TASKS["index"]) == [] and send.names(reprocess.TASKS["zip"]) == []
    assert sorted(send.names(reprocess.TASKS["stage"])) == [(1,), (2,), (6,)]


def test_second_reprocess_finds_nothing_to_reset(settings, populated) -> None:
    reprocess.reprocess(settings, populated, 100, from_step="index", send=Capture())
    send = Capture()
    reprocess.reprocess(settings, populated, 100, from_step="stage", send=send)
    # archives are frozen now: back-off cleared and re-sent, no second transition
    transitions = [a for a in _audits(populated, "transition") if a["entity"] == "archive"]
    assert len(transitions) == 2
    assert sorted(send.names(reprocess.TASKS["stage"])) == [(1,), (2,), (6,)]


def test_zip_step_sends_received_files_outside_archives(settings, populated) -> None:
    send = Capture()
    reprocess.reprocess(settings, populated, 100, dataset="/X/Y/Z", from_step="zip", send=send)
    assert send.names(reprocess.TASKS["zip"]) == [(3,)]


def test_unknown_step_is_refused(settings) -> None:
    with pytest.raises(ValueError):
        reprocess.steps_from("teleport")


def _upload(settings: config.Settings, name: str) -> Path:
    src = settings.root / "src"
    src.mkdir(parents=True, exist_ok=True)
    run, subsystems, strict = simulate.content_for(name)
    simulate.write_dqm_file(src / name, run, subsystems, n_hists=20, strict=strict)
    return dropbox.upload(src / name, settings.dropbox)


def test_receive_step_sends_waiting_uploads_of_the_run(settings) -> None:
    uploaded = _upload(settings, OFFLINE)
    send = Capture()
    reprocess.reprocess(settings, get_catalog(), 300002, from_step="receive", send=send)
    assert send.names(reprocess.TASKS["receive"]) == [(str(uploaded.relative_to(settings.dropbox)),)]
    send = Capture()
    reprocess.reprocess(settings, get_catalog(), 300003, from_step="receive", send=send)
    assert send.sent == []


def test_retry_bad_requeues_a_fixed_upload_which_is_then_received(settings) -> None:
    catalog = get_catalog(settings.catalog_url)
    uploaded = _upload(settings, OFFLINE)
    origin = uploaded.with_name(uploaded.name + dropbox.ORIGIN)
    good = origin.read_text()
    parsed = dropbox.parse_origin(good)
    origin.write_text(dropbox.format_origin("0" * 32, parsed.size, parsed.source))  # a producer's wrong md5
    out = receive_one(uploaded, settings, catalog)
    assert out.status == "quarantined" and "md5 mismatch" in out.reason
    bad_origin = uploaded.with_name(uploaded.name + dropbox.ORIGIN_BAD)
    marker = uploaded.with_name(uploaded.name + dropbox.BAD)
    assert bad_origin.exists() and marker.exists()
    assert len(reprocess.quarantined(catalog)) == 1

    # nothing fixed yet would just quarantine again; the operator fixes the .origin, then retries
    bad_origin.write_text(good)
    send = Capture()
    actions = reprocess.retry_bad(settings, catalog, send=send)
    rel = str(uploaded.relative_to(settings.dropbox))
    assert [a.did for a in actions] == ["re-queued"]
    assert send.sent == [(reprocess.TASKS["receive"], (rel,))]
    assert origin.exists() and not bad_origin.exists() and not marker.exists()
    with catalog.read() as conn:
        row = conn.execute(select(quarantine)).mappings().one()
    assert row["resolved_at"] is not None
    assert [a["path"] for a in _audits(catalog, "retry-bad")] == [rel]
    assert [c.path for c in dropbox.scan(settings.dropbox)] == [uploaded]  # the next scan picks it up
    assert receive_one(uploaded, settings, catalog).status == "filed"
    assert reprocess.retry_bad(settings, catalog, send=Capture()) == []


def test_retry_bad_resolves_rows_of_uploads_already_gone(settings) -> None:
    catalog = get_catalog(settings.catalog_url)
    with catalog.begin() as conn:
        conn.execute(
            insert(quarantine).values(
                path="0000/gone.root",
                name="gone.root",
                step="receive",
                reason="bad name",
                created_at=time.time(),
            )
        )
    send = Capture()
    actions = reprocess.retry_bad(settings, catalog, send=send)
    assert [a.did for a in actions] == ["resolved (no longer in the dropbox)"] and send.sent == []
    assert reprocess.quarantined(catalog) == []


def test_cli_reprocess_and_retry_bad_list(settings, populated, monkeypatch) -> None:
    from t0dqm.cli import cli
    from t0dqm.cli import health as cli_health

    sent: list[tuple[str, tuple]] = []
    monkeypatch.setattr(cli_health, "celery_sender", lambda name, args: sent.append((name, args)))
    env = {"T0DQM_ROOT": str(settings.root), "T0DQM_FLAVOUR": settings.flavour}
    out = CliRunner().invoke(cli, ["reprocess", "--run", "100", "--from-step", "verify"], env=env)
    assert out.exit_code == 0, out.output
    assert "1 message(s) sent for run 100 from step verify" in out.output
    assert sent == [(reprocess.TASKS["verify"], (5,))]
    out = CliRunner().invoke(cli, ["retry-bad", "--list"], env=env)
    assert out.exit_code == 0 and "nothing quarantined" in out.output
