"""Tier-0 outputs placed with Rucio: registration, rule creation, rule-state polling, release.

An output registration is one Rucio block (``/PD/Era-vN/TIER#<id>``) of files inside the container named
after the dataset. The files are recorded in ``t0_outputs`` (one row per file: path, LFN, size,
adler32, the endpoints it must reach); one ``t0_rules`` row per (block, RSE) says which Rucio rule
stands for that endpoint and its last seen state. The order of work makes every step safe to repeat
and to kill at any line:

1. ``register``: the name is checked, the policy picks the endpoints, and the catalog records the files
   and ``pending`` rule rows in one transaction; then ``sync_block`` creates what Rucio lacks.
2. ``sync_block``: container, block, replicas at the Tier-0 disk, attachments, then one rule per pending
   row; a rule that already exists (same account, DID, RSE) is found and reused.
3. ``poll`` (beat): reads each rule; an endpoint rule in OK marks the endpoint done for every file of the
   block; a rule STUCK longer than ``rucio.stuck_alarm_after`` raises an alarm; a recorded rule that Rucio
   no longer has is marked ``missing`` with a critical alarm. Pending rows are created here too, so
   registrations that met a Rucio outage complete.
4. ``release`` (retention): when every file of a block is released by the retention policy, the guard
   re-reads every endpoint rule (all must exist and be OK) and the Tier-0 disk rule itself (ours, on
   this block, to the Tier-0 disk RSE), then deletes only that rule. Rucio's reaper removes the replicas.
   No other rule is ever deleted.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from t0dqm import storage
from t0dqm.catalog import outputs
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog
from t0dqm.clients.rucio import RucioGateway, RucioRefused, gateway
from t0dqm.formats import datasets
from t0dqm.policies import placement as policy
from t0dqm.steps.next import Context, LeaseBusy, Outcome

REGISTER_TASK = "t0dqm.tasks.tier0.register_output"
POLL_TASK = "t0dqm.tasks.tier0.poll_rules"
ENTITY = outputs.RULE_ENTITY
STEP = "t0-register"
ADLER_RE = re.compile(r"^[0-9a-f]{8}$")
FINAL = ("removed", "missing")  # rule rows no longer polled
HEALTHY = ("OK", "REPLICATING", "INJECT")
_NS = uuid.UUID("6f1d3c1e-5b0a-4c43-9d7e-1f0e2a7c9b11")


class PlacementRefused(ValueError):
    """The registration is refused; the message says why (nothing was recorded)."""


@dataclass(frozen=True)
class OutputFile:
    path: str
    size: int
    adler32: str
    lfn: str


def lfn_of(path: str) -> str:
    """The CMS logical file name: the part of a local path or root:// URL from ``/store/`` on."""
    plain = storage.split_url(path)[1] if storage.is_remote(path) else path
    at = plain.find("/store/")
    if at < 0 or ".." in plain.split("/"):
        raise PlacementRefused(f"{path}: no /store/ in the path, so no CMS logical file name")
    return "/" + plain[at:].lstrip("/")


def parse_files(items: Iterable[Mapping[str, Any]]) -> list[OutputFile]:
    """Validate [{"path", "size", "adler32"}]; PlacementRefused names the first bad entry."""
    out: list[OutputFile] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise PlacementRefused(f"file {i}: expected an object with path, size, adler32, got {item!r}")
        path, size, adler = item.get("path"), item.get("size"), item.get("adler32")
        if not isinstance(path, str) or not path:
            raise PlacementRefused(f"file {i}: missing path")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PlacementRefused(f"{path}: size must be a number of bytes >= 0, got {size!r}")
        if not isinstance(adler, str) or not ADLER_RE.match(adler.strip().lower().zfill(8)):
            raise PlacementRefused(f"{path}: adler32 must be up to 8 hex digits, got {adler!r}")
        lfn = lfn_of(path)
        if lfn in seen:
            raise PlacementRefused(f"{path}: the logical file name {lfn} appears twice")
        seen.add(lfn)
        out.append(OutputFile(path, size, storage.normalise_adler32(adler), lfn))
    if not out:
        raise PlacementRefused("no files")
    return out


def block_name(dataset: str, files: list[OutputFile]) -> str:
    """A stable block name for this set of files: the same registration maps to the same block."""
    key = dataset + "\n" + "\n".join(sorted(f.lfn for f in files))
    return f"{dataset}#{uuid.uuid5(_NS, key)}"


def _subscriptions(settings: Any) -> policy.Subscriptions:
    return policy.from_config(settings.subscriptions)


