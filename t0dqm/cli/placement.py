"""CLI: ``t0dqm t0``, Tier-0 conventions: size limits, dataset names, placement (subscriptions, outputs with
their Rucio rules, t0dqm.steps.placement) and disk retention (t0dqm.cli.retention)."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from t0dqm import config, storage
from t0dqm.catalog import outputs as catalog_outputs
from t0dqm.catalog.db import get_catalog
from t0dqm.cli.retention import t0_retention
from t0dqm.cli.tier0_output import echo_json, fmt_bytes, read_json
from t0dqm.clients.rucio import RucioRefused, RucioUnavailable
from t0dqm.formats import datasets
from t0dqm.policies import placement as policy
from t0dqm.policies import retention, size_limits
from t0dqm.steps import placement

__all__ = ["t0"]


@click.group()
def t0() -> None:
    """Tier-0 conventions: size limits, dataset names, placement (subscriptions, outputs), disk retention."""


@t0.command("size-check")
@click.option("--kind", type=click.Choice(["raw", "streamer"]), required=True)
@click.option("--soft-gib", type=float, default=16.0, show_default=True, help="RAW soft limit.")
@click.option("--hard-gib", type=float, default=24.0, show_default=True, help="RAW hard limit.")
@click.option("--notify-gib", type=float, default=30.0, show_default=True, help="Streamer notify limit.")
@click.option("--refuse-gib", type=float, default=80.0, show_default=True, help="Streamer refuse limit.")
@click.option("--json", "as_json", is_flag=True, help="Accepted for symmetry: the output is JSON.")
@click.argument("size", type=click.IntRange(min=0))
def size_check(
    kind: str,
    soft_gib: float,
    hard_gib: float,
    notify_gib: float,
    refuse_gib: float,
    as_json: bool,
    size: int,
) -> None:
    """Verdict for a file of SIZE bytes: ok, soft, hard (raw) or ok, notify, refuse (streamer)."""
    try:
        limits = size_limits.SizeLimits(soft_gib, hard_gib, notify_gib, refuse_gib)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    echo_json(size_limits.check(kind, size, limits).as_dict())


t0.add_command(t0_retention)


@t0.group()
def dataset() -> None:
    """Build or parse Tier-0 dataset names."""


@dataset.command("build")
@click.argument("kind", type=click.Choice(["express", "repack", "promptreco"]))
@click.option("--pd", required=True, help="Primary (or Express) dataset.")
@click.option("--era", required=True, help="Acquisition era.")
@click.option("--version", "version", required=True, type=int, help="Processing version N (vN).")
@click.option("--tier", default=None, help="Data tier (default FEVT / RAW / RECO; ALCARECO with --alca).")
@click.option("--alca", default=None, help="AlcaProducer (ALCARECO datasets).")
def dataset_build(kind: str, pd: str, era: str, version: int, tier: str | None, alca: str | None) -> None:
    """Print the dataset name."""
    try:
        click.echo(datasets.build(kind, pd=pd, era=era, version=version, tier=tier, alca=alca))
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@dataset.command("parse")
@click.argument("name")
def dataset_parse(name: str) -> None:
    """Print {"kind", "pd", "era", "version", "tier", "alca"} of a dataset name."""
    try:
        echo_json(datasets.parse(name).as_dict())
    except datasets.DatasetNameError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


# ------------------------------------------------------------------------------------- subscriptions


@t0.group()
def subscriptions() -> None:
    """Where Tier-0 data goes: PD -> Tier-1 tape site (config table subscriptions)."""


def _subs() -> Any:
    # config.Table is registered as a Mapping at runtime (Mapping.register), which mypy does not see
    return policy.from_config(config.get().subscriptions)  # type: ignore[arg-type]


@subscriptions.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def subscriptions_show(as_json: bool) -> None:
    """The configured assignment: each PD's site and RSEs, the default site, the Tier-0 disk."""
    subs = _subs()
    rows = []
    for pd in sorted(subs.sites):
        _placement, eps = policy.endpoints(subs, pd, "RAW")
        rows.append(
            {"pd": pd, "site": subs.sites[pd], "rses": [e.rse for e in eps if e.role != policy.T0_DISK]}
        )
    out = {
        "default_site": subs.default_site,
        "t0_disk": subs.t0_disk,
        "disk_tiers": sorted(subs.disk_tiers),
        "pds": rows,
    }
    if as_json:
        echo_json(out)
        return
    click.echo(f"Tier-0 disk {subs.t0_disk} (every output, removed by retention)")
    click.echo(f"new PDs -> {subs.default_site} ({policy.tape_rse(subs.default_site)})")
    if subs.disk_tiers:
        click.echo(f"tiers also on the site's disk: {', '.join(sorted(subs.disk_tiers))}")
    click.echo(f"{'PD':<32} {'site':<16} RSEs (every tier follows RAW)")
    for r in rows:
        click.echo(f"{r['pd']:<32} {r['site']:<16} {', '.join(r['rses'])}")


