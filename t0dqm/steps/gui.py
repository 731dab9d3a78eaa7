"""Register received files with the new DQM GUI, and check that it can read them.

The GUI (cms-DQM/dqmgui) takes files with ``POST /api/v1/register``: a JSON list of
``{"dataset", "run", "lumi", "file", "fileformat"}``; 201 means stored, 400 carries ``{"message"}``.
It has no call to remove a file. It reads a file the first time somebody browses it,
``GET /api/v1/archive/<run>/<PD>/<Era>/<Tier>/``; a file it cannot read gives 500 there.

:class:`Registrar` does one registration pass for a set of catalog rows (the task, the CLI and the demo
use it): plan (``t0dqm.policies.gui``), POST in batches of ``gui.batch``, record ``gui_registered_at``
(or ``gui_reason`` for what is not sent) and raise or clear alarms:

* 201: the batch's rows get ``gui_registered_at`` and an audit row each (action ``gui-register``); the
  ``gui-register:unreachable`` alarm is cleared;
* 400: the batch is split in halves until the rejected files are alone; each gets ``gui_reason`` =
  the GUI's message (reconcile does not send it again) and the ``gui-register:rejected`` alarm carries
  the message; ``t0dqm gui register --run N`` sends it again once fixed;
* 5xx, 429, a connection error or a timeout: :class:`GuiUnavailable` (the task retries with back-off).

:meth:`Registrar.check` GETs each sample's top folder: a 5xx raises ``gui-unreadable:<run>:<dataset>``
(the GUI cannot read the file), a 200 clears it; anything else is logged only.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update

from t0dqm import config
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog, audit, files
from t0dqm.catalog.states import INDEX_SKIPPED, REMOVED
from t0dqm.policies import gui as policy

logger = logging.getLogger("t0dqm.steps.gui")

REGISTER_PATH = "/api/v1/register"
ALARM_UNREACHABLE = "gui-register:unreachable"
ALARM_REJECTED = "gui-register:rejected"
ALARM_UNREADABLE = "gui-unreadable"


class GuiUnavailable(Exception):
    """The GUI did not answer, or answered 5xx/429: try again later."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes

    def message(self) -> str:
        try:
            data = json.loads(self.body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
        except ValueError:
            pass
        return " ".join(self.body.decode(errors="replace").split())[:300] or f"HTTP {self.status}"


class GuiClient:
    """HTTP to the GUI with a timeout (urllib; TLS with an optional client certificate)."""

    def __init__(self, base_url: str, timeout: float = 30, cert: str = "", key: str = "", ca: str = "") -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.context = None
        if self.base.startswith("https://"):
            from t0dqm.steps.sync import make_ssl_context

            self.context = make_ssl_context(cert, key, ca)

    def _call(self, request: urllib.request.Request) -> Reply:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as resp:
                return Reply(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.read())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GuiUnavailable(f"{request.full_url}: {reason}") from None

    def register(self, samples: Sequence[policy.Sample]) -> Reply:
        body = json.dumps([s.payload() for s in samples]).encode()
        request = urllib.request.Request(self.base + REGISTER_PATH, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        return self._call(request)

    def archive(self, run: int, dataset: str) -> Reply:
        return self._call(urllib.request.Request(self.base + policy.archive_url_path(run, dataset)))


def gui_settings(settings: config.Settings) -> dict[str, Any]:
    return settings["gui"]


def enabled(settings: config.Settings) -> bool:
    return bool(gui_settings(settings)["register_url"])


def client_for(settings: config.Settings, url: str | None = None) -> GuiClient:
    g = gui_settings(settings)
    return GuiClient(url or g["register_url"], timeout=float(g["timeout"] or settings.timeout("http")),
                     cert=g["cert"], key=g["key"], ca=g["ca"])


@dataclass
class Result:
    """What one pass did; ``checked`` lists (run, dataset) whose top folder was read."""

    registered: list[int] = field(default_factory=list)
    rejected: dict[int, str] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)
    requests: int = 0
    samples: list[policy.Sample] = field(default_factory=list)

    def registered_samples(self) -> list[policy.Sample]:
        done = set(self.registered)
        return [s for s in self.samples if s.file_id in done]

    def counts(self) -> dict[str, int]:
        return {"registered": len(self.registered), "rejected": len(self.rejected),
                "skipped": len(self.skipped), "requests": self.requests}


def _facts(row: Any) -> policy.FileFacts:
    return policy.FileFacts(id=row.id, path=row.path, cls=row.cls, run=row.run, version=row.version,
                            dataset=row.dataset, subsystem=row.subsystem,
                            registered=row.gui_registered_at is not None, removed=row.state == REMOVED,
                            indexed=row.index_state != INDEX_SKIPPED)


_COLUMNS = (files.c.id, files.c.path, files.c.cls, files.c.run, files.c.version, files.c.dataset,
            files.c.subsystem, files.c.state, files.c.index_state, files.c.gui_registered_at)


class Registrar:
    def __init__(self, settings: config.Settings, catalog: Catalog, client: GuiClient | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.client = client or client_for(settings)
        self.g = gui_settings(settings)

    # -- catalog --------------------------------------------------------------------------------------
    def _load(self, ids: Sequence[int]) -> tuple[list[policy.FileFacts], list[policy.FileFacts]]:
        """The candidate rows and every row sharing run and dataset with one of them."""
        if not ids:
            return [], []
        with self.catalog.read() as conn:
            cands = [_facts(r) for r in conn.execute(select(*_COLUMNS).where(files.c.id.in_(list(ids))))]
            keys = {(f.run, f.dataset) for f in cands}
            group: list[policy.FileFacts] = []
            runs = sorted({run for run, _ in keys})
            for start in range(0, len(runs), 500):
                rows = conn.execute(select(*_COLUMNS).where(files.c.run.in_(runs[start:start + 500])))
                group += [f for f in map(_facts, rows) if (f.run, f.dataset) in keys]
        return cands, group

    def _mark(self, ids: Iterable[int], **values: Any) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.catalog.begin() as conn:
            for start in range(0, len(ids), 500):
                conn.execute(update(files).where(files.c.id.in_(ids[start:start + 500])).values(**values))

    def _registered(self, batch: Sequence[policy.Sample]) -> None:
        """``gui_registered_at`` and one audit row per file (what the GUI was told), in one transaction."""
        now = time.time()
        with self.catalog.begin() as conn:
            conn.execute(update(files).where(files.c.id.in_([s.file_id for s in batch]))
                         .values(gui_registered_at=now, gui_reason=None))
            conn.execute(insert(audit), [
                {"at": now, "host": self.catalog.host, "entity": "file", "entity_id": s.file_id,
                 "action": "gui-register", "path": s.file, "detail": f"{s.dataset} run {s.run}",
                 "rule": self.client.base} for s in batch])

    def forget_reasons(self, ids: Sequence[int]) -> None:
        """Clear ``gui_reason`` (an operator asks to send these again)."""
        self._mark(ids, gui_reason=None)

    def _note(self, reasons: dict[int, str]) -> None:
        """Why a row is not sent (only rows not registered meanwhile)."""
        if not reasons:
            return
        with self.catalog.begin() as conn:
            for file_id, reason in reasons.items():
                conn.execute(update(files).where(files.c.id == file_id, files.c.gui_registered_at.is_(None))
                             .values(gui_reason=reason[:1000]))

    # -- one pass -------------------------------------------------------------------------------------
    def _plan(self, ids: Sequence[int], force: bool) -> policy.Plan:
        cands, group = self._load(ids)
        return policy.plan(cands, group, repository=str(self.settings.repository),
                           online_dataset=self.g["online_dataset"],
                           online_subsystem_dataset=self.g["online_subsystem_dataset"],
                           prefix=self.g["file_prefix"], force=force)

    def samples(self, ids: Sequence[int]) -> list[policy.Sample]:
        """The GUI samples of these files (newest versions only), registered or not."""
        return list(self._plan(ids, True).send)

    def register(self, ids: Sequence[int], *, force: bool = False) -> Result:
        """Send the files ``ids`` that should be in the GUI; GuiUnavailable when the GUI is down (what
        was registered before that is recorded)."""
        decided = self._plan(ids, force)
        result = Result(skipped=dict(decided.skip), samples=list(decided.send))
        self._note(result.skipped)
        for batch in policy.batches(decided.send, self.g["batch"]):
            self._send(batch, result)
        if result.rejected:
            first = next(iter(result.rejected.items()))
            raise_alarm(self.catalog, ALARM_REJECTED,
                        f"DQM GUI refused {len(result.rejected)} file(s), e.g. file {first[0]}: {first[1]}",
                        "critical")
        return result

    def _send(self, batch: list[policy.Sample], result: Result) -> None:
        reply = self.client.register(batch)
        result.requests += 1
        if reply.status == 201:
            self._registered(batch)
            result.registered += [s.file_id for s in batch]
            clear_alarm(self.catalog, ALARM_UNREACHABLE)
            return
        if reply.status >= 500 or reply.status == 429:
            raise GuiUnavailable(f"register: HTTP {reply.status}: {reply.message()}")
        if len(batch) > 1:  # find the file(s) the GUI refuses; the others go in
            half = len(batch) // 2
            self._send(batch[:half], result)
            self._send(batch[half:], result)
            return
        (sample,) = batch
        reason = f"rejected by the DQM GUI (HTTP {reply.status}): {reply.message()}"
        logger.warning("gui register %s: %s", sample.file, reason)
        result.rejected[sample.file_id] = reason
        self._note({sample.file_id: reason})

    def check(self, samples: Iterable[policy.Sample], budget: float = 240.0) -> dict[str, int]:
        """GET each sample's top folder once: 5xx raises the per-sample unreadable alarm, 200 clears it."""
        counts = {"readable": 0, "unreadable": 0, "unknown": 0}
        started = time.monotonic()
        done: set[tuple[int, str]] = set()
        for s in samples:
            if (s.run, s.dataset) in done:
                continue
            if time.monotonic() - started > budget:
                counts["unknown"] += 1
                continue
            done.add((s.run, s.dataset))
            key = f"{ALARM_UNREADABLE}:{s.run}:{s.dataset}"
            try:
                reply = self.client.archive(s.run, s.dataset)
            except GuiUnavailable as exc:
                logger.warning("gui check %s %s: %s", s.run, s.dataset, exc)
                counts["unknown"] += 1
                continue
            if reply.status == 200:
                counts["readable"] += 1
                clear_alarm(self.catalog, key)
            elif reply.status >= 500 and reply.status != 503:
                counts["unreadable"] += 1
                raise_alarm(self.catalog, key,
                            f"DQM GUI cannot read {s.file} (run {s.run}, {s.dataset}): HTTP {reply.status} "
                            f"{reply.message()}", "critical")
            else:
                logger.warning("gui check %s %s: HTTP %s %s", s.run, s.dataset, reply.status, reply.message())
                counts["unknown"] += 1
        return counts


# -- what is missing ---------------------------------------------------------------------------------------

def missing_ids(conn: Any, *, older_than: float | None = None, run: int | None = None, everything: bool = False,
                limit: int = 100000) -> list[int]:
    """Rows the GUI should have and has not: not registered, not refused nor left with a reason, ROOT file
    present, indexed. ``older_than``: received before this time (reconcile leaves fresh files to the
    chain). ``everything`` / ``run``: every present row (of the run), registered or not."""
    query = select(files.c.id).where(files.c.state != REMOVED, files.c.index_state != INDEX_SKIPPED)
    if not everything and run is None:
        query = query.where(and_(files.c.gui_registered_at.is_(None), files.c.gui_reason.is_(None)))
    if run is not None:
        query = query.where(files.c.run == int(run))
    if older_than is not None:
        query = query.where(files.c.created_at < older_than)
    return [r[0] for r in conn.execute(query.order_by(files.c.id).limit(limit))]


def _removed_registered_query() -> Any:
    newer = files.alias("newer")
    replaced = select(newer.c.id).where(
        newer.c.run == files.c.run, newer.c.dataset == files.c.dataset,
        or_(newer.c.subsystem == files.c.subsystem, and_(newer.c.subsystem.is_(None), files.c.subsystem.is_(None))),
        newer.c.version > files.c.version, newer.c.gui_registered_at.is_not(None)).exists()
    return (select(files.c.id, files.c.cls, files.c.run, files.c.dataset, files.c.subsystem, files.c.version,
                   files.c.path, files.c.gui_registered_at)
            .where(files.c.state == REMOVED, files.c.gui_registered_at.is_not(None), ~replaced))


def removed_but_registered(conn: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """Registered rows whose ROOT file version or quota control deleted and that no newer registered
    version of the same sample replaced in the GUI: the GUI still points at a missing file."""
    query = _removed_registered_query().order_by(files.c.run, files.c.id)
    if limit is not None:
        query = query.limit(limit)
    return [dict(r) for r in conn.execute(query).mappings()]


def counts(conn: Any) -> dict[str, int]:
    """registered (ROOT file present); waiting (present, not yet registered); not_sent (left with a
    reason, see ``files.gui_reason``); removed_registered (see :func:`removed_but_registered`).
    Aggregated in SQL: a few rows come back, whatever the catalog holds."""
    registered, has_reason = files.c.gui_registered_at.is_not(None), files.c.gui_reason.is_not(None)
    groups = (registered, has_reason, files.c.state, files.c.index_state)
    rows = conn.execute(select(*groups, func.count()).group_by(*groups)).all()
    out = {"registered": 0, "waiting": 0, "not_sent": 0, "removed_registered": 0}
    for is_registered, reason, state, index_state, n in rows:
        if state == REMOVED or (index_state == INDEX_SKIPPED and not is_registered):
            continue
        if is_registered:
            out["registered"] += n
        else:
            out["not_sent" if reason else "waiting"] += n
    out["removed_registered"] = conn.execute(
        select(func.count()).select_from(_removed_registered_query().subquery())).scalar_one()
    return out


def unreachable_recently(conn: Any, now: float, window: float) -> bool:
    """The unreachable alarm is active and was raised within ``window`` seconds (back off)."""
    from t0dqm.catalog.db import alarms

    row = conn.execute(select(alarms.c.last_at).where(alarms.c.key == ALARM_UNREACHABLE,
                                                      alarms.c.active.is_(True))).first()
    return row is not None and row.last_at > now - window


