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
    from t0dqm.tier0 import cleanup, eosdump

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
    from t0dqm.tier0 import cleanup, eosdump

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
    from t0dqm.tier0.sm import ListingError, occupancy, read_listing

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
    from t0dqm.tier0.sm import occupancy

    click.echo(f"{occupancy(path):.6f}")


# ----------------------------------------------------------------------------------------------------- t0

@click.group()
def t0() -> None:
    """Tier-0 conventions: size limits, dataset names, disk retention."""


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
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
@click.option("--min-days", type=click.IntRange(min=0), default=None,
              help="Minimum days on the Tier-0 disk (default: config retention.min_days, 7).")
def t0_retention(execute: bool, now: float | None, min_days: int | None) -> None:
    """Tier-0 disk retention over the catalog's t0_outputs: print the plan as JSON; --execute deletes."""
    from t0dqm.catalog import get_catalog
    from t0dqm.tier0 import outputs

    settings = _settings()
    catalog = get_catalog(settings.catalog_url)
    now = time.time() if now is None else now
    min_days = settings["retention"]["min_days"] if min_days is None else min_days
    if not execute:
        run, _rows = outputs.plan(catalog, now, int(min_days))
        _echo_json(run.as_dict())
        click.echo("plan only: nothing deleted (give --execute to delete)", err=True)
        return
    run = outputs.run_retention(catalog, settings, now=now, min_days=min_days, dry_run=False)
    _echo_json(run.as_dict())
    if run.refused or run.errors:
        for line in run.refused + run.errors:
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
    from t0dqm.tier0 import datasets

    try:
        click.echo(datasets.build(kind, pd=pd, era=era, version=version, tier=tier, alca=alca))
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@dataset.command("parse")
@click.argument("name")
def dataset_parse(name: str) -> None:
    """Print {"kind", "pd", "era", "version", "tier", "alca"} of a dataset name."""
    from t0dqm.tier0 import datasets

    try:
        _echo_json(datasets.parse(name).as_dict())
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