def _quarantine(catalog: Catalog, name: str, reason: str) -> None:
    outputs.quarantine_request(catalog, name, reason, STEP)


def register(
    catalog: Catalog,
    settings: Any,
    dataset: str,
    files: Iterable[Mapping[str, Any]],
    *,
    needed_by: int = 0,
    block: str | None = None,
    created_at: float | None = None,
    gw: RucioGateway | None = None,
) -> dict[str, Any]:
    """Record an output and create its Rucio rules (when Rucio is configured).

    Raises PlacementRefused (after quarantining the request) for a bad name or file list, RucioUnavailable
    when Rucio does not answer (the catalog keeps the pending rules: the poll completes them).
    """
    try:
        name = datasets.parse(dataset)
    except datasets.DatasetNameError as exc:
        _quarantine(catalog, str(dataset), f"dataset name refused: {exc}")
        raise PlacementRefused(f"dataset name refused: {exc}") from None
    try:
        parsed = parse_files(files)
    except PlacementRefused as exc:
        _quarantine(catalog, dataset, str(exc))
        raise
    if isinstance(needed_by, bool):
        needed_by = int(needed_by)
    if not isinstance(needed_by, int) or needed_by < 0:
        raise PlacementRefused(f"needed_by must be a number of jobs >= 0, got {needed_by!r}")
    block = block or block_name(dataset, parsed)
    if not block.startswith(dataset + "#") or len(block) > 600:
        raise PlacementRefused(f"block {block!r} must be {dataset}#<id>")
    subs = _subscriptions(settings)
    placement, endpoints = policy.endpoints(subs, name.pd, name.tier)
    required = sorted(e.rse for e in endpoints if e.role != policy.T0_DISK)
    conflicts: list[str] = []
    now = time.time()
    with catalog.begin() as conn:
        for f in parsed:
            row = outputs.registered(conn, f.path)
            if row is not None and (row.block != block or row.size != f.size or row.adler32 != f.adler32):
                conflicts.append(
                    f"{f.path} is already registered (block {row.block}, size {row.size}, "
                    f"adler32 {row.adler32})"
                )
        if not conflicts:
            for f in parsed:
                outputs.record_output(
                    catalog,
                    f.path,
                    f.size,
                    f.adler32,
                    required,
                    created_at,
                    dataset=dataset,
                    block=block,
                    lfn=f.lfn,
                    conn=conn,
                )
            for e in endpoints:
                outputs.add_rule_row(catalog, conn, block, dataset, e.rse, e.role, now)
    if conflicts:
        _quarantine(catalog, dataset, "; ".join(conflicts))
        raise PlacementRefused("; ".join(conflicts))
    if needed_by:
        for f in parsed:
            outputs.set_needed_by(catalog, f.path, needed_by)
    result: dict[str, Any] = {
        "dataset": dataset,
        "block": block,
        "files": len(parsed),
        "bytes": sum(f.size for f in parsed),
        "placement": placement.as_dict(),
        "endpoints": [e.as_dict() for e in endpoints],
        "needed_by": needed_by,
    }
    if not placement.known:
        notice = (
            f"new primary dataset {policy.base_pd(name.pd)}: subscribed to the default site "
            f"{placement.site}; add it to subscriptions.sites to place it elsewhere"
        )
        result["notice"] = notice
        raise_alarm(catalog, f"t0-new-pd:{policy.base_pd(name.pd)}", notice, severity="info")
    if settings.rucio.url:
        result["rules"] = sync_block(catalog, settings, block, gw=gw)
    else:
        result["rules"] = []
        result["rucio"] = "not configured: rules not created; endpoints are marked done by hand"
    return result


def _activity(settings: Any, role: str) -> str:
    cfg = settings.rucio
    return cfg.tape_activity if role == policy.TAPE else cfg.activity


def sync_block(catalog: Catalog, settings: Any, block: str, *, gw: RucioGateway | None = None) -> list[dict]:
    """Create in Rucio what the block's pending rule rows lack; returns the rule rows after."""
    rows = outputs.rule_rows(catalog, block)
    pending = [r for r in rows if r["state"] == "pending"]
    if pending:
        gw = gw or gateway(settings)
        files = outputs.block_files(catalog, block)
        subs = _subscriptions(settings)
        try:
            gw.ensure_block(rows[0]["dataset"], block, files, subs.t0_disk)
            for row in pending:
                rule_id, created = gw.add_rule(
                    block, row["rse"], _activity(settings, row["role"]), int(settings.rucio.priority)
                )
                info = gw.rule(rule_id)
                state = str(info["state"]) if info else "REPLICATING"
                outputs.set_rule(
                    catalog,
                    row,
                    action="rule-create" if created else "rule-reuse",
                    rule_id=rule_id,
                    state=state,
                    checked_at=time.time(),
                    error=None,
                )
        except RucioRefused as exc:
            for row in pending:
                outputs.set_rule(catalog, row, error=str(exc)[:2000])
            raise_alarm(
                catalog,
                f"t0-rule-refused:{block}",
                f"Rucio refused the rules of {block}: {exc}",
                severity="critical",
            )
            raise
        clear_alarm(catalog, f"t0-rule-refused:{block}")
        rows = outputs.rule_rows(catalog, block)
    return [{k: r[k] for k in ("rse", "role", "rule_id", "state", "error")} for r in rows]


