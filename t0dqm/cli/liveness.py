"""CLI: which processes are alive (heartbeats), who leads beat, who holds each lease."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["liveness"]


@click.command("liveness")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def liveness(as_json: bool) -> None:
    """Live processes by heartbeat (any host), the elected beat, and every lease with its holder's state."""
    from t0dqm import config
    from t0dqm.beat_election import current_leader
    from t0dqm.catalog.db import get_catalog

    settings = config.get()
    catalog = get_catalog(settings.catalog_url)
    now = time.time()
    report: dict[str, Any] = {
        "stale_after": catalog.stale_after,
        "processes": [dict(r) for r in catalog.live_processes()],
        "beat_leader": current_leader(catalog, settings),
        "leases": catalog.lease_report(),
    }
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    click.echo(f"live processes (heartbeat within {report['stale_after']:.0f} s): {len(report['processes'])}")
    for p in report["processes"]:
        click.echo(
            f"  {p['identity']:<40} {p['role']:<13} beat {max(0.0, now - p['beat_at']):5.1f} s ago, "
            f"up {now - p['started_at']:.0f} s"
        )
    click.echo(f"beat leader: {report['beat_leader'] or 'none'}")
    click.echo(f"leases: {len(report['leases'])}")
    for lease in report["leases"]:
        click.echo(f"  {lease['name']:<40} {lease['holder']:<28} {lease['owner']}")
