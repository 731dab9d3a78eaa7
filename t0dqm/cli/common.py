"""Options shared by several commands."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from t0dqm import config

F = TypeVar("F", bound=Callable[..., Any])


def _set_root(_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value:
        os.environ["T0DQM_ROOT"] = str(Path(value).resolve())
        config.reset(config.load(config.get().source))


def root_option(func: F) -> F:
    """`--root DIR` on a sub-command: the data root (same as `t0dqm --root DIR ...`)."""
    return click.option(
        "--root",
        type=click.Path(file_okay=False),
        expose_value=False,
        callback=_set_root,
        help="Data root (default: config root, ./t0dqm-data).",
    )(func)
