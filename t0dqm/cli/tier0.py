"""CLI commands for Tier-0: ``t0dqm streamer``, ``t0dqm sm``, ``t0dqm t0``."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

__all__ = ["streamer", "sm", "t0"]


def _settings() -> Any:
    from t0dqm import config

    return config.get()


def _echo_json(obj: object) -> None:
    click.echo(json.dumps(obj, sort_keys=False))


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


# ----------------------------------------------------------------------------------------------- streamer

@click.group()
def streamer() -> None:
    """Tier-0 streamer cleanup from the EOS dump (quota, run_stream_done, age rules)."""


def _plan_options(f: Any) -> Any:
    options = [
        click.option("--dump", "dump", type=click.Path(dir_okay=False), default=None,
                     help="EOS dump eos_files.txt.gz (default: config streamer.dump)."),
        click.option("--quota", "quota", type=int, default=None,
                     help="Quota in bytes (default: config streamer.quota_bytes, 750e12)."),
        click.option("--done-url", default=None,
                     help="run_stream_done URL (default: config streamer.done_url; none: no unit is done)."),
        click.option("--skip-runs", type=click.Path(dir_okay=False, exists=True), default=None,
                     help="File with one run number a line: never deleted."),
        click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now)."),
        click.option("--max-dump-age", type=float, default=None,
                     help="Refuse a dump older than this many seconds (default: config, 48 h)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _make_plan(dump: str | None, quota: int | None, done_url: str | None, skip_runs: str | None,
               now: float | None, max_dump_age: float | None) -> Any:
    from t0dqm.formats import eosdump
    from t0dqm.steps import streamer as cleanup

    cfg = _settings()["streamer"]
    dump = dump or cfg["dump"]
    if not dump:
        raise click.UsageError("no dump: give --dump or set streamer.dump in the configuration")
    try:
        skip = cleanup.read_skip_runs(skip_runs or cfg["skip_runs_file"] or None)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"skip-runs: {exc}") from None
    try:
        return cleanup.make_plan(
            dump, now=now, quota_bytes=cfg["quota_bytes"] if quota is None else quota,
            done_url=done_url if done_url is not None else (cfg["done_url"] or None), skip_runs=skip,
            max_dump_age=cfg["max_dump_age"] if max_dump_age is None else max_dump_age,
            transfertest_days=cfg["transfertest_days"], age_days=cfg["age_days"],
            http_timeout=_settings().timeout("http"))
    except eosdump.DumpError as exc:
        raise click.ClickException(f"dump refused, nothing deleted: {exc}") from None


def _print_plan(result: Any, as_json: bool, extra: dict[str, object] | None = None) -> None:
    plan = result.plan
    s = result.summary
    click.echo(f"dump {result.dump}: {s.lines} lines, {s.malformed} malformed, {s.area_files} streamer "
               f"files in {len(s.units)} units", err=True)
    if as_json:
        out = plan.as_dict()
        if extra:
            out.update(extra)
        _echo_json(out)
        return
    click.echo(f"total {_fmt_bytes(plan.total_bytes)} ({plan.total_bytes} B), quota "
               f"{_fmt_bytes(plan.quota_bytes)}, after {_fmt_bytes(plan.after_bytes)} ({plan.after_bytes} B)")
    click.echo(f"{'rule':<17} {'label':<23} {'stream':<24} {'run':>8} {'files':>7} {'bytes':>16}")
    for d in plan.delete:
        click.echo(f"{d.rule:<17} {d.label:<23} {d.stream:<24} {d.run:>8} {d.files:>7} {d.bytes:>16}")
    click.echo(f"{len(plan.delete)} units to delete, {sum(d.files for d in plan.delete)} files")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {json.dumps(value)}")


@streamer.command("plan")
@_plan_options
def streamer_plan(dump: str | None, quota: int | None, done_url: str | None, skip_runs: str | None,
                  now: float | None, max_dump_age: float | None, as_json: bool) -> None:
    """Print what the streamer cleanup would delete (nothing is deleted)."""
    result = _make_plan(dump, quota, done_url, skip_runs, now, max_dump_age)
    _print_plan(result, as_json)


@streamer.command("clean")
@_plan_options
@click.option("--base", default=None,
              help="Prefix for targets: local dir or root://host:port[//path]; the part of each dump path "
                   "from /store/t0streamer/ on is appended (default: config streamer.base, else the dump "
                   "path itself).")
@click.option("--execute", is_flag=True, help="Really delete (through the guarded deleter, audited).")
def streamer_clean(dump: str | None, quota: int | None, done_url: str | None, skip_runs: str | None,
                   now: float | None, max_dump_age: float | None, as_json: bool, base: str | None,
                   execute: bool) -> None:
    """Print the plan; with --execute delete its files through the guarded deleter."""
    from t0dqm.formats import eosdump
    from t0dqm.steps import streamer as cleanup

    result = _make_plan(dump, quota, done_url, skip_runs, now, max_dump_age)
    if not execute:
        _print_plan(result, as_json)
        click.echo("plan only: nothing deleted (give --execute to delete)", err=True)
        return
    try:
        targets = cleanup.list_targets(result, base or _settings()["streamer"].get("base") or None)
    except (cleanup.CleanupError, eosdump.DumpError) as exc:
        _print_plan(result, as_json)
        raise click.ClickException(str(exc)) from None
    ex = cleanup.execute(targets, dry_run=False)
    _print_plan(result, as_json, {"execution": ex.as_dict()})
    if ex.refused or ex.errors:
        for line in ex.refused + ex.errors:
            click.echo(f"not deleted: {line}", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------------------------------- sm

@click.group()
def sm() -> None:
    """Storage Manager (P5) cleanup policies."""


@sm.command("plan")
@click.option("--listing", required=True, type=click.Path(dir_okay=False, exists=True),
              help='JSON lines {"path","run","size","mtime","checked","repacked","tier0_off"}.')
@click.option("--occupancy", "occ", type=float, default=None, help="Occupancy fraction 0..1.")
@click.option("--area", type=click.Path(exists=True), default=None,
              help="Read the occupancy of this area with statvfs instead of --occupancy.")
@click.option("--mode", type=click.Choice(["occupancy", "age"]), default="occupancy", show_default=True)
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sm_plan(listing: str, occ: float | None, area: str | None, mode: str, now: float | None,
            as_json: bool) -> None:
    """Which P5 files the Storage Manager cleanup deletes (nothing is deleted)."""
    from t0dqm.policies import storage_manager
    from t0dqm.steps.sm import ListingError, occupancy, read_listing

    if occ is None:
        if area is None:
            raise click.UsageError("give --occupancy FRACTION or --area DIR")
        occ = occupancy(area)
    if not 0.0 <= occ <= 1.0:
        raise click.BadParameter("must be a fraction between 0 and 1", param_hint="--occupancy")
    try:
        files = read_listing(listing)
    except ListingError as exc:
        raise click.ClickException(str(exc)) from None
    plan = storage_manager.plan(files, occ, time.time() if now is None else now, mode)
    if plan.alarm:
        n = sum(1 for d in plan.delete if d.unchecked)
        click.echo(f"ALARM: {n} files not yet checked by Tier-0 are deleted by the age cleanup", err=True)
    if as_json:
        _echo_json(plan.as_dict())
        return
    click.echo(f"occupancy {occ:.1%}, mode {mode}: {len(plan.delete)} files, {plan.bytes} bytes")
    for d in plan.delete:
        click.echo(f"{d.rule:<10} {'UNCHECKED ' if d.unchecked else ''}{d.path}")


@sm.command("occupancy")
@click.argument("path", type=click.Path(exists=True))
def sm_occupancy(path: str) -> None:
    """Print the occupancy fraction of the filesystem holding PATH (statvfs)."""
    from t0dqm.steps.sm import occupancy

    click.echo(f"{occupancy(path):.6f}")


# ----------------------------------------------------------------------------------------------------- t0

@click.group()
def t0() -> None:
    """Tier-0 conventions: size limits, dataset names, placement (subscriptions, outputs), disk retention."""


@t0.command("size-check")
@click.option("--kind", type=click.Choice(["raw", "streamer"]), required=True)
@click.option("--soft-gib", type=float, default=16.0, show_default=True, help="RAW soft limit.")
@click.option("--hard-gib", type=float, default=24.0, show_default=True, help="RAW hard limit.")
@click.option("--notify-gib", type=float, default=30.0, show_default=True, help="Streamer notify limit.")
@click.option("--refuse-gib", type=float, default=80.0, show_default=True, help="Streamer refuse limit.")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is JSON.")
@click.argument("size", type=click.IntRange(min=0))
def size_check(kind: str, soft_gib: float, hard_gib: float, notify_gib: float, refuse_gib: float,
               as_json: bool, size: int) -> None:
    """Verdict for a file of SIZE bytes: ok, soft, hard (raw) or ok, notify, refuse (streamer)."""
    from t0dqm.policies import size_limits

    try:
        limits = size_limits.SizeLimits(soft_gib, hard_gib, notify_gib, refuse_gib)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    _echo_json(size_limits.check(kind, size, limits).as_dict())


@t0.command("retention")
@click.option("--execute", is_flag=True, help="Really delete (guarded deleter, audited); default: plan only.")
@click.option("--dry-run", is_flag=True,
              help="Run every guard (the deleter's, Rucio's rule checks) and audit what would go; change nothing.")
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
@click.option("--min-days", type=click.IntRange(min=0), default=None,
              help="Minimum days on the Tier-0 disk (default: config retention.min_days, 7).")
def t0_retention(execute: bool, dry_run: bool, now: float | None, min_days: int | None) -> None:
    """Tier-0 disk retention over the catalog's t0_outputs: print the plan as JSON; --execute deletes.

    With Rucio configured, a placed output goes by removing its block's Tier-0 disk rule (never another
    rule); otherwise the file itself is deleted through the guarded deleter.
    """
    from t0dqm.catalog.db import get_catalog
    from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
    from t0dqm.steps import retention as outputs

    settings = _settings()
    catalog = get_catalog(settings.catalog_url)
    now = time.time() if now is None else now
    min_days = settings["retention"]["min_days"] if min_days is None else min_days
    if not execute and not dry_run:
        run, _rows = outputs.plan(catalog, now, int(min_days))
        _echo_json(run.as_dict())
        click.echo("plan only: nothing deleted (give --dry-run to check the guards, --execute to delete)", err=True)
        return
    try:
        run = outputs.run_retention(catalog, settings, now=now, min_days=min_days, dry_run=not execute)
    except (RucioUnavailable, RucioRefused) as exc:
        raise click.ClickException(f"{exc}; nothing deleted") from None
    _echo_json(run.as_dict())
    problems = run.refused + run.errors + list((run.rucio or {}).get("refused", []))
    if problems:
        for line in problems:
            click.echo(f"not deleted: {line}", err=True)
        sys.exit(1)


@t0.group()
def dataset() -> None:
    """Build or parse Tier-0 dataset names."""


@dataset.command("build")
@click.argument("kind", type=click.Choice(["express", "repack", "promptreco"]))
@click.option("--pd", required=True, help="Primary (or Express) dataset.")
@click.option("--era", required=True, help="Acquisition era.")
@click.option("--version", "version", required=True, type=int, help="Processing version N (vN).")
@click.option("--tier", default=None, help="Data tier (default FEVT / RAW / RECO; ALCARECO with --alca).")
@click.option("--alca", default=None, help="AlcaProducer (ALCARECO datasets).")
def dataset_build(kind: str, pd: str, era: str, version: int, tier: str | None, alca: str | None) -> None:
    """Print the dataset name."""
    from t0dqm.formats import datasets

    try:
        click.echo(datasets.build(kind, pd=pd, era=era, version=version, tier=tier, alca=alca))
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@dataset.command("parse")
@click.argument("name")
def dataset_parse(name: str) -> None:
    """Print {"kind", "pd", "era", "version", "tier", "alca"} of a dataset name."""
    from t0dqm.formats import datasets

    try:
        _echo_json(datasets.parse(name).as_dict())
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


# ------------------------------------------------------------------------------------- subscriptions

@t0.group()
def subscriptions() -> None:
    """Where Tier-0 data goes: PD -> Tier-1 tape site (config table subscriptions)."""


def _subs() -> Any:
    from t0dqm.policies import placement as policy

    return policy.from_config(_settings()["subscriptions"])


@subscriptions.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def subscriptions_show(as_json: bool) -> None:
    """The configured assignment: each PD's site and RSEs, the default site, the Tier-0 disk."""
    from t0dqm.policies import placement as policy

    subs = _subs()
    rows = []
    for pd in sorted(subs.sites):
        _placement, eps = policy.endpoints(subs, pd, "RAW")
        rows.append({"pd": pd, "site": subs.sites[pd], "rses": [e.rse for e in eps if e.role != policy.T0_DISK]})
    out = {"default_site": subs.default_site, "t0_disk": subs.t0_disk, "disk_tiers": sorted(subs.disk_tiers),
           "pds": rows}
    if as_json:
        _echo_json(out)
        return
    click.echo(f"Tier-0 disk {subs.t0_disk} (every output, removed by retention)")
    click.echo(f"new PDs -> {subs.default_site} ({policy.tape_rse(subs.default_site)})")
    if subs.disk_tiers:
        click.echo(f"tiers also on the site's disk: {', '.join(sorted(subs.disk_tiers))}")
    click.echo(f"{'PD':<32} {'site':<16} RSEs (every tier follows RAW)")
    for r in rows:
        click.echo(f"{r['pd']:<32} {r['site']:<16} {', '.join(r['rses'])}")


