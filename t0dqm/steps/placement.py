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

import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from t0dqm import storage
from t0dqm.catalog.alarms import clear_alarm, raise_alarm
from t0dqm.catalog.db import Catalog, quarantine, t0_outputs, t0_rules
from t0dqm.clients.rucio import RucioGateway, RucioRefused, gateway
from t0dqm.formats import datasets
from t0dqm.policies import placement as policy
from t0dqm.steps import retention as outputs

ENTITY = "t0rule"
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
    return policy.from_config(settings["subscriptions"])


def _quarantine(catalog: Catalog, name: str, reason: str) -> None:
    with catalog.begin() as conn:
        conn.execute(insert(quarantine).values(path=name, name=name[:512], step=STEP, reason=reason,
                                               created_at=time.time()))


def register(catalog: Catalog, settings: Any, dataset: str, files: Iterable[Mapping[str, Any]], *,
             needed_by: int = 0, block: str | None = None, created_at: float | None = None,
             gw: RucioGateway | None = None) -> dict[str, Any]:
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
            row = conn.execute(select(t0_outputs.c.block, t0_outputs.c.size, t0_outputs.c.adler32)
                               .where(t0_outputs.c.path == f.path)).first()
            if row is not None and (row.block != block or row.size != f.size or row.adler32 != f.adler32):
                conflicts.append(f"{f.path} is already registered (block {row.block}, size {row.size}, "
                                 f"adler32 {row.adler32})")
        if not conflicts:
            for f in parsed:
                outputs.record_output(catalog, f.path, f.size, f.adler32, required, created_at, dataset=dataset,
                                      block=block, lfn=f.lfn, conn=conn)
            for e in endpoints:
                _add_rule_row(catalog, conn, block, dataset, e, now)
    if conflicts:
        _quarantine(catalog, dataset, "; ".join(conflicts))
        raise PlacementRefused("; ".join(conflicts))
    if needed_by:
        for f in parsed:
            outputs.set_needed_by(catalog, f.path, needed_by)
    result: dict[str, Any] = {"dataset": dataset, "block": block, "files": len(parsed),
                              "bytes": sum(f.size for f in parsed), "placement": placement.as_dict(),
                              "endpoints": [e.as_dict() for e in endpoints], "needed_by": needed_by}
    if not placement.known:
        notice = (f"new primary dataset {policy.base_pd(name.pd)}: subscribed to the default site "
                  f"{placement.site}; add it to subscriptions.sites to place it elsewhere")
        result["notice"] = notice
        raise_alarm(catalog, f"t0-new-pd:{policy.base_pd(name.pd)}", notice, severity="info")
    if settings["rucio"]["url"]:
        result["rules"] = sync_block(catalog, settings, block, gw=gw)
    else:
        result["rules"] = []
        result["rucio"] = "not configured: rules not created; endpoints are marked done by hand"
    return result


def _add_rule_row(catalog: Catalog, conn: Any, block: str, dataset: str, e: policy.Endpoint, now: float) -> None:
    exists = conn.execute(select(t0_rules.c.id).where(t0_rules.c.block == block, t0_rules.c.rse == e.rse)).first()
    if exists is not None:
        return
    try:
        with conn.begin_nested():
            row_id = conn.execute(insert(t0_rules).values(
                block=block, dataset=dataset, rse=e.rse, role=e.role, rule_id=None, state="pending",
                state_since=now, created_at=now, updated_at=now)).inserted_primary_key[0]
    except IntegrityError:  # recorded concurrently
        return
    catalog.audit(conn, entity=ENTITY, entity_id=int(row_id), action="rule-planned", to_state="pending",
                  path=block, detail=f"{e.role} {e.rse}")


def _activity(settings: Any, role: str) -> str:
    cfg = settings["rucio"]
    return cfg["tape_activity"] if role == policy.TAPE else cfg["activity"]


def _block_files(catalog: Catalog, block: str) -> list[dict[str, Any]]:
    with catalog.read() as conn:
        rows = conn.execute(select(t0_outputs.c.lfn, t0_outputs.c.size, t0_outputs.c.adler32)
                            .where(t0_outputs.c.block == block).order_by(t0_outputs.c.lfn)).all()
    return [{"name": r.lfn, "bytes": int(r.size), "adler32": r.adler32} for r in rows]


