"""The `t0dqm` command: one click group, sub-commands registered per domain module."""

from __future__ import annotations

import importlib

import click

from t0dqm import config

# Each module defines click commands/groups listed in its __all__; they are attached below.
COMMAND_MODULES = (
    "t0dqm.cli.stack",
    "t0dqm.cli.dqm",
    "t0dqm.cli.receive",
    "t0dqm.cli.index",
    "t0dqm.cli.archive",
    "t0dqm.cli.streamer",
    "t0dqm.cli.sm",
    "t0dqm.cli.placement",
    "t0dqm.cli.ops",
    "t0dqm.cli.health",
    "t0dqm.cli.gui",
    "t0dqm.cli.worker",
    "t0dqm.cli.liveness",
)


@click.group()
@click.option(
    "--config",
    "config_path",
    envvar="T0DQM_CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML configuration file (default: $T0DQM_CONFIG, else embedded defaults).",
)
@click.option("--root", type=click.Path(file_okay=False), default=None, help="Data root (overrides config).")
def cli(config_path: str | None, root: str | None) -> None:
    """t0dqm: DQM and Tier-0 file operations."""
    import os

    if root:
        os.environ["T0DQM_ROOT"] = str(root)
    try:
        config.reset(config.load(config_path))
    except config.ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


for _name in COMMAND_MODULES:
    _module = importlib.import_module(_name)
    for _attr in getattr(_module, "__all__", ()):
        cli.add_command(getattr(_module, _attr))


def main() -> None:
    cli(prog_name="t0dqm")
