"""CLI commands (gui): register files with the new DQM GUI in bulk."""

from __future__ import annotations

import json

import click

__all__ = ["gui"]


@click.group("gui")
def gui() -> None:
    """The new DQM GUI: registration of received files (configuration table ``gui``)."""


@gui.command("register")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every file whose ROOT file is present, registered or not (re-register).",
)
@click.option("--run", type=int, default=None, help="Every file of this run, registered or not.")
@click.option("--url", default=None, help="GUI base URL (default: gui.register_url).")
@click.option(
    "--check/--no-check",
    default=None,
    help="Read each sample's top folder afterwards (default: gui.check_readable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
def register(everything: bool, run: int | None, url: str | None, check: bool | None, as_json: bool) -> None:
    """Register files with the GUI, here and now (no worker needed).

    Without --all or --run: the files the GUI does not have yet (what reconcile would send), including
    fresh ones; files left with a reason (refused by the GUI, superseded) are sent again only with
    --all or --run. Exit 1 when the GUI is unreachable or refused a file.
    """
    from t0dqm import config
    from t0dqm.catalog import gui as gui_rows
    from t0dqm.catalog.db import get_catalog
    from t0dqm.steps import gui as g

    if everything and run is not None:
        raise click.UsageError("--all and --run exclude each other")
    settings = config.get()
    base = url or settings.gui.register_url
    if not base:
        raise click.UsageError("no GUI: set gui.register_url (T0DQM_GUI__REGISTER_URL) or pass --url")
    catalog = get_catalog(settings.catalog_url)
    force = everything or run is not None
    with catalog.read() as conn:
        ids = gui_rows.missing_ids(conn, run=run, everything=everything)
    registrar = g.Registrar(settings, catalog, g.client_for(settings, base))
    if force:  # an explicit request sends again what was left with a reason
        registrar.forget_reasons(ids)
    try:
        result = registrar.register(ids, force=force)
    except g.GuiUnavailable as exc:
        raise click.ClickException(f"DQM GUI unreachable: {exc}") from None
    out = {"url": base, "candidates": len(ids), **result.counts()}
    checked: dict[str, int] = {}
    if check if check is not None else settings.gui.check_readable:
        checked = registrar.check(result.registered_samples(), budget=3600.0)
    if as_json:
        click.echo(json.dumps({**out, "check": checked} if checked else out, sort_keys=True))
    else:
        click.echo("  ".join(f"{k}={v}" for k, v in out.items()))
        if checked:
            click.echo("check    " + "  ".join(f"{k}={v}" for k, v in checked.items()))
        for file_id, reason in result.rejected.items():
            click.echo(f"refused  file {file_id}: {reason}", err=True)
    if result.rejected or checked.get("unreadable"):
        raise SystemExit(1)


@gui.command("removed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def removed(as_json: bool) -> None:
    """Files the GUI still lists whose ROOT file version or quota control deleted (the GUI has no removal
    call; docs/operations.md says what to do with them)."""
    from t0dqm import config
    from t0dqm.catalog import gui as gui_rows
    from t0dqm.catalog.db import get_catalog
    from t0dqm.policies import gui as policy

    settings = config.get()
    with get_catalog(settings.catalog_url).read() as conn:
        rows = gui_rows.removed_but_registered(conn)
    gs = settings.gui
    for row in rows:
        facts = policy.FileFacts(
            id=row["id"],
            path=row["path"],
            cls=row["cls"],
            run=row["run"],
            version=row["version"],
            dataset=row["dataset"],
            subsystem=row["subsystem"],
        )
        try:
            dataset = policy.gui_dataset(facts, gs.online_dataset, gs.online_subsystem_dataset)
        except policy.BadDataset:
            dataset = row["dataset"]
        item = {
            "file_id": row["id"],
            "run": row["run"],
            "dataset": dataset,
            "file": policy.gui_file(row["path"], str(settings.repository), gs.file_prefix),
        }
        click.echo(json.dumps(item) if as_json else f"{item['run']:>9}  {item['dataset']}  {item['file']}")
    if not as_json:
        click.echo(f"{len(rows)} registered file(s) whose ROOT file is gone", err=True)