@subscriptions.command("where")
@click.argument("dataset")
def subscriptions_where(dataset: str) -> None:
    """Where an output of DATASET (/PD/Era-vN/TIER) goes, and why."""
    try:
        name = datasets.parse(dataset)
    except datasets.DatasetNameError as exc:
        raise click.ClickException(f"refused: {exc}") from None
    placement, eps = policy.endpoints(_subs(), name.pd, name.tier)
    echo_json({**placement.as_dict(), "endpoints": [e.as_dict() for e in eps]})


def _catalog_volumes() -> dict[str, int]:
    """RAW bytes per PD registered in the catalog (the default volumes of the plan)."""
    out: dict[str, int] = {}
    for dataset, size in catalog_outputs.raw_bytes_by_dataset(get_catalog(config.get().catalog_url)):
        try:
            pd = policy.base_pd(datasets.parse(dataset).pd)
        except datasets.DatasetNameError:
            continue
        out[pd] = out.get(pd, 0) + int(size or 0)
    return out


def _site_bytes(values: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for text in values:
        site, sep, number = text.partition("=")
        try:
            out[site] = int(float(number))
        except ValueError:
            raise click.BadParameter(f"{text!r}: expected SITE=BYTES", param_hint="--free") from None
        if not sep:
            raise click.BadParameter(f"{text!r}: expected SITE=BYTES", param_hint="--free")
    return out


@subscriptions.command("plan")
@click.option(
    "--volumes",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help='JSON {"PD": bytes}: expected volume per PD (default: RAW bytes registered in the catalog).',
)
@click.option(
    "--free",
    "free",
    multiple=True,
    metavar="SITE=BYTES",
    help="Free tape space of a site (repeat; default: config subscriptions.free_tape).",
)
@click.option(
    "--min-gain",
    type=click.FloatRange(0, 1),
    default=0.01,
    show_default=True,
    help="Move a PD only when it cuts the imbalance by this fraction of the total volume.",
)
@click.option("--max-moves", type=click.IntRange(min=0), default=None, help="At most this many moves.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def subscriptions_plan(
    volumes: str | None, free: tuple[str, ...], min_gain: float, max_moves: int | None, as_json: bool
) -> None:
    """Propose a redistribution of the PDs in proportion to the sites' free tape (nothing is changed)."""
    vols = read_json(volumes, "--volumes") if volumes else _catalog_volumes()
    free_map = _site_bytes(free) if free else dict(config.get().subscriptions.free_tape)
    try:
        result = policy.plan(
            _subs(),
            vols,
            free_map,
            min_gain_fraction=min_gain,
            max_moves=max_moves,
        )
    except policy.SubscriptionError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        echo_json({**result.as_dict(), "toml": policy.assignment_toml(result.assignment)})
        return
    click.echo(f"total volume {fmt_bytes(result.total)}")
    click.echo(f"{'site':<16} {'free':>12} {'share':>6} {'target':>12} {'before':>12} {'after':>12}")
    for row in result.sites:
        click.echo(
            f"{row.site:<16} {fmt_bytes(row.free):>12} {row.share:>6.1%} {fmt_bytes(int(row.target)):>12} "
            f"{fmt_bytes(row.before):>12} {fmt_bytes(row.after):>12}"
        )
    click.echo(f"{len(result.moves)} moves")
    for m in result.moves:
        click.echo(f"  {m.pd}: {m.src} -> {m.dst} ({fmt_bytes(m.volume)}): {m.reason}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo("\nnew assignment (paste into the configuration; existing rules are not moved):")
    click.echo(policy.assignment_toml(result.assignment), nl=False)


# ------------------------------------------------------------------------------------------- outputs


@t0.group()
def output() -> None:
    """Tier-0 outputs: register (Rucio rules), list, release, poll rule states."""


@output.command("add")
@click.argument("dataset")
@click.argument("files", nargs=-1)
@click.option(
    "--files-json",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help='JSON list [{"path", "size", "adler32"}] instead of FILES.',
)
@click.option(
    "--needed-by",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Processing jobs that still need the files (retention waits for 0).",
)
@click.option("--block", default=None, help="Rucio block name DATASET#id (default: derived from the files).")
def output_add(
    dataset: str, files: tuple[str, ...], files_json: str | None, needed_by: int, block: str | None
) -> None:
    """Register an output: DATASET and its FILES (local paths or root:// URLs; size and adler32 are read).

    Records the files and creates the Rucio rules (Tier-0 disk + the policy's tape site) when Rucio is
    configured; running it again finds and reuses everything.
    """
    settings = config.get()
    if files_json:
        items = read_json(files_json, "--files-json")
    else:
        if not files:
            raise click.UsageError("give FILES or --files-json")
        items = []
        timeout = settings.timeout("io")
        for path in files:
            try:
                st = storage.stat(path, timeout)
                if st is None or st.is_dir:
                    raise click.ClickException(f"{path}: no such file")
                items.append({"path": path, "size": st.size, "adler32": storage.checksum(path, timeout)})
            except storage.StorageError as exc:
                raise click.ClickException(f"{path}: {exc}") from None
    catalog = get_catalog(settings.catalog_url)
    try:
        result = placement.register(catalog, settings, dataset, items, needed_by=needed_by, block=block)
    except placement.PlacementRefused as exc:
        raise click.ClickException(f"refused: {exc}") from None
    except RucioUnavailable as exc:
        raise click.ClickException(
            f"{exc}; the output is recorded and its rules are created by the next "
            f"rule poll (t0dqm t0 output poll)"
        ) from None
    except RucioRefused as exc:
        raise click.ClickException(f"Rucio refused the rules: {exc}") from None
    echo_json(result)
    if result.get("notice"):
        click.echo(f"notice: {result['notice']}", err=True)


@output.command("ls")
@click.option("--dataset", default=None, help="Only this dataset.")
@click.option("--state", default=None, help="Only blocks with files in this state (present, released, ...).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list.")
def output_ls(dataset: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Registered outputs by block: files, states, rules and the retention facts."""
    settings = config.get()
    blocks = placement.listing(get_catalog(settings.catalog_url), dataset=dataset, state=state, limit=limit)
    now = time.time()
    min_days = int(settings.retention.min_days)
    for b in blocks:
        facts = retention.T0Output(
            name=b["block"],
            created=b["created_at"],
            endpoints=frozenset(b["endpoints_required"]),
            transferred_to=frozenset(b["endpoints_done"]),
            needed_by_processing=b["needed_by"] > 0,
        )
        b["retention"] = (
            "released"
            if set(b["states"]) <= {"released", "deleted"}
            else retention.decide(facts, now, min_days).reason
        )
    if as_json:
        echo_json(blocks)
        return
    for b in blocks:
        states = " ".join(f"{k}={v}" for k, v in sorted(b["states"].items()))
        click.echo(
            f"{b['block']}  files={b['files']} {fmt_bytes(b['bytes'])}  {states}  "
            f"needed_by={b['needed_by']}  retention: {b['retention']}"
        )
        for r in b["rules"]:
            click.echo(
                f"    {r['role']:<8} {r['rse']:<20} {r['state']:<12} {r['rule_id'] or '-'}"
                + (f"  ({r['error']})" if r["error"] else "")
            )
    click.echo(f"{len(blocks)} blocks", err=True)


@output.command("needed")
@click.argument("block")
@click.argument("jobs", type=click.IntRange(min=0))
def output_needed(block: str, jobs: int) -> None:
    """Set how many processing jobs still need the files of BLOCK (0 lets retention act)."""
    catalog = get_catalog(config.get().catalog_url)
    paths = catalog_outputs.block_paths(catalog, block)
    if not paths:
        raise click.ClickException(f"no output block {block}")
    refused = [p for p in paths if not catalog_outputs.set_needed_by(catalog, p, jobs)]
    echo_json({"block": block, "files": len(paths), "needed_by": jobs, "refused": refused})
    if refused:
        click.echo("retention already started on these files: not marked as needed", err=True)
        sys.exit(1)


@output.command("poll")
@click.option("--now", "now", type=float, default=None, help="Evaluate at this epoch (default: now).")
def output_poll(now: float | None) -> None:
    """Read every live rule's state from Rucio now (what the beat task does): endpoints done, alarms."""
    settings = config.get()
    if not settings.rucio.url:
        raise click.ClickException("no Rucio server configured (rucio.url)")
    try:
        run = placement.poll(get_catalog(settings.catalog_url), settings, now=now)
    except (RucioUnavailable, RucioRefused) as exc:
        raise click.ClickException(str(exc)) from None
    echo_json(run.as_dict())
