"""CLI commands (archive): list archives, restore one from the endpoint and check it."""

from __future__ import annotations

import time
from pathlib import Path

import click

from t0dqm import config, storage
from t0dqm.catalog import status as views
from t0dqm.catalog.db import get_catalog
from t0dqm.catalog.states import ARCHIVE_STATES
from t0dqm.formats import zipper

__all__: list[str] = ["archive"]


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@click.group()
def archive() -> None:
    """Zip archives: list them, restore one from the archive endpoint."""


@archive.command("ls")
@click.option("--state", "state", type=click.Choice(ARCHIVE_STATES), default=None, help="Only this state.")
def ls(state: str | None) -> None:
    """List archives: serial, files, bytes, state, age (since first write) and path."""
    settings = config.get()
    catalog = get_catalog(settings.catalog_url)
    with catalog.read() as conn:
        rows = views.list_archives(conn, state)
    now = time.time()
    click.echo(f"{'serial':>6} {'files':>6} {'bytes':>14} {'state':<9} {'age':>7}  path")
    for r in rows:
        age = _age(now - (r["first_write"] or r["created_at"]))
        click.echo(f"{r['serial']:>6} {r['nfiles']:>6} {r['size']:>14} {r['state']:<9} {age:>7}  {r['path']}")
    click.echo(
        f"{len(rows)} archive(s), {sum(r['nfiles'] for r in rows)} file(s), "
        f"{sum(r['size'] for r in rows)} bytes"
    )


@archive.command("restore")
@click.argument("zip_name")
@click.option("--to", "dest", required=True, type=click.Path(file_okay=False), help="Folder to restore into.")
@click.option("--member", "member", default=None, help="Also extract this member and check its adler32.")
def restore(zip_name: str, dest: str, member: str | None) -> None:
    """Fetch archive ZIP (its path, file name or id) back from the endpoint and check its adler32
    against the catalog; with --member, extract one member and check it too."""
    settings = config.get()
    catalog = get_catalog(settings.catalog_url)
    with catalog.read() as conn:
        rows = views.archives_named(conn, zip_name)
        if len(rows) != 1:
            raise click.ClickException(
                f"{zip_name}: {len(rows)} archives match; give the path relative to the zip root"
            )
        arch = rows[0]
        wanted = None
        if member:
            wanted = views.member_named(conn, arch["id"], member)
            if wanted is None:
                raise click.ClickException(f"{member} is not a member of {arch['path']}")
    if not arch["adler32"]:
        raise click.ClickException(
            f"{arch['path']} is {arch['state']}: never frozen, nothing at the endpoint"
        )
    source = storage.join(settings.archive_endpoint, arch["path"])
    local = Path(dest) / Path(arch["path"]).name
    if local.exists():
        raise click.ClickException(f"{local} exists; restore into an empty folder")
    local.parent.mkdir(parents=True, exist_ok=True)
    try:
        got = storage.copy(
            source, str(local), timeout=settings.timeout("copy"), expected_adler32=arch["adler32"]
        )
    except storage.StorageError as exc:
        raise click.ClickException(f"fetch failed: {exc}") from None
    if got != arch["adler32"] or local.stat().st_size != arch["size"]:
        raise click.ClickException(
            f"{local}: adler32 {got}, {local.stat().st_size} bytes; catalog says "
            f"{arch['adler32']}, {arch['size']} bytes"
        )
    click.echo(f"restored {arch['path']} -> {local} ({arch['size']} bytes, adler32 {got} OK)")
    if wanted is not None:
        out = zipper.extract(local, wanted["name"], Path(dest) / wanted["name"])
        if out.adler32 != wanted["adler32"] or out.size != wanted["size"]:
            raise click.ClickException(
                f"member {wanted['name']}: adler32 {out.adler32}, {out.size} bytes; "
                f"catalog says {wanted['adler32']}, {wanted['size']} bytes"
            )
        click.echo(
            f"extracted {wanted['name']} -> {Path(dest) / wanted['name']} "
            f"({out.size} bytes, adler32 {out.adler32} OK)"
        )