# ------------------------------------------------------------------------------------------------- poll


@dataclass
class PollRun:
    blocks: int = 0
    checked: int = 0
    created: int = 0
    endpoints_done: int = 0
    stuck: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "blocks": self.blocks,
            "checked": self.checked,
            "created": self.created,
            "endpoints_done": self.endpoints_done,
            "stuck": self.stuck,
            "missing": self.missing,
            "refused": self.refused,
            "states": dict(sorted(self.states.items())),
        }


def _stuck_key(row: Mapping[str, Any]) -> str:
    return f"t0-rule-stuck:{row['block']}:{row['rse']}"


def _missing_key(row: Mapping[str, Any]) -> str:
    return f"t0-rule-missing:{row['block']}:{row['rse']}"


def poll(
    catalog: Catalog, settings: Any, *, now: float | None = None, gw: RucioGateway | None = None
) -> PollRun:
    """Read the state of every live rule; mark endpoints done, alarm on STUCK and on vanished rules."""
    now = time.time() if now is None else float(now)
    gw = gw or gateway(settings)
    stuck_after = float(settings.rucio.stuck_alarm_after)
    run = PollRun()
    blocks = outputs.live_rule_blocks(catalog, FINAL)
    for block in blocks:
        run.blocks += 1
        if any(r["state"] == "pending" for r in outputs.rule_rows(catalog, block)):
            try:
                before = sum(1 for r in outputs.rule_rows(catalog, block) if r["state"] == "pending")
                sync_block(catalog, settings, block, gw=gw)
                run.created += before
            except RucioRefused as exc:
                run.refused.append(f"{block}: {exc}")
        for row in outputs.rule_rows(catalog, block):
            if row["state"] in FINAL or row["rule_id"] is None:
                continue
            _poll_rule(catalog, settings, gw, row, now, stuck_after, run)
    return run


def _poll_rule(
    catalog: Catalog,
    settings: Any,
    gw: RucioGateway,
    row: Mapping[str, Any],
    now: float,
    stuck_after: float,
    run: PollRun,
) -> None:
    info = gw.rule(row["rule_id"])
    run.checked += 1
    if info is None:
        outputs.set_rule(
            catalog,
            row,
            action="rule-missing",
            state="missing",
            checked_at=now,
            now=now,
            error="rule no longer in Rucio",
        )
        raise_alarm(
            catalog,
            _missing_key(row),
            f"Rucio rule {row['rule_id']} ({row['role']} {row['rse']}) of {row['block']} disappeared; "
            f"its copies are no longer confirmed, retention keeps the Tier-0 disk copy",
            severity="critical",
        )
        run.missing.append(f"{row['block']} {row['rse']}")
        run.states["missing"] = run.states.get("missing", 0) + 1
        return
    state = str(info["state"])
    run.states[state] = run.states.get(state, 0) + 1
    if info.get("name") != row["block"] or info.get("rse_expression") != row["rse"]:
        raise_alarm(
            catalog,
            f"t0-rule-mismatch:{row['rule_id']}",
            f"Rucio rule {row['rule_id']} is on {info.get('name')} to {info.get('rse_expression')}, "
            f"the catalog expects {row['block']} to {row['rse']}",
            severity="critical",
        )
        return
    if info.get("expires_at") is not None:
        # deleted by someone (Rucio keeps a deleted rule until its expiry, then the judge-cleaner drops it);
        # our own removal of the Tier-0 disk rule marks the row removed first, so it is not polled
        what = (
            "the Tier-0 disk copy may be reaped before its endpoints are confirmed"
            if row["role"] == policy.T0_DISK
            else "retention keeps the Tier-0 disk copy"
        )
        raise_alarm(
            catalog,
            _missing_key(row),
            f"Rucio rule {row['rule_id']} ({row['role']} {row['rse']}) of {row['block']} is scheduled "
            f"for deletion at {info['expires_at']}; {what}",
            severity="critical",
        )
        run.missing.append(f"{row['block']} {row['rse']}")
        outputs.set_rule(
            catalog,
            row,
            action="rule-expiring" if row["error"] is None else None,
            state=state,
            checked_at=now,
            now=now,
            error=f"scheduled for deletion at {info['expires_at']}",
        )
        return
    changed = state != row["state"]
    outputs.set_rule(
        catalog,
        row,
        action="rule-state" if changed else None,
        state=state,
        checked_at=now,
        now=now,
        error=(info.get("error") or None),
    )
    if row["error"] and str(row["error"]).startswith("scheduled for deletion"):
        clear_alarm(catalog, _missing_key(row))
    since = now if changed else float(row["state_since"])
    if state in ("STUCK", "SUSPENDED") and now - since >= stuck_after:
        raise_alarm(
            catalog,
            _stuck_key(row),
            f"Rucio rule {row['rule_id']} of {row['block']} to {row['rse']} is {state} since "
            f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(since))}: {info.get('error') or 'no error'}",
            severity="warning",
        )
        run.stuck.append(f"{row['block']} {row['rse']}")
    elif state in HEALTHY:
        clear_alarm(catalog, _stuck_key(row))
    if state == "OK" and row["role"] != policy.T0_DISK:
        for path in outputs.block_paths(catalog, row["block"]):
            if outputs.mark_endpoint_done(catalog, path, row["rse"]):
                run.endpoints_done += 1


