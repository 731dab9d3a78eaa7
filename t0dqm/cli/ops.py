"""CLI commands (ops): alarms, upload-server."""

from __future__ import annotations

import json
import time

import click

__all__ = ["alarms", "upload_server"]


@click.group("alarms")
def alarms() -> None:
    """Alarms raised by the health checks and the tasks."""


@alarms.command("ls")
@click.option("--recent", type=float, default=24.0, show_default=True,
              help="Also show alarms cleared within this many hours.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def alarms_ls(recent: float, as_json: bool) -> None:
    """Show active alarms and recently cleared ones."""
    from t0dqm import config, notify
    from t0dqm.catalog import get_catalog

    settings = config.get()
    items = notify.list_alarms(get_catalog(settings.catalog_url), recent_seconds=recent * 3600)
    if as_json:
        for alarm in items:
            click.echo(json.dumps(alarm.as_dict()))
        return
    if not items:
        click.echo("no alarms")
        return
    click.echo(f"{'STATE':8} {'SEVERITY':9} {'COUNT':>5} {'LAST':19} {'KEY':40} MESSAGE")
    for a in items:
        last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a.last_at))
        click.echo(f"{'active' if a.active else 'cleared':8} {a.severity:9} {a.count:>5} {last:19} {a.key:40} "
                   f"{a.message}")


@click.command("upload-server")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=int, default=8060, show_default=True, help="Port (0: any free port).")
@click.option("--dropbox", type=click.Path(file_okay=False), default=None,
              help="Dropbox folder (default: the flavour's uploads folder).")
@click.option("--max-size", type=int, default=None, help="Largest accepted file in bytes (default 8 GiB).")
@click.option("--cert", type=click.Path(dir_okay=False, exists=True), default=None, help="Server certificate (PEM).")
@click.option("--key", type=click.Path(dir_okay=False, exists=True), default=None, help="Server key (PEM).")
@click.option("--ca", type=click.Path(exists=True), default=None,
              help="CA file or directory: clients must present a certificate signed by it.")
def upload_server(host: str, port: int, dropbox: str | None, max_size: int | None, cert: str | None,
                  key: str | None, ca: str | None) -> None:
    """Serve the DQM GUI upload protocol (POST /data/put), landing files in the dropbox."""
    from t0dqm import config
    from t0dqm import upload_server as us

    if (key or ca) and not cert:
        raise click.UsageError("--key and --ca need --cert (TLS)")
    if host not in ("127.0.0.1", "localhost", "::1") and not ca:
        click.echo("warning: serving beyond loopback without client-certificate authentication", err=True)
    settings = config.get()
    server = us.make_server(host, port, dropbox or settings.dropbox, max_size=max_size or us.DEFAULT_MAX_SIZE,
                            cert=cert, key=key, ca=ca)
    click.echo(f"upload server on {server.url}/data/put -> {server.dropbox}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
