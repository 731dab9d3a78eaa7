"""Ad-hoc reprocessing and re-queueing of quarantined uploads (operator tools).

:func:`reprocess` takes the files of a run (optionally one dataset) back to a step and sends the step's
task: every state change is a conditional update with an audit row (``action="reprocess"``), and
messages go out only after the change committed. Steps, in chain order:

- ``receive``: uploads of the run still waiting in the dropbox are sent to ``receive_file``.
- ``index``:   failed imports go back to pending (or partial when their partial index is kept); pending
               ones are sent to ``import_file``, partial ones to ``merge``. Indexed files stay (the
               index already holds their sample); skipped ones stay skipped (superseded, or not meant
               for the index).
- ``zip``:     received files that are in no archive are sent to ``zip_file``.
- ``stage``:   the run's archives that failed after freezing, or are in conflict, go back to frozen with
               their tries reset; frozen ones have their back-off cleared; all are sent to ``stage``.
- ``verify``:  the run's copied archives have their back-off cleared and are sent to ``verify`` (which
               still waits for ``archive.verify_delay`` after the copy).

:func:`retry_bad` re-queues quarantined uploads: ``.origin.bad`` back to ``.origin``, the ``.bad``
marker removed, the quarantine row resolved (audited), and ``receive_file`` sent.

Both send through the ``send`` callable they are given (the CLI passes one that goes through the
broker, :func:`t0dqm.cli.health.celery_sender`): a step never talks to the broker itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t0dqm import config
from t0dqm.catalog import queries, states
from t0dqm.catalog.db import Catalog
from t0dqm.formats import dropbox

STEPS = ("receive", "index", "zip", "stage", "verify")
TASKS = {
    "receive": "t0dqm.tasks.receive.receive_file",
    "index": "t0dqm.tasks.index.import_file",
    "merge": "t0dqm.tasks.index.merge",
    "zip": "t0dqm.tasks.archive.zip_file",
    "stage": "t0dqm.tasks.tape.stage",
    "verify": "t0dqm.tasks.tape.verify",
}

Sender = Callable[[str, tuple[Any, ...]], None]


@dataclass(frozen=True)
class Action:
    """What reprocess or retry-bad did to one item."""

    step: str
    item: str
    did: str  # e.g. "failed -> pending, sent", "sent", "skipped: ..."
    task: str | None = None
    args: tuple[Any, ...] = ()

    def line(self) -> str:
        return f"{self.step:<8} {self.item}: {self.did}"


def steps_from(step: str) -> tuple[str, ...]:
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    return STEPS[STEPS.index(step) :]


def _audit(
    catalog: Catalog,
    conn: Any,
    entity: str,
    entity_id: int | None,
    path: str,
    detail: str,
    from_state: str | None = None,
    to_state: str | None = None,
) -> None:
    catalog.audit(
        conn,
        entity=entity,
        entity_id=entity_id,
        action="reprocess",
        path=path,
        from_state=from_state,
        to_state=to_state,
        rule="operator",
        detail=detail,
    )


def _receive(settings: config.Settings, catalog: Catalog, run: int, dataset: str | None) -> list[Action]:
    out = []
    for cand in dropbox.scan(settings.dropbox):
        if cand.info is None or cand.info.run != run or (dataset and cand.info.dataset != dataset):
            continue
        rel = str(cand.path.relative_to(settings.dropbox))
        with catalog.begin() as conn:
            _audit(catalog, conn, "path", None, rel, f"send {TASKS['receive']}")
        out.append(Action("receive", rel, "sent", TASKS["receive"], (rel,)))
    return out


def _index(settings: config.Settings, catalog: Catalog, run: int, dataset: str | None) -> list[Action]:
    from t0dqm.steps.index import partial_path

    out: list[Action] = []
    merge = False
    with catalog.read() as conn:
        rows = queries.run_files_index_states(conn, run, dataset)
    for row in rows:
        state = row.index_state
        if row.state == states.REMOVED and state != states.INDEX_PARTIAL:
            out.append(Action("index", row.path, f"skipped: ROOT file removed ({state})"))
            continue
        if state == states.INDEX_FAILED:
            new = states.INDEX_PARTIAL if partial_path(settings, row.id).exists() else states.INDEX_PENDING
            with catalog.begin() as conn:
                moved = queries.reset_index_state(conn, row.id, state, new, time.time())
                if moved:
                    _audit(catalog, conn, "file", row.id, row.path, f"index {state} -> {new}", state, new)
            if not moved:
                out.append(Action("index", row.path, "skipped: changed meanwhile"))
                continue
            did, state = f"{row.index_state} -> {new}, ", new
        else:
            did = ""
        if state == states.INDEX_PENDING:
            with catalog.begin() as conn:
                _audit(catalog, conn, "file", row.id, row.path, f"send {TASKS['index']}")
            out.append(Action("index", row.path, did + "sent", TASKS["index"], (row.id,)))
        elif state == states.INDEX_PARTIAL:
            merge = True
            out.append(Action("index", row.path, did + "waits for merge"))
        else:
            out.append(Action("index", row.path, f"left {state}"))
    if merge:
        out.append(Action("index", "(merge)", "sent", TASKS["merge"], ()))
    return out


def _zip(settings: config.Settings, catalog: Catalog, run: int, dataset: str | None) -> list[Action]:
    out = []
    with catalog.read() as conn:
        rows = queries.run_files_outside_archives(conn, run, dataset)
    for row in rows:
        if row.state != states.RECEIVED or not row.zippat:
            out.append(
                Action("zip", row.path, f"skipped: {row.state}{'' if row.zippat else ', no zip pattern'}")
            )
            continue
        with catalog.begin() as conn:
            _audit(catalog, conn, "file", row.id, row.path, f"send {TASKS['zip']}")
        out.append(Action("zip", row.path, "sent", TASKS["zip"], (row.id,)))
    return out


def _run_archives(catalog: Catalog, run: int, dataset: str | None) -> list[Any]:
    with catalog.read() as conn:
        return list(queries.run_archives(conn, run, dataset))


def _stage(settings: config.Settings, catalog: Catalog, run: int, dataset: str | None) -> list[Action]:
    out = []
    for arch in _run_archives(catalog, run, dataset):
        state = arch["state"]
        if state in (states.FAILED, states.CONFLICT):
            if not arch["frozen_at"] or not arch["adler32"]:
                out.append(
                    Action(
                        "stage",
                        arch["path"],
                        f"skipped: {state} before it was frozen ({arch['reason'] or 'no reason'})",
                    )
                )
                continue
            with catalog.begin() as conn:
                ok = catalog.transition(
                    conn,
                    "archive",
                    arch["id"],
                    state,
                    states.FROZEN,
                    tries=0,
                    next_try_at=None,
                    reason=None,
                    detail=f"reprocess: operator reset from {state}",
                )
                if ok:
                    _audit(
                        catalog,
                        conn,
                        "archive",
                        arch["id"],
                        arch["path"],
                        f"send {TASKS['stage']}",
                        state,
                        states.FROZEN,
                    )
            if not ok:
                out.append(Action("stage", arch["path"], "skipped: changed meanwhile"))
                continue
            out.append(
                Action("stage", arch["path"], f"{state} -> frozen, sent", TASKS["stage"], (arch["id"],))
            )
        elif state == states.FROZEN:
            with catalog.begin() as conn:
                queries.clear_archive_backoff(conn, arch["id"], states.FROZEN, time.time())
                _audit(
                    catalog,
                    conn,
                    "archive",
                    arch["id"],
                    arch["path"],
                    f"clear back-off, send {TASKS['stage']}",
                )
            out.append(Action("stage", arch["path"], "back-off cleared, sent", TASKS["stage"], (arch["id"],)))
        else:
            out.append(Action("stage", arch["path"], f"left {state}"))
    return out


def _verify(settings: config.Settings, catalog: Catalog, run: int, dataset: str | None) -> list[Action]:
    out = []
    verifiable = [states.COPIED, states.VERIFIED] if settings.archive.require_tape else [states.COPIED]
    for arch in _run_archives(catalog, run, dataset):
        if arch["state"] not in verifiable:
            out.append(Action("verify", arch["path"], f"left {arch['state']}"))
            continue
        with catalog.begin() as conn:
            queries.clear_archive_backoff(conn, arch["id"], arch["state"], time.time())
            _audit(
                catalog, conn, "archive", arch["id"], arch["path"], f"clear back-off, send {TASKS['verify']}"
            )
        due = (arch["copied_at"] or 0) + float(settings.archive.verify_delay)
        note = "" if due <= time.time() else f" (runs after the verify delay, {time.ctime(due)})"
        out.append(
            Action("verify", arch["path"], "back-off cleared, sent" + note, TASKS["verify"], (arch["id"],))
        )
    return out


STEP_FUNCTIONS = {"receive": _receive, "index": _index, "zip": _zip, "stage": _stage, "verify": _verify}


def reprocess(
    settings: config.Settings,
    catalog: Catalog,
    run: int,
    *,
    send: Sender,
    dataset: str | None = None,
    from_step: str = "index",
) -> list[Action]:
    """Take run ``run`` (and ``dataset``) back to ``from_step`` and every later step; returns the actions.

    Messages are sent (through ``send``) after each state change committed.
    """
    out: list[Action] = []
    for step in steps_from(from_step):
        actions = STEP_FUNCTIONS[step](settings, catalog, run, dataset)
        for action in actions:
            if action.task:
                send(action.task, action.args)
        out.extend(actions)
    return out


# -- retry-bad --------------------------------------------------------------------------------------


def quarantined(catalog: Catalog, ids: list[int] | None = None) -> list[dict[str, Any]]:
    """Unresolved quarantine rows (all, or those ``ids``), oldest first."""
    with catalog.read() as conn:
        return queries.unresolved_quarantine(conn, ids)


def _resolve(catalog: Catalog, row: dict[str, Any], detail: str) -> bool:
    with catalog.begin() as conn:
        done = queries.resolve_quarantine(conn, row["id"], time.time())
        if done:
            catalog.audit(
                conn,
                entity="path",
                action="retry-bad",
                path=row["path"],
                rule="operator",
                detail=f"{detail}; was: {row['reason']}",
            )
    return done


def retry_bad(
    settings: config.Settings, catalog: Catalog, *, send: Sender, ids: list[int] | None = None
) -> list[Action]:
    """Re-queue quarantined uploads (after an operator fixed the cause); see the module docstring.

    Order: restore ``.origin`` first (so a crash never loses the upload), then drop the marker, then
    resolve the row; an upload that was meanwhile received or removed only gets its row resolved.
    """
    out: list[Action] = []
    seen: set[str] = set()
    for row in quarantined(catalog, ids):
        rel = row["path"]
        p = Path(os.path.normpath(settings.dropbox / rel))
        if settings.dropbox not in p.parents:
            out.append(Action("retry", rel, "skipped: path outside the dropbox"))
            continue
        bad_origin = p.with_name(p.name + dropbox.ORIGIN_BAD)
        origin = p.with_name(p.name + dropbox.ORIGIN)
        marker = p.with_name(p.name + dropbox.BAD)
        if rel in seen:  # several rows for one upload (different reasons over time)
            _resolve(catalog, row, "re-queued with an earlier row")
            continue
        seen.add(rel)
        if os.path.lexists(bad_origin):
            if os.path.lexists(origin) or os.path.lexists(p.with_name(p.name + dropbox.CLAIMED)):
                out.append(
                    Action("retry", rel, "skipped: both .origin.bad and a live .origin/.claimed exist")
                )
                continue
            if not p.exists():
                out.append(Action("retry", rel, "skipped: the upload file is missing (fix it first)"))
                continue
            os.rename(bad_origin, origin)
            marker.unlink(missing_ok=True)
            _resolve(catalog, row, "re-queued: .origin.bad -> .origin")
            out.append(Action("retry", rel, "re-queued", TASKS["receive"], (rel,)))
        elif os.path.lexists(origin):
            marker.unlink(missing_ok=True)
            _resolve(catalog, row, "re-queued: .origin already restored")
            out.append(Action("retry", rel, "re-queued (.origin was already back)", TASKS["receive"], (rel,)))
        else:
            marker.unlink(missing_ok=True)
            _resolve(catalog, row, "resolved: the upload is no longer quarantined in the dropbox")
            out.append(Action("retry", rel, "resolved (no longer in the dropbox)"))
    for action in out:
        if action.task:
            try:
                send(action.task, action.args)
            except Exception:  # noqa: BLE001, S110 - the next dropbox scan picks it up anyway
                pass
    return out
