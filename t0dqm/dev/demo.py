"""`t0dqm demo`: the main job end to end on the embedded stack, with progress and a summary.

It simulates producers' files (good ones and broken ones), uploads them into the dropbox, lets the
stack (embedded Redis, a worker on every queue, beat) carry them through the chain, and checks that
every good file is filed, indexed and in a verified archive and every broken one is quarantined.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t0dqm import config
from t0dqm.catalog import status as views
from t0dqm.catalog.db import Catalog
from t0dqm.catalog.gui import counts as gui_counts
from t0dqm.catalog.states import archive_safe_states

# Short cycles so the demo finishes in a minute or two (production values are in config.DEFAULTS).
DEMO_ENV = {
    "T0DQM_ARCHIVE__FREEZE_AGE": "8",
    "T0DQM_ARCHIVE__VERIFY_DELAY": "2",
    "T0DQM_RECONCILE__INTERVAL": "5",
    "T0DQM_RECONCILE__STALE_SECONDS": "30",
    "T0DQM_RECEIVE__SCAN_INTERVAL": "1",
    "T0DQM_BEAT__EVERY__ZIP_FREEZE": "3",
    "T0DQM_BEAT__EVERY__TAPE_VERIFY": "3",
    "T0DQM_BEAT__EVERY__INDEX_MERGE": "2",
}


def progress(catalog: Catalog, require_tape: bool) -> dict[str, int]:
    safe = archive_safe_states(require_tape)
    with catalog.read() as conn:
        n_files, indexed, archived, zipped, n_quarantined, arch = views.progress(conn, safe)
        gui = gui_counts(conn)
    return {
        "received": n_files,
        "indexed": indexed,
        "zipped": zipped,
        "archived": archived,
        "gui_registered": gui["registered"],
        "gui_waiting": gui["waiting"],
        "gui_not_sent": gui["not_sent"],
        "quarantined": n_quarantined,
        "archives": sum(arch.values()),
        "archives_safe": sum(v for k, v in arch.items() if k in safe),
        **{f"archives_{k}": v for k, v in arch.items()},
    }


def done(p: dict[str, int], n_good: int, n_bad: int, gui: bool = False) -> bool:
    return (
        p["received"] == n_good
        and p["indexed"] == n_good
        and p["archived"] == n_good
        and p["quarantined"] == n_bad
        and p["archives"] == p["archives_safe"]
        and (not gui or (p["gui_waiting"] == 0 and p["gui_registered"] + p["gui_not_sent"] == n_good))
    )


PRODUCER_HOSTS = ("p5-dqm-a", "p5-dqm-b")


def producer_config(root: Path, hosts: tuple[str, ...] = PRODUCER_HOSTS) -> Path:
    """A TOML file declaring the simulated producer hosts (their collect folders under ``root``)."""
    lines = ["producers = ["]
    for host in hosts:
        lines.append(f'  {{host = "{host}", dir = "{root / "producers" / host / "collect"}"}},')
    lines += ["]", "", "[beat.every]"]
    lines += [f"collect_{host.replace('-', '_')} = 2" for host in hosts]
    path = root / "demo.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_producer_files(settings: config.Settings, per_host: int, seed: int) -> int:
    """Final online files, as DQM applications on the producer hosts write them (temp + rename)."""
    from t0dqm.dev.simulate import content_for, write_dqm_file

    subsystems = ("Pixel", "Ecal", "Hcal", "Muons", "Tracking", "L1T")
    count = 0
    for h, entry in enumerate(settings.producers):
        folder = Path(entry["dir"])
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_host):
            run = 390000 + seed * 1000 + h * 100 + i
            name = f"DQM_V0001_{subsystems[i % len(subsystems)]}_R{run:09d}.root"
            run, subs, strict = content_for(name)
            write_dqm_file(folder / name, run, subs, n_hists=60, strict=strict)
            count += 1
    return count


def run_demo(
    settings: config.Settings,
    *,
    n_files: int,
    n_broken: int,
    timeout: float,
    echo: Callable[[str], Any] = print,
    seed: int = 7,
    per_host: int = 5,
    gui_url: str = "",
) -> bool:
    """``gui_url``: register every received file with the DQM GUI there (and wait for it)."""
    from t0dqm.celery import collect_queue
    from t0dqm.dev.simulate import simulate
    from t0dqm.dev.stack import LocalStack

    os.environ.update(DEMO_ENV)
    if gui_url:
        os.environ["T0DQM_GUI__REGISTER_URL"] = gui_url
        settings = config.load(settings.source)
    if (settings.flavour_root / "catalog.sqlite").exists():  # never mix with an earlier run's files
        os.environ["T0DQM_ROOT"] = str(settings.root / time.strftime("demo-%Y%m%d-%H%M%S"))
        settings = config.load(settings.source)
    if not settings.producers:  # two simulated producer hosts feed the chain through their collectors
        source = producer_config(settings.flavour_root)
        os.environ["T0DQM_CONFIG"] = str(source)
        settings = config.load(source)
    config.reset(settings)
    stack = LocalStack(settings, extra_env=dict(DEMO_ENV))
    started = time.monotonic()
    ok = False
    try:
        stack.start(concurrency=2, flower=False)
        hosts = sorted({p["host"] for p in settings.producers})
        for host in hosts:  # what runs on each producer host: a worker on its own collect queue
            stack.start_worker(f"collect-{host}", 1, queues=[collect_queue(host, settings)])
        echo(f"stack    broker {stack.broker_url}, data {settings.flavour_root}, logs {stack.log_dir}")
        stack.wait_ready()
        n_collected = write_producer_files(settings, per_host, seed)
        echo(
            f"producers {', '.join(hosts)}: {n_collected} online DQM files written, collected by collect.<host>"
        )
        echo(f"harvesting uploading {n_files} DQM files and {n_broken} broken ones ...")
        manifest = simulate(
            settings.flavour_root / "harvesting",
            n_files,
            seed,
            broken=n_broken,
            n_hists=60,
            dropbox=settings.dropbox,
        )
        n_bad = sum(1 for e in manifest if e["broken"])
        n_good = len(manifest) - n_bad + n_collected
        echo(f"uploaded {len(manifest)} files to {settings.dropbox}")
        catalog = Catalog(settings.catalog_url)
        require_tape = settings.archive.require_tape
        last = None
        while time.monotonic() - started < timeout:
            p = progress(catalog, require_tape)
            line = (
                f"  received {p['received']}/{n_good}  indexed {p['indexed']}  zipped {p['zipped']}  "
                f"archived {p['archived']}  archives {p['archives_safe']}/{p['archives']} verified  "
                f"quarantined {p['quarantined']}/{n_bad}"
            )
            if gui_url:
                line += f"  in the GUI {p['gui_registered']}"
            if line != last:
                echo(f"[{time.monotonic() - started:6.1f}s]{line}")
                last = line
            if done(p, n_good, n_bad, gui=bool(gui_url)):
                ok = True
                break
            dead = [c.name for c in stack.children if not c.alive()]
            if dead:
                echo(f"error: {', '.join(dead)} exited; see {stack.log_dir}")
                break
            time.sleep(1.0)
        p = progress(catalog, require_tape)
        echo("")
        echo(summary_table(p, n_good, n_bad, n_collected, gui=bool(gui_url)))
        if gui_url:
            echo(f"gui      {gui_url}: {p['gui_registered']} files registered (browse /api/v1/samples)")
        lost = n_good - p["received"]
        echo(
            f"result   {'OK: all work done, nothing lost' if ok else f'NOT DONE (lost or pending: {lost})'} "
            f"in {time.monotonic() - started:.1f}s"
        )
        catalog.dispose()
    finally:
        stack.stop()
        echo("stopped  every process the demo started")
    return ok


def summary_table(p: dict[str, int], n_good: int, n_bad: int, n_collected: int = 0, gui: bool = False) -> str:
    rows = [
        ("files in (good)", n_good),
        ("  of which collected on producer hosts", n_collected),
        ("files uploaded (broken)", n_bad),
        ("received into repository", p["received"]),
        ("indexed", p["indexed"]),
        ("in an archive", p["zipped"]),
        ("in a verified archive", p["archived"]),
        ("quarantined with reason", p["quarantined"]),
        ("archives", p["archives"]),
        ("archives verified (on tape where reported)", p["archives_safe"]),
    ]
    if gui:
        rows.append(("registered with the DQM GUI", p["gui_registered"]))
    rows += [
        (f"archives in state {k[len('archives_') :]}", v)
        for k, v in sorted(p.items())
        if k.startswith("archives_") and k != "archives_safe"
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(
        [f"{'item':<{width}}  count", f"{'-' * width}  -----"]
        + [f"{name:<{width}}  {value}" for name, value in rows]
    )
