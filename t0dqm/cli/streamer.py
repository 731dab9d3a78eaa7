"""CLI: ``t0dqm streamer plan|clean``, the Tier-0 streamer cleanup from the EOS dump (steps.streamer)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from t0dqm import config
from t0dqm.cli.tier0_output import echo_json, fmt_bytes
from t0dqm.formats import eosdump
from t0dqm.steps import streamer as cleanup

__all__ = ["streamer"]


@click.group()
def streamer() -> None:
    """Tier-0 streamer cleanup from the EOS dump (quota, run_stream_done, age rules)."""


def _plan_options(f: Any) -> Any:
    options = [
        click.option(
            "--dump",
            "dump",
            type=click.Path(dir_okay=False),
            default=None,
            help="EOS dump eos_files.txt.gz (default: config streamer.dump).",
        ),
        click.option(
            "--quota",
            "quota",
            type=int,
            default=None,
            help="Quota in bytes (default: config streamer.quota_bytes, 750e12).",
        ),
        click.option(
            "--done-url",
            default=None,
            help="run_stream_done URL (default: config streamer.done_url; none: no unit is done).",
        ),
        click.option(
            "--skip-runs",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            help="File with one run number a line: never deleted.",
        ),
        click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now)."),
        click.option(
            "--max-dump-age",
            type=float,
            default=None,
            help="Refuse a dump older than this many seconds (default: config, 48 h).",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _make_plan(
    dump: str | None,
    quota: int | None,
    done_url: str | None,
    skip_runs: str | None,
    now: float | None,
    max_dump_age: float | None,
) -> Any:
    cfg = config.get().streamer
    dump = dump or cfg.dump
    if not dump:
        raise click.UsageError("no dump: give --dump or set streamer.dump in the configuration")
    try:
        skip = cleanup.read_skip_runs(skip_runs or cfg.skip_runs_file or None)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"skip-runs: {exc}") from None
    try:
        return cleanup.make_plan(
            dump,
            now=now,
            quota_bytes=cfg.quota_bytes if quota is None else quota,
            done_url=done_url if done_url is not None else (cfg.done_url or None),
            skip_runs=skip,
            max_dump_age=cfg.max_dump_age if max_dump_age is None else max_dump_age,
            # the config allows fractional days; the cutoffs take int(days * DAY) seconds, so a float works
            transfertest_days=cfg.transfertest_days,  # type: ignore[arg-type]
            age_days=cfg.age_days,  # type: ignore[arg-type]
            http_timeout=config.get().timeout("http"),
        )
    except eosdump.DumpError as exc:
        raise click.ClickException(f"dump refused, nothing deleted: {exc}") from None


def _print_plan(result: Any, as_json: bool, extra: dict[str, object] | None = None) -> None:
    plan = result.plan
    s = result.summary
    click.echo(
        f"dump {result.dump}: {s.lines} lines, {s.malformed} malformed, {s.area_files} streamer "
        f"files in {len(s.units)} units",
        err=True,
    )
    if as_json:
        out = plan.as_dict()
        if extra:
            out.update(extra)
        echo_json(out)
        return
    click.echo(
        f"total {fmt_bytes(plan.total_bytes)} ({plan.total_bytes} B), quota "
        f"{fmt_bytes(plan.quota_bytes)}, after {fmt_bytes(plan.after_bytes)} ({plan.after_bytes} B)"
    )
    click.echo(f"{'rule':<17} {'label':<23} {'stream':<24} {'run':>8} {'files':>7} {'bytes':>16}")
    for d in plan.delete:
        click.echo(f"{d.rule:<17} {d.label:<23} {d.stream:<24} {d.run:>8} {d.files:>7} {d.bytes:>16}")
    click.echo(f"{len(plan.delete)} units to delete, {sum(d.files for d in plan.delete)} files")
    for key, value in (extra or {}).items():
        click.echo(f"{key}: {json.dumps(value)}")


@streamer.command("plan")
@_plan_options
def streamer_plan(
    dump: str | None,
    quota: int | None,
    done_url: str | None,
    skip_runs: str | None,
    now: float | None,
    max_dump_age: float | None,
    as_json: bool,
) -> None:
    """Print what the streamer cleanup would delete (nothing is deleted)."""
    result = _make_plan(dump, quota, done_url, skip_runs, now, max_dump_age)
    _print_plan(result, as_json)


@streamer.command("clean")
@_plan_options
@click.option(
    "--base",
    default=None,
    help="Prefix for targets: local dir or root://host:port[//path]; the part of each dump path "
    "from /store/t0streamer/ on is appended (default: config streamer.base, else the dump "
    "path itself).",
)
@click.option("--execute", is_flag=True, help="Really delete (through the guarded deleter, audited).")
def streamer_clean(
    dump: str | None,
    quota: int | None,
    done_url: str | None,
    skip_runs: str | None,
    now: float | None,
    max_dump_age: float | None,
    as_json: bool,
    base: str | None,
    execute: bool,
) -> None:
    """Print the plan; with --execute delete its files through the guarded deleter."""
    result = _make_plan(dump, quota, done_url, skip_runs, now, max_dump_age)
    if not execute:
        _print_plan(result, as_json)
        click.echo("plan only: nothing deleted (give --execute to delete)", err=True)
        return
    try:
        targets = cleanup.list_targets(result, base or config.get().streamer.base or None)
    except (cleanup.CleanupError, eosdump.DumpError) as exc:
        _print_plan(result, as_json)
        raise click.ClickException(str(exc)) from None
    ex = cleanup.execute(targets, dry_run=False)
    _print_plan(result, as_json, {"execution": ex.as_dict()})
    if ex.refused or ex.errors:
        for line in ex.refused + ex.errors:
            click.echo(f"not deleted: {line}", err=True)
        sys.exit(1)
