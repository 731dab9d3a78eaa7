"""CLI: ``t0dqm sm plan|occupancy``, the Storage Manager (P5) cleanup policies (t0dqm.steps.sm)."""

from __future__ import annotations

import time

import click

from t0dqm.cli.tier0_output import echo_json
from t0dqm.policies import storage_manager
from t0dqm.steps.sm import ListingError, occupancy, read_listing

__all__ = ["sm"]


@click.group()
def sm() -> None:
    """Storage Manager (P5) cleanup policies."""


@sm.command("plan")
@click.option(
    "--listing",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help='JSON lines {"path","run","size","mtime","checked","repacked","tier0_off"}.',
)
@click.option("--occupancy", "occ", type=float, default=None, help="Occupancy fraction 0..1.")
@click.option(
    "--area",
    type=click.Path(exists=True),
    default=None,
    help="Read the occupancy of this area with statvfs instead of --occupancy.",
)
@click.option("--mode", type=click.Choice(["occupancy", "age"]), default="occupancy", show_default=True)
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def sm_plan(
    listing: str, occ: float | None, area: str | None, mode: str, now: float | None, as_json: bool
) -> None:
    """Which P5 files the Storage Manager cleanup deletes (nothing is deleted)."""
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
        echo_json(plan.as_dict())
        return
    click.echo(f"occupancy {occ:.1%}, mode {mode}: {len(plan.delete)} files, {plan.bytes} bytes")
    for d in plan.delete:
        click.echo(f"{d.rule:<10} {'UNCHECKED ' if d.unchecked else ''}{d.path}")


@sm.command("occupancy")
@click.argument("path", type=click.Path(exists=True))
def sm_occupancy(path: str) -> None:
    """Print the occupancy fraction of the filesystem holding PATH (statvfs)."""
    click.echo(f"{occupancy(path):.6f}")
