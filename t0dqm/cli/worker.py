"""CLI commands: `t0dqm worker --role R` and `t0dqm beat`, which exec the plain `celery` commands with
the flavour's queue names (roles in workers/roles.toml, command lines built by t0dqm.roles)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import click

from t0dqm import config
from t0dqm.cli.common import root_option

__all__ = ["beat", "worker"]

PASS_THROUGH = {"ignore_unknown_options": True, "allow_interspersed_args": False}


def _exec_celery(args: list[str], dry_run: bool) -> None:
    """Print the command (dry run) or replace this process by `celery` with the same settings."""
    if dry_run:
        click.echo(shlex.join(["celery", *args]))
        return
    settings = config.get()
    if settings.source:  # `t0dqm --config FILE`: the celery process must read the same file
        os.environ["T0DQM_CONFIG"] = str(Path(settings.source).resolve())
    argv = [sys.executable, "-m", "celery", *args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)  # noqa: S606 - fixed argv: this interpreter running celery, no shell


@click.command("worker", context_settings=PASS_THROUGH)
@root_option
@click.option("--role", help="Role from workers/roles.toml (see --list).")
@click.option("--host", default=None, help="Producer host of the collect role (default: config host).")
@click.option(
    "--roles",
    "roles_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Roles file (default: $T0DQM_WORKER_ROLES, else workers/roles.toml).",
)
@click.option("--list", "list_roles", is_flag=True, help="List the roles and their queues for this flavour.")
@click.option("--dry-run", is_flag=True, help="Print the celery command instead of running it.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(
    role: str | None,
    host: str | None,
    roles_path: str | None,
    list_roles: bool,
    dry_run: bool,
    celery_args: tuple[str, ...],
) -> None:
    """Run a Celery worker for one role: execs `celery -A t0dqm worker -Q <the flavour's queues> -c N
    --prefetch-multiplier P -n <role>.<flavour>.<pid>@<host>`; CELERY_ARGS go last (e.g. `-c 8`)."""
    from t0dqm.roles import RoleError, load_roles, worker_argv

    settings = config.get()
    try:
        roles = load_roles(Path(roles_path) if roles_path else None)
    except RoleError as exc:
        raise click.ClickException(str(exc)) from None
    if list_roles:
        for r in roles.values():
            click.echo(
                f"{r.name:<12} c={r.concurrency:<2} {','.join(r.queue_names(settings, host)):<40} {r.why}"
            )
        return
    if not role:
        raise click.UsageError(f"--role is required (one of: {', '.join(roles)})")
    if role not in roles:
        raise click.BadParameter(f"unknown role {role!r} (one of: {', '.join(roles)})", param_hint="--role")
    _exec_celery(worker_argv(roles[role], settings, host=host, extra=celery_args), dry_run)


@click.command("beat", context_settings=PASS_THROUGH)
@root_option
@click.option(
    "--schedule",
    type=click.Path(dir_okay=False),
    default=None,
    help="Beat's local state file (default: in the temp dir, never the shared data folder).",
)
@click.option("--dry-run", is_flag=True, help="Print the celery command instead of running it.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(schedule: str | None, dry_run: bool, celery_args: tuple[str, ...]) -> None:
    """Run Celery beat: execs `celery -A t0dqm beat -s <local file> --enable-remote-control
    -n beat.<flavour>.<pid>@<host>` (answers `celery inspect ping`); CELERY_ARGS go last."""
    from t0dqm.roles import beat_argv

    _exec_celery(
        beat_argv(config.get(), schedule=Path(schedule) if schedule else None, extra=celery_args), dry_run
    )
