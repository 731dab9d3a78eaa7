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

from t0dqm import config
from t0dqm.catalog import gui as rows
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog
from t0dqm.catalog.files import Connection
from t0dqm.catalog.gui import ALARM_UNREACHABLE
from t0dqm.catalog.states import INDEX_SKIPPED, REMOVED
from t0dqm.policies import gui as policy
from t0dqm.steps.next import Context, Next, Outcome
from t0dqm.steps.reconcile import Resume, recoverer

logger = logging.getLogger("t0dqm.steps.gui")

REGISTER_TASK = "t0dqm.tasks.gui.register"
CHECK_TASK = "t0dqm.tasks.gui.check"
REGISTER_PATH = "/api/v1/register"
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

    def __init__(
        self, base_url: str, timeout: float = 30, cert: str = "", key: str = "", ca: str = ""
    ) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.context = None
        if self.base.startswith("https://"):
            from t0dqm.steps.sync import make_ssl_context

            self.context = make_ssl_context(cert, key, ca)

    def _call(self, request: urllib.request.Request) -> Reply:
        try:
            with urllib.request.urlopen(  # noqa: S310 - requests built here from base (http(s), config.Gui)
                request,
                timeout=self.timeout,
                context=self.context,
            ) as resp:
                return Reply(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.read())
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GuiUnavailable(f"{request.full_url}: {reason}") from None

    def register(self, samples: Sequence[policy.Sample]) -> Reply:
        body = json.dumps([s.payload() for s in samples]).encode()
        request = urllib.request.Request(  # noqa: S310 - gui.register_url: http(s) (config.Gui)
            self.base + REGISTER_PATH, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        return self._call(request)

    def archive(self, run: int, dataset: str) -> Reply:
        url = self.base + policy.archive_url_path(run, dataset)
        return self._call(urllib.request.Request(url))  # noqa: S310 - base: http(s) (config.Gui)


def enabled(settings: config.Settings) -> bool:
    return bool(settings.gui.register_url)


def client_for(settings: config.Settings, url: str | None = None) -> GuiClient:
    g = settings.gui
    return GuiClient(
        url or g.register_url,
        timeout=float(g.timeout or settings.timeout("http")),
        cert=g.cert,
        key=g.key,
        ca=g.ca,
    )


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
        return {
            "registered": len(self.registered),
            "rejected": len(self.rejected),
            "skipped": len(self.skipped),
            "requests": self.requests,
        }


def _facts(row: Any) -> policy.FileFacts:
    return policy.FileFacts(
        id=row.id,
        path=row.path,
        cls=row.cls,
        run=row.run,
        version=row.version,
        dataset=row.dataset,
        subsystem=row.subsystem,
        registered=row.gui_registered_at is not None,
        removed=row.state == REMOVED,
        indexed=row.index_state != INDEX_SKIPPED,
    )


class Registrar:
    def __init__(self, settings: config.Settings, catalog: Catalog, client: GuiClient | None = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.client = client or client_for(settings)
        self.g = settings.gui

    # -- catalog --------------------------------------------------------------------------------------
    def _load(self, ids: Sequence[int]) -> tuple[list[policy.FileFacts], list[policy.FileFacts]]:
        """The candidate rows and every row sharing run and dataset with one of them."""
        if not ids:
            return [], []
        with self.catalog.read() as conn:
            cands = [_facts(r) for r in rows.rows_by_ids(conn, ids)]
            keys = {(f.run, f.dataset) for f in cands}
            runs = sorted({run for run, _ in keys})
            group = [f for f in map(_facts, rows.rows_of_runs(conn, runs)) if (f.run, f.dataset) in keys]
        return cands, group

    def _mark(self, ids: Iterable[int], **values: Any) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.catalog.begin() as conn:
            rows.set_values(conn, ids, **values)

    def _registered(self, batch: Sequence[policy.Sample]) -> None:
        """``gui_registered_at`` and one audit row per file (what the GUI was told), in one transaction."""
        now = time.time()
        with self.catalog.begin() as conn:
            rows.mark_registered(
                conn,
                [s.file_id for s in batch],
                now,
                [
                    {
                        "at": now,
                        "host": self.catalog.host,
                        "entity": "file",
                        "entity_id": s.file_id,
                        "action": "gui-register",
                        "path": s.file,
                        "detail": f"{s.dataset} run {s.run}",
                        "rule": self.client.base,
                    }
                    for s in batch
                ],
            )

    def forget_reasons(self, ids: Sequence[int]) -> None:
        """Clear ``gui_reason`` (an operator asks to send these again)."""
        self._mark(ids, gui_reason=None)

    def _note(self, reasons: dict[int, str]) -> None:
        """Why a row is not sent (only rows not registered meanwhile)."""
        if not reasons:
            return
        with self.catalog.begin() as conn:
            rows.note_reasons(conn, reasons)

    # -- one pass -------------------------------------------------------------------------------------
    def _plan(self, ids: Sequence[int], force: bool) -> policy.Plan:
        cands, group = self._load(ids)
        return policy.plan(
            cands,
            group,
            repository=str(self.settings.repository),
            online_dataset=self.g.online_dataset,
            online_subsystem_dataset=self.g.online_subsystem_dataset,
            prefix=self.g.file_prefix,
            force=force,
        )

    def samples(self, ids: Sequence[int]) -> list[policy.Sample]:
        """The GUI samples of these files (newest versions only), registered or not."""
        return list(self._plan(ids, True).send)

    def register(self, ids: Sequence[int], *, force: bool = False) -> Result:
        """Send the files ``ids`` that should be in the GUI; GuiUnavailable when the GUI is down (what
        was registered before that is recorded)."""
        decided = self._plan(ids, force)
        result = Result(skipped=dict(decided.skip), samples=list(decided.send))
        self._note(result.skipped)
        for batch in policy.batches(decided.send, self.g.batch):
            self._send(batch, result)
        if result.rejected:
            first = next(iter(result.rejected.items()))
            raise_alarm(
                self.catalog,
                ALARM_REJECTED,
                f"DQM GUI refused {len(result.rejected)} file(s), e.g. file {first[0]}: {first[1]}",
                "critical",
            )
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
                raise_alarm(
                    self.catalog,
                    key,
                    f"DQM GUI cannot read {s.file} (run {s.run}, {s.dataset}): HTTP {reply.status} "
                    f"{reply.message()}",
                    "critical",
                )
            else:
                logger.warning("gui check %s %s: HTTP %s %s", s.run, s.dataset, reply.status, reply.message())
                counts["unknown"] += 1
        return counts


# -- steps (the tasks of t0dqm.tasks.gui call these) ---------------------------------------------------


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    size = max(1, int(size))
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def registration_next(settings: config.Settings, file_ids: Iterable[int | None]) -> list[Next]:
    """The registration of newly committed files (nothing when ``gui.register_url`` is empty)."""
    ids = [int(i) for i in file_ids if i is not None]
    if not (ids and enabled(settings)):
        return []
    return [Next(REGISTER_TASK, (chunk,)) for chunk in chunks(ids, settings.gui.batch)]


def register(
    ctx: Context, file_ids: Sequence[int], force: bool = False, *, tries: int = 1, last_try: bool = True
) -> Outcome:
    """Register these files with the GUI (the newest version of each sample; registered ones only with
    ``force``); next: the check of what was registered (``gui.check_readable``). When the GUI is down:
    GuiUnavailable (the task retries), or on the ``last_try`` the unreachable alarm (reconcile sends
    the files again)."""
    settings = ctx.settings
    if not enabled(settings):
        return Outcome({"off": len(file_ids)})
    g = settings.gui
    try:
        result = Registrar(settings, ctx.catalog).register([int(i) for i in file_ids], force=bool(force))
    except GuiUnavailable as exc:
        if not last_try:
            raise
        raise_alarm(
            ctx.catalog,
            ALARM_UNREACHABLE,
            f"DQM GUI {g.register_url} did not take {len(file_ids)} file(s) after "
            f"{tries} tries: {exc}; reconcile sends them again",
            "warning",
        )
        ctx.log("gui-register-unreachable", files=len(file_ids), error=str(exc))
        return Outcome({"unreachable": len(file_ids)})
    nexts = [Next(CHECK_TASK, (result.registered,))] if result.registered and g.check_readable else []
    ctx.log("gui-register", **result.counts())
    return Outcome(result.counts(), next=nexts)


def retry_delay(settings: config.Settings, retries: int) -> float:
    """Seconds before the next try of a registration (``gui.retry_base`` doubling up to ``gui.retry_cap``)."""
    g = settings.gui
    return policy.retry_delay(retries, g.retry_base, g.retry_cap)


def check(ctx: Context, file_ids: Sequence[int]) -> Outcome:
    """Read each registered sample's top folder in the GUI; a 5xx raises the unreadable alarm."""
    settings = ctx.settings
    if not enabled(settings):
        return Outcome({})
    registrar = Registrar(settings, ctx.catalog)
    counts = registrar.check(registrar.samples([int(i) for i in file_ids]), budget=240.0)
    if counts["unreadable"]:
        ctx.log("gui-unreadable", **counts)
    return Outcome(counts)


@recoverer("gui-register")
def _recover_registrations(conn: Connection, settings: Any, now: float) -> Iterable[Resume]:
    """Files received more than ``reconcile.stale_seconds`` ago that the GUI does not have yet."""
    if not enabled(settings):
        return []
    stale = settings.reconcile.stale_seconds
    if rows.unreachable_recently(conn, now, stale):
        return []
    ids = rows.missing_ids(conn, older_than=now - stale, limit=5000)
    return [Resume(REGISTER_TASK, (chunk,)) for chunk in chunks(ids, settings.gui.batch)]