@subscriptions.command("where")
@click.argument("dataset")
def subscriptions_where(dataset: str) -> None:
    """Where an output of DATASET (/PD/Era-vN/TIER) goes, and why."""
    from t0dqm.formats import datasets
    from t0dqm.policies import placement as policy

    try:
        name = datasets.parse(dataset)
    except datasets.DatasetNameError as exc:
        raise click.ClickException(f"refused: {exc}") from None
    placement, eps = policy.endpoints(_subs(), name.pd, name.tier)
    _echo_json({**placement.as_dict(), "endpoints": [e.as_dict() for e in eps]})


def _catalog_volumes() -> dict[str, int]:
    """RAW bytes per PD registered in the catalog (the default volumes of the plan)."""
    from sqlalchemy import func, select

    from t0dqm.catalog.db import get_catalog, t0_outputs
    from t0dqm.formats import datasets
    from t0dqm.policies.placement import base_pd

    out: dict[str, int] = {}
    with get_catalog(_settings().catalog_url).read() as conn:
        for dataset, size in conn.execute(select(t0_outputs.c.dataset, func.sum(t0_outputs.c.size))
                                          .where(t0_outputs.c.dataset.like("%/RAW"))
                                          .group_by(t0_outputs.c.dataset)):
            try:
                pd = base_pd(datasets.parse(dataset).pd)
            except datasets.DatasetNameError:
                continue
            out[pd] = out.get(pd, 0) + int(size or 0)
    return out


