"""Worker roles: the roles file is validated, queue names follow the flavour, command lines are built
for `celery` with the caller's arguments last; the broker guard's decision."""

from __future__ import annotations

from pathlib import Path

import pytest

from t0dqm import broker_guard, config, roles
from t0dqm.celery import BASE_QUEUES


def settings(**env: str) -> config.Settings:
    return config.load(None, environ={f"T0DQM_{k.upper()}": v for k, v in env.items()})


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roles.toml"
    path.write_text(text)
    return path


def test_shipped_roles_file_loads() -> None:
    loaded = roles.load_roles()
    assert {
        "receive",
        "index",
        "index-merge",
        "archive",
        "tape",
        "cleanup",
        "sync",
        "ops",
        "collect",
        "all",
    } == set(loaded)
    assert loaded["index-merge"].concurrency == 1


@pytest.mark.parametrize(("flavour", "prefix"), [("dev", ""), ("offline", "offline."), ("online", "online.")])
def test_queue_names_follow_the_flavour(flavour: str, prefix: str) -> None:
    loaded = roles.load_roles()
    s = settings(flavour=flavour, host="prod7")
    assert loaded["receive"].queue_names(s) == [f"{prefix}receive"]
    assert loaded["collect"].queue_names(s) == [f"{prefix}collect.prod7"]
    assert loaded["collect"].queue_names(s, "prod9") == [f"{prefix}collect.prod9"]
    assert loaded["all"].queue_names(s) == [prefix + q for q in BASE_QUEUES]


def test_queue_prefix_setting_wins() -> None:
    s = settings(flavour="offline", queue_prefix="t0.")
    assert roles.load_roles()["tape"].queue_names(s) == ["t0.tape"]


def test_worker_argv_extra_last() -> None:
    role = roles.Role("archive", ("archive", "tape"), 2, 1, ("-E",), "")
    argv = roles.worker_argv(role, settings(flavour="relval"), pid=42, extra=("-c", "8"))
    assert argv == [
        "-A",
        "t0dqm",
        "worker",
        "-Q",
        "relval.archive,relval.tape",
        "-c",
        "2",
        "--prefetch-multiplier",
        "1",
        "-n",
        "archive.relval.42@%h",
        "-E",
        "-c",
        "8",
    ]


def test_beat_argv_local_schedule(tmp_path: Path) -> None:
    s = settings(flavour="offline", root=str(tmp_path / "shared"))
    argv = roles.beat_argv(s, pid=7)
    schedule = Path(argv[argv.index("-s") + 1])
    assert not schedule.is_relative_to(tmp_path / "shared")
    assert argv[argv.index("-n") + 1] == "beat.offline.7@%h" and "--enable-remote-control" in argv


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[r]\nqueues = ["recieve"]\n', "unknown queue 'recieve'"),
        ("[r]\nqueues = []\n", "queues must be a non-empty list"),
        ('[r]\nqueues = ["ops"]\nconcurrency = 0\n', "concurrency must be an integer >= 1"),
        ('[r]\nqueues = ["ops"]\nprefetch = true\n', "prefetch must be an integer >= 1"),
        ('[r]\nqueues = ["ops"]\noptions = "-E"\n', "options must be a list of strings"),
        ('[r]\nqueues = ["ops"]\nconcurency = 2\n', "unknown key 'concurency'"),
        ("r = 1\n", "not a table"),
        ("[r\n", "roles.toml"),
    ],
)
def test_bad_roles_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(roles.RoleError, match=message.replace("[", r"\[")):
        roles.load_roles(write(tmp_path, text))


def test_roles_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, '[only]\nqueues = ["sync"]\n')
    monkeypatch.setenv(roles.ROLES_ENV, str(path))
    assert roles.roles_file() == path and set(roles.load_roles()) == {"only"}


def test_broker_guard_needs_an_explicit_url() -> None:
    assert broker_guard.problem("worker", settings(), {}) is not None
    assert "T0DQM_BROKER_URL" in broker_guard.problem("beat", settings(), {})
    assert broker_guard.problem("worker", settings(broker_url="redis://h:6379/0"), {}) is None
    assert broker_guard.problem("worker", settings(), {"CELERY_BROKER_URL": "redis://h:6379/0"}) is None


def test_cli_dry_run_list_and_unknown_role() -> None:
    from click.testing import CliRunner

    from t0dqm.cli import cli

    runner = CliRunner()
    env = {"T0DQM_FLAVOUR": "offline", "T0DQM_HOST": "prod3"}
    out = runner.invoke(
        cli, ["worker", "--role", "index", "--dry-run", "-c", "8", "--loglevel", "INFO"], env=env
    )
    assert out.exit_code == 0, out.output
    words = out.output.split()
    assert words[:4] == ["celery", "-A", "t0dqm", "worker"] and words[-4:] == [
        "-c",
        "8",
        "--loglevel",
        "INFO",
    ]
    assert words[words.index("-Q") + 1] == "offline.index"
    listing = runner.invoke(cli, ["worker", "--list"], env=env)
    assert "offline.collect.prod3" in listing.output and "offline.index-merge" in listing.output
    bad = runner.invoke(cli, ["worker", "--role", "indx"], env=env)
    assert bad.exit_code == 2 and "unknown role 'indx'" in bad.output
    beat = runner.invoke(cli, ["beat", "--dry-run", "--schedule", "/var/lib/t0dqm/s"], env=env)
    assert beat.output.split()[:6] == ["celery", "-A", "t0dqm", "beat", "-s", "/var/lib/t0dqm/s"]
