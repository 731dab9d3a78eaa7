"""CLI commands: upload, receive, import-legacy (the receive step, see t0dqm.steps.receive)."""

from __future__ import annotations

import json
import time

import click

from t0dqm import config

__all__ = ["import_legacy", "receive", "upload"]


@click.command("upload")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--dropbox",
    "box",
    type=click.Path(file_okay=False),
    default=None,
    help="Dropbox folder (default: the configured one).",
)
def upload(paths: tuple[str, ...], box: str | None) -> None:
    """Upload FILEs into the dropbox (uploads/NNNN/<name> + <name>.origin), as producers do."""
    from t0dqm.formats import dropbox, naming

    target_box = box or str(config.get().dropbox)
    failed = 0
    for path in paths:
        try:
            click.echo(str(dropbox.upload(path, target_box)))
        except (naming.InvalidName, OSError) as exc:
            failed += 1
            click.echo(f"error: {path}: {exc}", err=True)
    if failed:
        raise SystemExit(1)


def _receive_pass(settings: config.Settings, do_index: bool) -> dict[str, int]:
    from t0dqm.catalog.db import get_catalog
    from t0dqm.formats import dropbox
    from t0dqm.steps.receive import receive_one

    catalog = get_catalog(settings.catalog_url)
    counts: dict[str, int] = {}
    filed: list[int] = []
    for cand in dropbox.scan(settings.dropbox, limit=int(settings.receive.batch)):
        out = receive_one(cand.path, settings, catalog)
        counts[out.status] = counts.get(out.status, 0) + 1
        detail = out.target if out.status == "filed" else (out.reason or "")
        click.echo(f"{out.status:<12} {out.path}  {detail}")
        if out.file_id is not None:
            filed.append(out.file_id)
    if do_index and filed:
        from t0dqm.steps import index as dqmindex

        for file_id in filed:
            dqmindex.import_one(file_id, settings, catalog)
        merged = dqmindex.merge_all(settings, catalog)
        click.echo(f"indexed      {merged.get('indexed', 0)} file(s)")
    return counts


@click.command("receive")
@click.option("--once", is_flag=True, help="One scan, then exit (default: scan until interrupted).")
@click.option(
    "--index/--no-index",
    "do_index",
    default=False,
    help="Also import and merge the received files into the index, synchronously.",
)
def receive(once: bool, do_index: bool) -> None:
    """Receive uploads synchronously, without a broker (imports and zips then wait for reconcile,
    or use --index)."""
    settings = config.get()
    while True:
        counts = _receive_pass(settings, do_index)
        if once:
            click.echo(json.dumps(counts, sort_keys=True))
            return
        time.sleep(float(settings.receive.scan_interval))


@click.command("import-legacy")
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--dry-run", is_flag=True, help="Report what would be imported, change nothing.")
@click.option(
    "--index/--no-index",
    "do_index",
    default=True,
    help="Mark present files for import into the index (default) or not.",
)
def import_legacy(directory: str, dry_run: bool, do_index: bool) -> None:
    """Record original .dqminfo files under DIRECTORY (inside the repository) in the catalog; they are
    Python literals, read safely, never eval'ed."""
    from t0dqm.catalog.db import get_catalog
    from t0dqm.steps.receive import import_legacy as run_import

    settings = config.get()
    counts = run_import(
        directory, settings, get_catalog(settings.catalog_url), dry_run=dry_run, index=do_index
    )
    for error in counts["errors"]:
        click.echo(f"error: {error}", err=True)
    click.echo(json.dumps({k: (len(v) if k == "errors" else v) for k, v in counts.items()}, sort_keys=True))
    if counts["errors"]:
        raise SystemExit(1)
