"""CLI commands: index (ls, show, retry-failed)."""

from __future__ import annotations

import json
from typing import Any

import click

from t0dqm import config

__all__ = ["index"]


@click.group("index")
def index() -> None:
    """The DQM GUI index: samples and monitor elements."""


@index.command("ls")
@click.option("--run", type=int, default=None)
@click.option("--dataset", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def index_ls(run: int | None, dataset: str | None, as_json: bool) -> None:
    """List samples (run, dataset, version, class, monitor elements)."""
    from t0dqm.steps import index as dqmindex

    for sample in dqmindex.Index(config.get()).samples(run=run, dataset=dataset):
        if as_json:
            click.echo(json.dumps(sample, sort_keys=True))
        else:
            sub = sample["subsystem"] or "-"
            click.echo(
                f"{sample['run']:>9} {sample['dataset']:<60} V{sample['version']:04d} "
                f"{sample['cls']:<16} {sub:<12} {sample['n_mes']:>6} MEs  {sample['path']}"
            )


@index.command("show")
@click.argument("run", type=int)
@click.argument("dataset")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def index_show(run: int, dataset: str, as_json: bool) -> None:
    """List the monitor elements of RUN DATASET (newest version of each file)."""
    from t0dqm.steps import index as dqmindex

    mes = dqmindex.Index(config.get()).monitor_elements(run, dataset)
    if not mes:
        raise click.ClickException(f"no sample for run {run} dataset {dataset}")
    for me in mes:
        if as_json:
            click.echo(json.dumps(me, sort_keys=True))
        else:
            value = "" if me["value"] is None else f" = {me['value']}"
            click.echo(f"{me['kind']:<10} {me['path']}{value}")


@index.command("retry-failed")
@click.option("--sync", "run_sync", is_flag=True, help="Import and merge here instead of enqueueing.")
def index_retry_failed(run_sync: bool) -> None:
    """Send files whose import or merge failed back to the index (after a fix)."""
    from t0dqm.catalog.db import get_catalog
    from t0dqm.steps import index as dqmindex

    settings = config.get()
    catalog = get_catalog(settings.catalog_url)
    reset = dqmindex.reset_failed(settings, catalog)
    click.echo(f"reset        {len(reset)} file(s)")
    if not reset:
        return
    if run_sync:
        for file_id, state in reset:
            if state == "pending":
                dqmindex.import_one(file_id, settings, catalog)
        merged = dqmindex.merge_all(settings, catalog)
        click.echo(f"indexed      {merged.get('indexed', 0)} file(s), failed {merged.get('failed', 0)}")
        return
    from t0dqm.celery import app
    from t0dqm.tasks.base import send_once

    imports: list[tuple[Any, tuple[Any, ...], dict[str, Any]]] = [
        (app.signature(dqmindex.IMPORT_TASK), (file_id,), {})
        for file_id, state in reset
        if state == "pending"
    ]
    send_once(app, settings, [*imports, (app.signature(dqmindex.MERGE_TASK), (), {})], strict=True)
