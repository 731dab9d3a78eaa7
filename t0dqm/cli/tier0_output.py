"""Output helpers of the Tier-0 commands (streamer, sm, t0): JSON lines, byte counts, JSON input files."""

from __future__ import annotations

import json
from typing import Any

import click


def echo_json(obj: object) -> None:
    """Print one JSON object (keys in their order)."""
    click.echo(json.dumps(obj, sort_keys=False))


def fmt_bytes(n: int) -> str:
    """A byte count in decimal units: 999 B, 1.50 kB, ..."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def read_json(path: str, option: str) -> Any:
    """The JSON content of ``path``; a ClickException naming ``option`` when it cannot be read."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{option}: {exc}") from None