def _rule_rows(catalog: Catalog, block: str) -> list[dict[str, Any]]:
    with catalog.read() as conn:
        return [dict(r) for r in conn.execute(select(t0_rules).where(t0_rules.c.block == block)
                                              .order_by(t0_rules.c.role, t0_rules.c.rse)).mappings()]


def _set_rule(catalog: Catalog, row: Mapping[str, Any], *, action: str | None = None, detail: str | None = None,
              now: float | None = None, **values: Any) -> None:
    now = time.time() if now is None else now
    if "state" in values and values["state"] != row["state"]:
        values.setdefault("state_since", now)
    with catalog.begin() as conn:
        conn.execute(update(t0_rules).where(t0_rules.c.id == row["id"]).values(updated_at=now, **values))
        if action:
            catalog.audit(conn, entity=ENTITY, entity_id=int(row["id"]), action=action, from_state=row["state"],
                          to_state=values.get("state", row["state"]), path=row["block"],
                          detail=detail or f"{row['role']} {row['rse']} rule {values.get('rule_id', row['rule_id'])}")


def sync_block(catalog: Catalog, settings: Any, block: str, *, gw: RucioGateway | None = None) -> list[dict]:
    """Create in Rucio what the block's pending rule rows lack; returns the rule rows after."""
    rows = _rule_rows(catalog, block)
    pending = [r for r in rows if r["state"] == "pending"]
    if pending:
        gw = gw or gateway(settings)
        files = _block_files(catalog, block)
        subs = _subscriptions(settings)
        try:
            gw.ensure_block(rows[0]["dataset"], block, files, subs.t0_disk)
            for row in pending:
                rule_id, created = gw.add_rule(block, row["rse"], _activity(settings, row["role"]),
                                               int(settings["rucio"]["priority"]))
                info = gw.rule(rule_id)
                state = str(info["state"]) if info else "REPLICATING"
                _set_rule(catalog, row, action="rule-create" if created else "rule-reuse", rule_id=rule_id,
                          state=state, checked_at=time.time(), error=None)
        except RucioRefused as exc:
            for row in pending:
                _set_rule(catalog, row, error=str(exc)[:2000])
            raise_alarm(catalog, f"t0-rule-refused:{block}", f"Rucio refused the rules of {block}: {exc}",
                        severity="critical")
            raise
        clear_alarm(catalog, f"t0-rule-refused:{block}")
        rows = _rule_rows(catalog, block)
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
        return {"blocks": self.blocks, "checked": self.checked, "created": self.created,
                "endpoints_done": self.endpoints_done, "stuck": self.stuck, "missing": self.missing,
                "refused": self.refused, "states": dict(sorted(self.states.items()))}


def _stuck_key(row: Mapping[str, Any]) -> str:
    return f"t0-rule-stuck:{row['block']}:{row['rse']}"


def _missing_key(row: Mapping[str, Any]) -> str:
    return f"t0-rule-missing:{row['block']}:{row['rse']}"


def poll(catalog: Catalog, settings: Any, *, now: float | None = None, gw: RucioGateway | None = None) -> PollRun:
    """Read the state of every live rule; mark endpoints done, alarm on STUCK and on vanished rules."""
    now = time.time() if now is None else float(now)
    gw = gw or gateway(settings)
    stuck_after = float(settings["rucio"]["stuck_alarm_after"])
    run = PollRun()
    with catalog.read() as conn:
        blocks = [b for (b,) in conn.execute(select(t0_rules.c.block).where(t0_rules.c.state.not_in(FINAL))
                                             .distinct().order_by(t0_rules.c.block))]
    for block in blocks:
        run.blocks += 1
        if any(r["state"] == "pending" for r in _rule_rows(catalog, block)):
            try:
                before = sum(1 for r in _rule_rows(catalog, block) if r["state"] == "pending")
                sync_block(catalog, settings, block, gw=gw)
                run.created += before
            except RucioRefused as exc:
                run.refused.append(f"{block}: {exc}")
        for row in _rule_rows(catalog, block):
            if row["state"] in FINAL or row["rule_id"] is None:
                continue
            _poll_rule(catalog, settings, gw, row, now, stuck_after, run)
    return run


