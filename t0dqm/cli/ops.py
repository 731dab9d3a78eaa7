"""CLI commands (ops): alarms, upload-server."""

from __future__ import annotations

import json
import time
from typing import Any

import click

__all__ = ["alarms", "upload_server"]


@click.group("alarms")
def alarms() -> None:
    """Alarms raised by the health checks and the tasks."""


@alarms.command("ls")
@click.option(
    "--recent",
    type=float,
    default=24.0,
    show_default=True,
    help="Also show alarms cleared within this many hours.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def alarms_ls(recent: float, as_json: bool) -> None:
    """Show active alarms and recently cleared ones."""
    from t0dqm import config, notify
    from t0dqm.catalog.db import get_catalog

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
        click.echo(
            f"{'active' if a.active else 'cleared':8} {a.severity:9} {a.count:>5} {last:19} {a.key:40} "
            f"{a.message}"
        )


@click.command("upload-server")
@click.option("--host", default=None, help="Address to bind (default: upload.host, 127.0.0.1).")
@click.option(
    "--port", type=int, default=None, help="Port, 0 for any free port (default: upload.port, 8060)."
)
@click.option(
    "--dropbox",
    type=click.Path(file_okay=False),
    default=None,
    help="Dropbox folder (default: the flavour's uploads folder).",
)
@click.option("--max-size", type=int, default=None, help="Largest accepted file in bytes (default 8 GiB).")
@click.option(
    "--cert", type=click.Path(dir_okay=False, exists=True), default=None, help="Server certificate (PEM)."
)
@click.option("--key", type=click.Path(dir_okay=False, exists=True), default=None, help="Server key (PEM).")
@click.option(
    "--ca",
    type=click.Path(exists=True),
    default=None,
    help="CA file or directory: clients must present a certificate signed by it (required with TLS).",
)
@click.option(
    "--allowed-dns",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="File of certificate subject DNs allowed to upload, one per line (/DC=ch/.../CN=name).",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds a client may stay silent (headers, body, TLS handshake) before it is cut (default 30).",
)
@click.option(
    "--max-uploads",
    type=int,
    default=None,
    help="Uploads received at once; beyond: 503 with Retry-After (default 64).",
)
@click.option("--max-connections", type=int, default=None, help="Open connections at once (default 1024).")
def upload_server(
    host: str | None,
    port: int | None,
    dropbox: str | None,
    max_size: int | None,
    cert: str | None,
    key: str | None,
    ca: str | None,
    allowed_dns: str | None,
    timeout: float | None,
    max_uploads: int | None,
    max_connections: int | None,
) -> None:
    """Serve the DQM GUI upload protocol (POST /data/put), landing files in the dropbox; GET /metrics."""
    from t0dqm import config
    from t0dqm.servers import upload as us

    settings = config.get()
    cfg = settings.upload

    def pick(value: object, key: str) -> Any:
        return value if value is not None else (cfg[key] or None)

    cert, key, ca = pick(cert, "cert"), pick(key, "key"), pick(ca, "ca")
    allowed_dns = pick(allowed_dns, "allowed_dns")
    host = str(pick(host, "host"))
    if (key or ca or allowed_dns) and not cert:
        raise click.UsageError("--key, --ca and --allowed-dns need --cert (TLS)")
    if cert and not ca:
        raise click.UsageError("--cert needs --ca: with TLS every client must present a certificate")
    if host not in ("127.0.0.1", "localhost", "::1") and not ca:
        click.echo("warning: serving beyond loopback without client-certificate authentication", err=True)
    try:
        server = us.make_server(
            host,
            int(pick(port, "port") or 0),
            dropbox or settings.dropbox,
            max_size=int(pick(max_size, "max_size")),
            cert=cert,
            key=key,
            ca=ca,
            max_uploads=int(pick(max_uploads, "max_uploads")),
            timeout=float(pick(timeout, "timeout")),
            max_connections=int(pick(max_connections, "max_connections")),
            allowed_dns=allowed_dns,
        )
    except (OSError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"upload server on {server.url}/data/put -> {server.dropbox}")
    server.serve_forever()
