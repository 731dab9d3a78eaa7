"""CLI commands (dqm): classify, simulate."""

from __future__ import annotations

import json
import os
import sys

import click

__all__ = ["classify", "simulate"]


@click.command("classify")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--mtime",
    type=float,
    default=None,
    help="File time (epoch s) for Monte Carlo zip patterns; default: the file's mtime when NAME "
    "is an existing file, else now.",
)
def classify(names: tuple[str, ...], mtime: float | None) -> None:
    """Classify DQM file NAMEs: one JSON object per line, in input order; exit 1 if any is invalid."""
    from t0dqm.formats import naming

    all_ok = True
    for name in names:
        when = mtime
        if when is None:
            try:
                when = os.stat(name).st_mtime
            except OSError:
                when = None
        try:
            info = naming.classify(name, when)
            out = {"name": name, "ok": True, **naming.to_json(info)}
        except naming.InvalidName as exc:
            all_ok = False
            out = {"name": name, "ok": False, "error": exc.reason}
        click.echo(json.dumps(out))
    sys.exit(0 if all_ok else 1)


@click.command("simulate")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write the simulated files into.",
)
@click.option("--files", "n_files", type=int, default=10, show_default=True, help="Number of good files.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (names, contents).")
@click.option(
    "--broken",
    type=int,
    default=0,
    show_default=True,
    help="Number of broken files (truncated, wrong magic, no Run summary, size mismatch, bad name).",
)
@click.option("--hists", "n_hists", type=int, default=200, show_default=True, help="Histograms per file.")
@click.option(
    "--dropbox",
    type=click.Path(file_okay=False),
    default=None,
    help="Also upload every file into this dropbox (as producers do).",
)
def simulate(out_dir: str, n_files: int, seed: int, broken: int, n_hists: int, dropbox: str | None) -> None:
    """Write simulated DQM ROOT files (online, offline, relval, MC, plus broken variants) into OUT."""
    from t0dqm.dev import simulate as sim

    results = sim.simulate(out_dir, n_files, seed, broken=broken, n_hists=n_hists, dropbox=dropbox)
    for item in results:
        click.echo(json.dumps(item))