def _poll_rule(catalog: Catalog, settings: Any, gw: RucioGateway, row: Mapping[str, Any], now: float,
               stuck_after: float, run: PollRun) -> None:
    info = gw.rule(row["rule_id"])
    run.checked += 1
    if info is None:
        _set_rule(catalog, row, action="rule-missing", state="missing", checked_at=now, now=now,
                  error="rule no longer in Rucio")
        raise_alarm(catalog, _missing_key(row),
                    f"Rucio rule {row['rule_id']} ({row['role']} {row['rse']}) of {row['block']} disappeared; "
                    f"its copies are no longer confirmed, retention keeps the Tier-0 disk copy",
                    severity="critical")
        run.missing.append(f"{row['block']} {row['rse']}")
        run.states["missing"] = run.states.get("missing", 0) + 1
        return
    state = str(info["state"])
    run.states[state] = run.states.get(state, 0) + 1
    if info.get("name") != row["block"] or info.get("rse_expression") != row["rse"]:
        raise_alarm(catalog, f"t0-rule-mismatch:{row['rule_id']}",
                    f"Rucio rule {row['rule_id']} is on {info.get('name')} to {info.get('rse_expression')}, "
                    f"the catalog expects {row['block']} to {row['rse']}", severity="critical")
        return
    if info.get("expires_at") is not None:
        # deleted by someone (Rucio keeps a deleted rule until its expiry, then the judge-cleaner drops it);
        # our own removal of the Tier-0 disk rule marks the row removed first, so it is not polled
        what = ("the Tier-0 disk copy may be reaped before its endpoints are confirmed"
                if row["role"] == policy.T0_DISK else "retention keeps the Tier-0 disk copy")
        raise_alarm(catalog, _missing_key(row),
                    f"Rucio rule {row['rule_id']} ({row['role']} {row['rse']}) of {row['block']} is scheduled "
                    f"for deletion at {info['expires_at']}; {what}", severity="critical")
        run.missing.append(f"{row['block']} {row['rse']}")
        _set_rule(catalog, row, action="rule-expiring" if row["error"] is None else None, state=state,
                  checked_at=now, now=now, error=f"scheduled for deletion at {info['expires_at']}")
        return
    changed = state != row["state"]
    _set_rule(catalog, row, action="rule-state" if changed else None, state=state, checked_at=now, now=now,
              error=(info.get("error") or None))
    if row["error"] and str(row["error"]).startswith("scheduled for deletion"):
        clear_alarm(catalog, _missing_key(row))
    since = now if changed else float(row["state_since"])
    if state in ("STUCK", "SUSPENDED") and now - since >= stuck_after:
        raise_alarm(catalog, _stuck_key(row),
                    f"Rucio rule {row['rule_id']} of {row['block']} to {row['rse']} is {state} since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime(since))}: {info.get('error') or 'no error'}",
                    severity="warning")
        run.stuck.append(f"{row['block']} {row['rse']}")
    elif state in HEALTHY:
        clear_alarm(catalog, _stuck_key(row))
    if state == "OK" and row["role"] != policy.T0_DISK:
        with catalog.read() as conn:
            paths = [p for (p,) in conn.execute(select(t0_outputs.c.path).where(t0_outputs.c.block == row["block"]))]
        for path in paths:
            if outputs.mark_endpoint_done(catalog, path, row["rse"]):
                run.endpoints_done += 1


# ---------------------------------------------------------------------------------------------- release

def check_release(gw: RucioGateway, rows: list[Mapping[str, Any]], t0_disk: str) -> tuple[str | None, str]:
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
            return None, f"endpoint rule {r['rule_id']} to {r['rse']} is scheduled for deletion ({info['expires_at']})"
        if info.get("name") != r["block"] or info.get("rse_expression") != r["rse"]:
            return None, f"endpoint rule {r['rule_id']} is not on {r['block']} to {r['rse']}"
    row = t0[0]
    info = gw.rule(row["rule_id"])
    if info is None:
        return None, f"Tier-0 disk rule {row['rule_id']} is no longer in Rucio"
    if (info.get("rse_expression") != t0_disk or row["rse"] != t0_disk or info.get("name") != row["block"]
            or info.get("account") != gw.account):
        return None, (f"rule {row['rule_id']} is {info.get('account')}'s rule on {info.get('name')} to "
                      f"{info.get('rse_expression')}, not our {t0_disk} rule on {row['block']}: not touched")
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
        return {"dry_run": self.dry_run, "released": self.released, "files": self.files, "refused": self.refused,
                "lost_race": self.lost_race, "kept_partial": self.kept_partial}


