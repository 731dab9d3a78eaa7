"""CLI commands: health check (cron/external monitoring), metrics endpoint, reprocess, retry-bad."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["health", "metrics", "reprocess", "retry_bad"]  # the commands (attached by t0dqm.cli)


def celery_sender(name: str, args: tuple[Any, ...]) -> None:
    """Send a task by name through the t0dqm app (routing by module), unless a message for that step
    and item already waits in its queue (t0dqm.tasks.queued). What reprocess and retry-bad send with."""
    from t0dqm import config
    from t0dqm.celery import app
    from t0dqm.tasks.base import send_once

    send_once(app, config.get(), [(app.signature(name), args, {})], strict=True)


def _app_and_catalog():
    """The Celery app re-pointed at the CLI's settings, and the catalog."""
    from t0dqm import celery as t0celery
    from t0dqm import config
    from t0dqm.catalog.db import get_catalog

    settings = config.get()
    t0celery.reload(settings)
    return t0celery.app, settings, get_catalog(settings.catalog_url)


@click.group("health")
def health() -> None:
    """Health checks (the aliveCheck successor)."""


@health.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-notify", is_flag=True, help="Raise/clear alarms but do not send notifications.")
def health_check(as_json: bool, no_notify: bool) -> None:
    """Run the health check from this process (no ops worker needed): canaries through every queue,
    workers, queue depths, beat heartbeat, collectors, latency. Raises/clears alarms. Exit 1 when
    unhealthy: use it from cron or an external monitor, which also catches a stopped ops worker."""
    from t0dqm.tasks import health as tasks_health

    app, settings, catalog = _app_and_catalog()
    report = tasks_health.run_check(settings, catalog, app, notify=not no_notify)
    if as_json:
        click.echo(json.dumps(report.as_dict(), sort_keys=True))
    else:
        for line in tasks_health.summary_lines(report):
            click.echo(line)
    if not report.healthy:
        raise SystemExit(1)


@click.group("metrics")
def metrics() -> None:
    """Prometheus metrics."""


@metrics.command("serve")
@click.option("--address", default=None, help="Address to bind (default: metrics.address, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: metrics.port, 9808).")
def metrics_serve(address: str | None, port: int | None) -> None:
    """Serve /metrics for Prometheus until interrupted (values are read at each scrape)."""
    from t0dqm.servers import metrics as t0metrics

    _app, settings, catalog = _app_and_catalog()
    cfg = settings.metrics
    address = address or cfg.address
    port = int(port if port is not None else cfg.port)
    server = t0metrics.serve(settings, address, port, t0metrics.make_registry(settings, catalog))
    click.echo(f"metrics on http://{address}:{server.server_port}/metrics")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()


@click.command("reprocess")
@click.option("--run", "run", type=int, required=True, help="Run number.")
@click.option("--dataset", default=None, help="Only this dataset (default: every dataset of the run).")
@click.option(
    "--from-step",
    "from_step",
    type=click.Choice(["receive", "index", "zip", "stage", "verify"]),
    default="index",
    show_default=True,
    help="First step to redo; every later step follows.",
)
def reprocess(run: int, dataset: str | None, from_step: str) -> None:
    """Take a run's files and archives back to a step and enqueue it (audited); prints what it did."""
    from t0dqm.steps import reprocess as rp

    _app, settings, catalog = _app_and_catalog()
    actions = rp.reprocess(settings, catalog, run, dataset=dataset, from_step=from_step, send=celery_sender)
    for action in actions:
        click.echo(action.line())
    sent = sum(1 for a in actions if a.task)
    click.echo(
        f"{sent} message(s) sent for run {run}{' ' + dataset if dataset else ''} from step {from_step}"
    )


@click.command("retry-bad")
@click.option("--id", "ids", type=int, multiple=True, help="Quarantine row id (repeatable; default: all).")
@click.option("--list", "list_only", is_flag=True, help="Only list unresolved quarantined uploads.")
def retry_bad(ids: tuple[int, ...], list_only: bool) -> None:
    """Re-queue quarantined uploads after the cause was fixed: restore .origin, drop the .bad marker,
    resolve the quarantine row (audited), send receive."""
    from t0dqm.steps import reprocess as rp

    _app, settings, catalog = _app_and_catalog()
    if list_only:
        rows = rp.quarantined(catalog, list(ids) or None)
        if not rows:
            click.echo("nothing quarantined")
        for row in rows:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created_at"]))
            click.echo(f"{row['id']:>5} {when} {row['step']:<8} {row['path']}: {row['reason']}")
        return
    actions = rp.retry_bad(settings, catalog, ids=list(ids) or None, send=celery_sender)
    if not actions:
        click.echo("nothing quarantined")
    for action in actions:
        click.echo(action.line())