def register_output(
    ctx: Context, dataset: str, files: list[dict[str, Any]], needed_by: int = 0, block: str | None = None
) -> Outcome:
    """The register_output task's step: ``register``, a refusal returned (and logged) instead of raised."""
    try:
        result = register(ctx.catalog, ctx.settings, dataset, files, needed_by=needed_by, block=block)
    except PlacementRefused as exc:
        ctx.log("t0-register-refused", logging.ERROR, dataset=dataset, reason=str(exc))
        return Outcome({"refused": str(exc), "dataset": dataset})
    except RucioRefused as exc:  # recorded on the rule rows, alarm raised; the poll retries later
        ctx.log("t0-register-rucio-refused", logging.ERROR, dataset=dataset, reason=str(exc))
        return Outcome({"rucio_refused": str(exc), "dataset": dataset})
    ctx.log(
        "t0-register",
        dataset=dataset,
        block=result["block"],
        files=result["files"],
        site=result["placement"]["site"],
        notice=result.get("notice"),
    )
    return Outcome(result)


def poll_rules(ctx: Context, now: float | None = None, force: bool = False) -> Outcome:
    """The beat's rule poll (one at a time; skipped while ``rucio.url`` is unset)."""
    settings = ctx.settings
    if not settings.rucio.url and not force:
        return Outcome({"skipped": "rucio.url is not set"})
    try:
        with ctx.lease("t0-rules-poll", seconds=settings.tasks.time_limit):
            run = poll(ctx.catalog, settings, now=now)
    except LeaseBusy:
        return Outcome({"skipped": "another rule poll is running"})
    ctx.log("t0-rules-poll", **run.as_dict())
    return Outcome(run.as_dict())


# ---------------------------------------------------------------------------------------------- release


def check_release(
    gw: RucioGateway, rows: Sequence[Mapping[str, Any]], t0_disk: str
) -> tuple[str | None, str]:
    """The guard before removing a block's Tier-0 disk rule: (rule id, "") when every endpoint rule exists
    and is OK and the Tier-0 rule is ours, on this block, to the Tier-0 disk; else (None, reason)."""
    t0 = [r for r in rows if r["role"] == policy.T0_DISK]
    others = [r for r in rows if r["role"] != policy.T0_DISK]
    if len(t0) != 1 or not t0[0]["rule_id"]:
        return None, "no recorded Tier-0 disk rule"
    if not others:
        return None, "no endpoint rules"
    for r in others:
        if not r["rule_id"]:
            return None, f"endpoint rule to {r['rse']} not created yet"
        info = gw.rule(r["rule_id"])
        if info is None:
            return None, f"endpoint rule {r['rule_id']} to {r['rse']} is no longer in Rucio"
        if info["state"] != "OK":
            return None, f"endpoint rule {r['rule_id']} to {r['rse']} is {info['state']}, not OK"
        if info.get("expires_at") is not None:
            return (
                None,
                f"endpoint rule {r['rule_id']} to {r['rse']} is scheduled for deletion ({info['expires_at']})",
            )
        if info.get("name") != r["block"] or info.get("rse_expression") != r["rse"]:
            return None, f"endpoint rule {r['rule_id']} is not on {r['block']} to {r['rse']}"
    row = t0[0]
    info = gw.rule(row["rule_id"])
    if info is None:
        return None, f"Tier-0 disk rule {row['rule_id']} is no longer in Rucio"
    if (
        info.get("rse_expression") != t0_disk
        or row["rse"] != t0_disk
        or info.get("name") != row["block"]
        or info.get("account") != gw.account
    ):
        return None, (
            f"rule {row['rule_id']} is {info.get('account')}'s rule on {info.get('name')} to "
            f"{info.get('rse_expression')}, not our {t0_disk} rule on {row['block']}: not touched"
        )
    return row["rule_id"], ""