def _read_json(path: str, option: str) -> Any:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{option}: {exc}") from None


def _site_bytes(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for text in values:
        site, sep, number = text.partition("=")
        try:
            out[site] = int(float(number))
        except ValueError:
            raise click.BadParameter(f"{text!r}: expected SITE=BYTES", param_hint="--free") from None
        if not sep:
            raise click.BadParameter(f"{text!r}: expected SITE=BYTES", param_hint="--free")
    return out


@subscriptions.command("plan")
@click.option("--volumes", type=click.Path(dir_okay=False, exists=True), default=None,
              help='JSON {"PD": bytes}: expected volume per PD (default: RAW bytes registered in the catalog).')
@click.option("--free", "free", multiple=True, metavar="SITE=BYTES",
              help="Free tape space of a site (repeat; default: config subscriptions.free_tape).")
@click.option("--min-gain", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Move a PD only when it cuts the imbalance by this fraction of the total volume.")
@click.option("--max-moves", type=click.IntRange(min=0), default=None, help="At most this many moves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def subscriptions_plan(volumes: str | None, free: tuple[str, ...], min_gain: float, max_moves: int | None,
                       as_json: bool) -> None:
    """Propose a redistribution of the PDs in proportion to the sites' free tape (nothing is changed)."""
    from t0dqm.policies import placement as policy

    vols = _read_json(volumes, "--volumes") if volumes else _catalog_volumes()
    free_map = _site_bytes(free) if free else dict(_settings()["subscriptions"]["free_tape"])
    try:
        result = policy.plan(_subs(), vols, free_map, min_gain_fraction=min_gain, max_moves=max_moves)
    except policy.SubscriptionError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        _echo_json({**result.as_dict(), "toml": policy.assignment_toml(result.assignment)})
        return
    click.echo(f"total volume {_fmt_bytes(result.total)}")
    click.echo(f"{'site':<16} {'free':>12} {'share':>6} {'target':>12} {'before':>12} {'after':>12}")
    for row in result.sites:
        click.echo(f"{row.site:<16} {_fmt_bytes(row.free):>12} {row.share:>6.1%} {_fmt_bytes(int(row.target)):>12} "
                   f"{_fmt_bytes(row.before):>12} {_fmt_bytes(row.after):>12}")
    click.echo(f"{len(result.moves)} moves")
    for m in result.moves:
        click.echo(f"  {m.pd}: {m.src} -> {m.dst} ({_fmt_bytes(m.volume)}): {m.reason}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo("\nnew assignment (paste into the configuration; existing rules are not moved):")
    click.echo(policy.assignment_toml(result.assignment), nl=False)


# ------------------------------------------------------------------------------------------- outputs

@t0.group()
def output() -> None:
    """Tier-0 outputs: register (Rucio rules), list, release, poll rule states."""


@output.command("add")
@click.argument("dataset")
@click.argument("files", nargs=-1)
@click.option("--files-json", type=click.Path(dir_okay=False, exists=True), default=None,
              help='JSON list [{"path", "size", "adler32"}] instead of FILES.')
@click.option("--needed-by", type=click.IntRange(min=0), default=0, show_default=True,
              help="Processing jobs that still need the files (retention waits for 0).")
@click.option("--block", default=None, help="Rucio block name DATASET#id (default: derived from the files).")
def output_add(dataset: str, files: tuple[str, ...], files_json: str | None, needed_by: int,
               block: str | None) -> None:
    """Register an output: DATASET and its FILES (local paths or root:// URLs; size and adler32 are read).

    Records the files and creates the Rucio rules (Tier-0 disk + the policy's tape site) when Rucio is
    configured; running it again finds and reuses everything.
    """
    from t0dqm import storage
    from t0dqm.catalog.db import get_catalog
    from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
    from t0dqm.steps import placement

    settings = _settings()
    if files_json:
        items = _read_json(files_json, "--files-json")
    else:
        if not files:
            raise click.UsageError("give FILES or --files-json")
        items = []
        timeout = settings.timeout("io")
        for path in files:
            try:
                st = storage.stat(path, timeout)
                if st is None or st.is_dir:
                    raise click.ClickException(f"{path}: no such file")
                items.append({"path": path, "size": st.size, "adler32": storage.checksum(path, timeout)})
            except storage.StorageError as exc:
                raise click.ClickException(f"{path}: {exc}") from None
    catalog = get_catalog(settings.catalog_url)
    try:
        result = placement.register(catalog, settings, dataset, items, needed_by=needed_by, block=block)
    except placement.PlacementRefused as exc:
        raise click.ClickException(f"refused: {exc}") from None
    except RucioUnavailable as exc:
        raise click.ClickException(f"{exc}; the output is recorded and its rules are created by the next "
                                   f"rule poll (t0dqm t0 output poll)") from None
    except RucioRefused as exc:
        raise click.ClickException(f"Rucio refused the rules: {exc}") from None
    _echo_json(result)
    if result.get("notice"):
        click.echo(f"notice: {result['notice']}", err=True)


@output.command("ls")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--state", default=None, help="Only blocks with files in this state (present, released, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
def output_ls(dataset: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Registered outputs by block: files, states, rules and the retention facts."""
    from t0dqm.catalog.db import get_catalog
    from t0dqm.policies import retention
    from t0dqm.steps import placement

    settings = _settings()
    blocks = placement.listing(get_catalog(settings.catalog_url), dataset=dataset, state=state, limit=limit)
    now = time.time()
    min_days = int(settings["retention"]["min_days"])
    for b in blocks:
        facts = retention.T0Output(name=b["block"], created=b["created_at"],
                                   endpoints=frozenset(b["endpoints_required"]),
                                   transferred_to=frozenset(b["endpoints_done"]),
                                   needed_by_processing=b["needed_by"] > 0)
        b["retention"] = ("released" if set(b["states"]) <= {"released", "deleted"}
                          else retention.decide(facts, now, min_days).reason)
    if as_json:
        _echo_json(blocks)
        return
    for b in blocks:
        states = " ".join(f"{k}={v}" for k, v in sorted(b["states"].items()))
        click.echo(f"{b['block']}  files={b['files']} {_fmt_bytes(b['bytes'])}  {states}  "
                   f"needed_by={b['needed_by']}  retention: {b['retention']}")
        for r in b["rules"]:
            click.echo(f"    {r['role']:<8} {r['rse']:<20} {r['state']:<12} {r['rule_id'] or '-'}"
                       + (f"  ({r['error']})" if r["error"] else ""))
    click.echo(f"{len(blocks)} blocks", err=True)


@output.command("needed")
@click.argument("block")
@click.argument("jobs", type=click.IntRange(min=0))
def output_needed(block: str, jobs: int) -> None:
    """Set how many processing jobs still need the files of BLOCK (0 lets retention act)."""
    from sqlalchemy import select

    from t0dqm.catalog.db import get_catalog, t0_outputs
    from t0dqm.steps import retention as outputs

    catalog = get_catalog(_settings().catalog_url)
    with catalog.read() as conn:
        paths = [p for (p,) in conn.execute(select(t0_outputs.c.path).where(t0_outputs.c.block == block))]
    if not paths:
        raise click.ClickException(f"no output block {block}")
    refused = [p for p in paths if not outputs.set_needed_by(catalog, p, jobs)]
    _echo_json({"block": block, "files": len(paths), "needed_by": jobs, "refused": refused})
    if refused:
        click.echo("retention already started on these files: not marked as needed", err=True)
        sys.exit(1)


@output.command("poll")
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
def output_poll(now: float | None) -> None:
    """Read every live rule's state from Rucio now (what the beat task does): endpoints done, alarms."""
    from t0dqm.catalog.db import get_catalog
    from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
    from t0dqm.steps import placement

    settings = _settings()
    if not settings["rucio"]["url"]:
        raise click.ClickException("no Rucio server configured (rucio.url)")
    try:
        run = placement.poll(get_catalog(settings.catalog_url), settings, now=now)
    except (RucioUnavailable, RucioRefused) as exc:
        raise click.ClickException(str(exc)) from None
    _echo_json(run.as_dict())
