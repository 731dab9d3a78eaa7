"""CLI: ``t0dqm t0 retention``, Tier-0 disk retention over the catalog's outputs (t0dqm.steps.retention).

The command belongs to the ``t0`` group of t0dqm.cli.placement.
"""

from __future__ import annotations

import sys
import time

import click

from t0dqm import config
from t0dqm.catalog.db import get_catalog
from t0dqm.cli.tier0_output import echo_json
from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
from t0dqm.steps import retention as outputs


@click.command("retention")
@click.option("--execute", is_flag=True, help="Really delete (guarded deleter, audited); default: plan only.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Run every guard (the deleter's, Rucio's rule checks) and audit what would go; change nothing.",
)
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
@click.option(
    "--min-days",
    type=click.IntRange(min=0),
    default=None,
    help="Minimum days on the Tier-0 disk (default: config retention.min_days, 7).",
)
def t0_retention(execute: bool, dry_run: bool, now: float | None, min_days: int | None) -> None:
    """Tier-0 disk retention over the catalog's t0_outputs: print the plan as JSON; --execute deletes.

    With Rucio configured, a placed output goes by removing its block's Tier-0 disk rule (never another
    rule); otherwise the file itself is deleted through the guarded deleter.
    """
    settings = config.get()
    catalog = get_catalog(settings.catalog_url)
    now = time.time() if now is None else now
    days = int(settings.retention.min_days if min_days is None else min_days)
    if not execute and not dry_run:
        run, _rows = outputs.plan(catalog, now, days)
        echo_json(run.as_dict())
        click.echo(
            "plan only: nothing deleted (give --dry-run to check the guards, --execute to delete)", err=True
        )
        return
    try:
        run = outputs.run_retention(catalog, settings, now=now, min_days=days, dry_run=not execute)
    except (RucioUnavailable, RucioRefused) as exc:
        raise click.ClickException(f"{exc}; nothing deleted") from None
    echo_json(run.as_dict())
    problems = run.refused + run.errors + list((run.rucio or {}).get("refused", []))
    if problems:
        for line in problems:
            click.echo(f"not deleted: {line}", err=True)
        sys.exit(1)