def release(catalog: Catalog, settings: Any, items: list[dict[str, Any]], rows: Mapping[str, Any], *,
            dry_run: bool, gw: RucioGateway | None = None) -> ReleaseRun:
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
        with catalog.read() as conn:
            live = conn.execute(select(t0_outputs.c.id).where(
                t0_outputs.c.block == block, t0_outputs.c.state.in_(("present", "deleting")))).all()
        if len(live) != len(due):
            run.kept_partial.append(f"{block}: {len(live) - len(due)} of {len(live)} files still kept")
            continue
        rule_rows = _rule_rows(catalog, block)
        t0_row = next((r for r in rule_rows if r["role"] == policy.T0_DISK), None)
        resuming = all(r["state"] == "deleting" for r in due)
        if resuming and t0_row is not None and t0_row["rule_id"] and (
                t0_row["state"] in FINAL or gw.rule(t0_row["rule_id"]) is None):
            # a run stopped after removing the rule (since purged by Rucio): only the bookkeeping is left
            if t0_row["state"] not in FINAL:
                _set_rule(catalog, t0_row, action="remove-rule", state="removed", detail="already gone in Rucio")
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
                catalog.audit(conn, entity=ENTITY, entity_id=int(t0_row["id"]), action="dry-run-remove-rule",
                              path=block, rule=outputs.RULE, detail=f"{subs.t0_disk} rule {rule_id}")
            run.released.append(block)
            run.files += len(due)
            continue
        taken = [r for r in due if outputs._take(catalog, r)]
        if len(taken) != len(due):
            for r in taken:
                if r["state"] == "present":
                    outputs._set_state(catalog, int(r["id"]), "present", detail="block release lost a race")
            run.lost_race.append(block)
            continue
        gw.delete_rule(rule_id)
        _set_rule(catalog, t0_row, action="remove-rule", state="removed", detail=f"{subs.t0_disk} rule {rule_id}")
        _finish(catalog, due, block)
        run.released.append(block)
        run.files += len(due)
    return run


def _finish(catalog: Catalog, due: list[Mapping[str, Any]], block: str) -> None:
    with catalog.begin() as conn:
        for r in due:
            catalog.transition(conn, outputs.ENTITY, int(r["id"]), ("present", "deleting"), "released",
                               detail=f"Tier-0 disk rule of {block} removed")


# ------------------------------------------------------------------------------------------------ views

def listing(catalog: Catalog, *, dataset: str | None = None, state: str | None = None,
            limit: int = 200) -> list[dict[str, Any]]:
    """Blocks with their files' states, rules and retention facts, newest first (``t0dqm t0 output ls``)."""
    q = select(t0_outputs).where(t0_outputs.c.block.is_not(None))
    if dataset:
        q = q.where(t0_outputs.c.dataset == dataset)
    with catalog.read() as conn:
        files = list(conn.execute(q.order_by(t0_outputs.c.created_at.desc(), t0_outputs.c.path)).mappings())
        blocks: dict[str, dict[str, Any]] = {}
        for f in files:
            b = blocks.setdefault(f["block"], {"block": f["block"], "dataset": f["dataset"], "files": 0, "bytes": 0,
                                               "created_at": f["created_at"], "states": {}, "needed_by": 0,
                                               "endpoints_required": set(), "endpoints_done": None})
            b["files"] += 1
            b["bytes"] += int(f["size"])
            b["states"][f["state"]] = b["states"].get(f["state"], 0) + 1
            b["needed_by"] = max(b["needed_by"], int(f["needed_by"] or 0))
            b["endpoints_required"] |= outputs._load(f["endpoints_required"])
            done = outputs._load(f["endpoints_done"])
            b["endpoints_done"] = done if b["endpoints_done"] is None else (b["endpoints_done"] & done)
            b["created_at"] = min(b["created_at"], f["created_at"])
        out = []
        for b in blocks.values():
            if state and state not in b["states"]:
                continue
            rules = conn.execute(select(t0_rules).where(t0_rules.c.block == b["block"])
                                 .order_by(t0_rules.c.role, t0_rules.c.rse)).mappings()
            b["rules"] = [{k: r[k] for k in ("rse", "role", "rule_id", "state", "state_since", "error")}
                          for r in rules]
            b["endpoints_required"] = sorted(b["endpoints_required"])
            b["endpoints_done"] = sorted(b["endpoints_done"] or ())
            out.append(b)
            if len(out) >= limit:
                break
    return out