@dataclass
class ReleaseRun:
    dry_run: bool
    released: list[str] = field(default_factory=list)  # blocks whose Tier-0 disk rule was removed
    files: int = 0
    refused: list[str] = field(default_factory=list)
    lost_race: list[str] = field(default_factory=list)
    kept_partial: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "released": self.released,
            "files": self.files,
            "refused": self.refused,
            "lost_race": self.lost_race,
            "kept_partial": self.kept_partial,
        }


def release(
    catalog: Catalog,
    settings: Any,
    items: list[dict[str, Any]],
    rows: Mapping[str, Any],
    *,
    dry_run: bool,
    gw: RucioGateway | None = None,
) -> ReleaseRun:
    """Remove the Tier-0 disk rule of every block whose files the retention plan releases (``items``,
    each with ``path``), after ``check_release``; rows go present -> deleting -> released."""
    run = ReleaseRun(dry_run=dry_run)
    subs = _subscriptions(settings)
    by_block: dict[str, list[Mapping[str, Any]]] = {}
    for item in items:
        row = rows[item["path"]]
        by_block.setdefault(row["block"], []).append(row)
    if not by_block:
        return run
    gw = gw or gateway(settings)
    for block, due in sorted(by_block.items()):
        live = outputs.count_live_files(catalog, block)
        if live != len(due):
            run.kept_partial.append(f"{block}: {live - len(due)} of {live} files still kept")
            continue
        rule_rows = outputs.rule_rows(catalog, block)
        t0_row = next((r for r in rule_rows if r["role"] == policy.T0_DISK), None)
        resuming = all(r["state"] == "deleting" for r in due)
        if (
            resuming
            and t0_row is not None
            and t0_row["rule_id"]
            and (t0_row["state"] in FINAL or gw.rule(t0_row["rule_id"]) is None)
        ):
            # a run stopped after removing the rule (since purged by Rucio): only the bookkeeping is left
            if t0_row["state"] not in FINAL:
                outputs.set_rule(
                    catalog, t0_row, action="remove-rule", state="removed", detail="already gone in Rucio"
                )
            _finish(catalog, due, block)
            run.released.append(block)
            run.files += len(due)
            continue
        rule_id, reason = check_release(gw, rule_rows, subs.t0_disk)
        if rule_id is None:
            run.refused.append(f"{block}: {reason}")
            continue
        assert t0_row is not None
        if dry_run:
            with catalog.begin() as conn:
                catalog.audit(
                    conn,
                    entity=ENTITY,
                    entity_id=int(t0_row["id"]),
                    action="dry-run-remove-rule",
                    path=block,
                    rule=outputs.RETENTION_RULE,
                    detail=f"{subs.t0_disk} rule {rule_id}",
                )
            run.released.append(block)
            run.files += len(due)
            continue
        taken = [r for r in due if outputs.take(catalog, r, outputs.RETENTION_RULE)]
        if len(taken) != len(due):
            for r in taken:
                if r["state"] == "present":
                    outputs.set_state(catalog, int(r["id"]), "present", detail="block release lost a race")
            run.lost_race.append(block)
            continue
        gw.delete_rule(rule_id)
        outputs.set_rule(
            catalog, t0_row, action="remove-rule", state="removed", detail=f"{subs.t0_disk} rule {rule_id}"
        )
        _finish(catalog, due, block)
        run.released.append(block)
        run.files += len(due)
    return run


def _finish(catalog: Catalog, due: list[Mapping[str, Any]], block: str) -> None:
    outputs.mark_released(catalog, [int(r["id"]) for r in due], block)


# ------------------------------------------------------------------------------------------------ views


def listing(
    catalog: Catalog, *, dataset: str | None = None, state: str | None = None, limit: int = 200
) -> list[dict[str, Any]]:
    """Blocks with their files' states, rules and retention facts, newest first (``t0dqm t0 output ls``)."""
    return outputs.block_listing(catalog, dataset=dataset, state=state, limit=limit)
