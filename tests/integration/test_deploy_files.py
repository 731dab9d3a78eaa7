"""Deployment files run as shipped: every worker and beat command of docker-compose.yml and of the systemd
units, read from the files themselves, is started against a real Redis and PostgreSQL, and each worker
must consume exactly its role's queues under the file's flavour. Also: the compose file validates offline
and keeps its safety settings, and a worker or beat without a broker URL refuses to start."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from t0dqm.broker_guard import EXIT_STATUS
from t0dqm.dev import services

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYSTEMD = ROOT / "ops" / "systemd"
HOST = __import__("socket").gethostname().split(".")[0]
FLOWER_ENV = {"T0DQM_FLOWER_AUTH": "ops:secret"}

# What each role must consume, by base name (the spec; workers/roles.toml must agree).
EXPECTED = {
    "receive": {"receive"},
    "index": {"index"},
    "index-merge": {"index-merge"},
    "archive": {"archive"},
    "tape": {"tape"},
    "cleanup": {"cleanup"},
    "sync": {"sync"},
    "ops": {"ops"},
    "collect": {f"collect.{HOST}"},
    "all": {"receive", "index", "index-merge", "archive", "tape", "cleanup", "sync", "ops"},
}
# Services every compose file must have (the standby beat and merge worker included).
COMPOSE_WORKERS = {
    "worker-receive": "receive",
    "worker-index": "index",
    "worker-index-merge": "index-merge",
    "worker-index-merge-standby": "index-merge",
    "worker-archive": "archive",
    "worker-tape": "tape",
    "worker-cleanup": "cleanup",
    "worker-sync": "sync",
    "worker-ops": "ops",
}
COMPOSE_BEATS = ("beat", "beat-standby")


# -- reading the files -----------------------------------------------------------------------------------


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose (Debian package) is installed by `make test`"
    return subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def compose_services() -> dict[str, dict]:
    result = compose_config({**os.environ, **FLOWER_ENV})
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def unit_service(path: Path) -> dict[str, str]:
    """The [Service] keys of a systemd unit (one value per key; continuation lines joined)."""
    section, keys = "", {}
    text = re.sub(r"\\\n", " ", path.read_text())
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            keys[key.strip()] = value.strip()
    return keys


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a systemd EnvironmentFile."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def systemd_argv(unit: dict[str, str], instance: str, state_dir: Path) -> list[str]:
    """ExecStart with the specifiers expanded and the unit's install paths mapped onto this checkout:
    /opt/t0dqm/.venv/bin -> the test venv, /var/lib/<StateDirectory> -> a tmp dir."""
    line = unit["ExecStart"].replace("%i", instance).replace("%%", "%")
    assert "%" not in line.replace("%%", ""), f"unexpanded specifier in {line!r}"
    argv = shlex.split(line)
    mapped = []
    for raw in argv:
        arg = raw.replace("/opt/t0dqm/.venv/bin/", f"{BIN}/")
        if unit.get("StateDirectory"):
            arg = arg.replace(f"/var/lib/{unit['StateDirectory']}", str(state_dir))
        mapped.append(arg)
    return mapped


def with_host(url: str, host: str, port: int) -> str:
    """``url`` pointed at host:port, its credentials kept."""
    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}{host}:{port}"))


# -- running them ----------------------------------------------------------------------------------------


@dataclass
class Started:
    label: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log: Path
    role: str = ""  # worker role, "" for beat

    def tail(self) -> str:
        return f"--- {self.label}: {shlex.join(self.argv)}\n" + self.log.read_text(errors="replace")[-3000:]


@dataclass
class Launcher:
    tmp: Path
    started: list[Started] = field(default_factory=list)

    def base_env(self, label: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("T0DQM_", "CELERY_", "FLOWER_"))}
        env.pop("BROKER_URL", None)
        tmpdir = self.tmp / "tmp" / label  # what a container or host has of its own (beat's local state)
        tmpdir.mkdir(parents=True, exist_ok=True)
        env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
        return env

    def start(self, label: str, argv: list[str], env: dict[str, str], cwd: Path, role: str = "") -> Started:
        log = self.tmp / f"{label}.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        item = Started(label, argv, env, proc, log, role)
        self.started.append(item)
        return item

    def stop_all(self) -> None:
        for item in self.started:
            if item.proc.poll() is None:
                os.killpg(item.proc.pid, signal.SIGTERM)
        for item in self.started:
            try:
                item.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:  # prefork children, and anything left of a process that did not stop
                os.killpg(item.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if item.proc.poll() is None:
                item.proc.wait(10)
        self.started.clear()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    launch = Launcher(tmp_path)
    yield launch
    launch.stop_all()


@pytest.fixture(scope="module")
def deploy_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    """A Redis with the password the compose file and the documented environment use."""
    url = compose_services()["worker-receive"]["environment"]["T0DQM_BROKER_URL"]
    password = urlsplit(url).password
    assert password, f"the compose broker URL has no password: {url}"
    service = services.start_redis(
        tmp_path_factory.mktemp("deploy-redis"), persistent=False, password=password
    )
    yield service
    service.stop()


def probe(broker: str):
    from celery import Celery

    app = Celery(broker=broker)
    app.conf.update(accept_content=["json"], task_serializer="json", result_serializer="json")
    return app


def wait_for_nodes(
    broker: str,
    workers: list[Started],
    beats: list[Started],
    timeout: float = 300.0,
) -> tuple[dict[int, set[str]], set[str]]:
    """Queues consumed per worker pid, and the beat node names answering ping, once every started
    process answers (fails at once when one exits)."""
    app = probe(broker)
    deadline = time.monotonic() + timeout
    by_pid: dict[int, set[str]] = {}
    beat_nodes: set[str] = set()
    try:
        while True:
            dead = [s for s in workers + beats if s.proc.poll() is not None]
            assert not dead, "exited early:\n" + "\n".join(s.tail() for s in dead)
            # `limit`: return as soon as every started process has replied
            inspect = app.control.inspect(timeout=2.0, limit=len(workers))
            queues = inspect.active_queues() or {}
            stats = inspect.stats() or {}
            by_pid = {stats[n]["pid"]: {q["name"] for q in qs} for n, qs in queues.items() if n in stats}
            pongs = app.control.ping(timeout=2.0, limit=len(workers) + len(beats)) or []
            beat_nodes = {n for reply in pongs for n in reply if n.startswith("beat.")}
            beats_up = all(any(f".{b.proc.pid}@" in n for n in beat_nodes) for b in beats)
            if all(w.proc.pid in by_pid for w in workers) and beats_up:
                return by_pid, beat_nodes
            assert time.monotonic() < deadline, (
                f"not all answered within {timeout} s: workers {sorted(by_pid)}, beats {sorted(beat_nodes)}\n"
                + "\n".join(s.tail() for s in workers + beats)
            )
            time.sleep(0.5)  # poll interval of the wait for the end state
    finally:
        app.close()


def wait_for_beat_leader(beats: list[Started], timeout: float = 120.0) -> int:
    """The pid of the beat holding the flavour's leader lease in the catalog, once one does."""
    from t0dqm import config
    from t0dqm.beat_election import current_leader
    from t0dqm.catalog.db import Catalog

    settings = config.load(None, environ={k: v for k, v in beats[0].env.items() if k.startswith("T0DQM_")})
    catalog = Catalog(settings.catalog_url)
    deadline = time.monotonic() + timeout
    try:
        while (owner := current_leader(catalog, settings)) is None:
            assert time.monotonic() < deadline, "no beat took the leader lease\n" + "\n".join(
                b.tail() for b in beats
            )
            time.sleep(0.5)  # poll interval of the wait for the end state
    finally:
        catalog.dispose()
    return int(owner.split(":")[1])  # host:pid:token:beat


def substituted(env: dict[str, str], broker: str, catalog: str, root: Path) -> dict[str, str]:
    """The file's environment with the connection settings pointed at this test's services (the keys must
    be in the file: we substitute, we do not add)."""
    for key in (
        "T0DQM_FLAVOUR",
        "T0DQM_ROOT",
        "T0DQM_BROKER_URL",
        "T0DQM_CATALOG_URL",
        "T0DQM_ARCHIVE_ENDPOINT",
    ):
        assert key in env, f"{key} is not set by the deployment file"
    port = urlsplit(broker).port
    assert port
    return {
        **env,
        "T0DQM_BROKER_URL": with_host(env["T0DQM_BROKER_URL"], "127.0.0.1", port),
        "T0DQM_CATALOG_URL": catalog,
        "T0DQM_ROOT": str(root),
        "T0DQM_ARCHIVE_ENDPOINT": str(root / "tape"),
    }


def check_roles(by_pid: dict[int, set[str]], workers: list[Started]) -> None:
    for w in workers:
        flavour = w.env["T0DQM_FLAVOUR"]
        prefix = "" if flavour == "dev" else f"{flavour}."
        want = {prefix + q for q in EXPECTED[w.role]}
        assert by_pid[w.proc.pid] == want, (
            f"{w.label} consumes {sorted(by_pid[w.proc.pid])}, not {sorted(want)}"
        )


# -- the tests -------------------------------------------------------------------------------------------


def test_compose_commands_consume_their_flavours_queues(
    launcher: Launcher, deploy_redis: services.Service, pg_url: str, tmp_path: Path
) -> None:
    svcs = compose_services()
    assert set(COMPOSE_WORKERS) | set(COMPOSE_BEATS) | {"migrate"} <= set(svcs)
    t0_services = [
        n for n, s in svcs.items() if s.get("image") == "t0dqm:latest" and n not in ("flower", "migrate")
    ]
    assert sorted(t0_services) == sorted(set(COMPOSE_WORKERS) | set(COMPOSE_BEATS)), t0_services
    root = tmp_path / "data"

    def env_of(name: str) -> dict[str, str]:
        return {
            **launcher.base_env(name),
            **substituted(svcs[name]["environment"], deploy_redis.url, pg_url, root),
        }

    migrate = subprocess.run(
        svcs["migrate"]["command"],
        env=env_of("migrate"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    workers = [
        launcher.start(n, svcs[n]["command"], env_of(n), tmp_path, role)
        for n, role in COMPOSE_WORKERS.items()
    ]
    beats = [launcher.start(n, svcs[n]["command"], env_of(n), tmp_path) for n in COMPOSE_BEATS]
    by_pid, _beats = wait_for_nodes(deploy_redis.url, workers, beats)
    assert {w.env["T0DQM_FLAVOUR"] for w in workers} == {"offline"}
    check_roles(by_pid, workers)
    # the two shipped beats elect one leader between them; the other stays up as the standby
    leader = wait_for_beat_leader(beats)
    assert leader in {b.proc.pid for b in beats} and all(b.proc.poll() is None for b in beats)


def test_systemd_units_consume_their_flavours_queues(
    launcher: Launcher, deploy_redis: services.Service, pg_url: str, tmp_path: Path
) -> None:
    from t0dqm.catalog.db import Catalog

    worker_unit = unit_service(SYSTEMD / "t0dqm-worker@.service")
    beat_unit = unit_service(SYSTEMD / "t0dqm-beat.service")
    documented = SYSTEMD / "t0dqm.env.example"
    for unit in (worker_unit, beat_unit):
        assert unit["EnvironmentFile"] == "/etc/t0dqm/env"  # whose contents t0dqm.env.example documents
    roles = tomllib.loads((ROOT / "workers" / "roles.toml").read_text())
    assert set(roles) == set(EXPECTED)
    root = tmp_path / "data"
    file_env = substituted(env_file(documented), deploy_redis.url, pg_url, root)
    Catalog(pg_url).upgrade()  # `t0dqm db upgrade`, once per release (docs/deployment.md)

    def start(label: str, unit: dict[str, str], instance: str, role: str = "") -> Started:
        env = {**launcher.base_env(label), **file_env}
        state = tmp_path / "state" / label
        state.mkdir(parents=True)
        return launcher.start(label, systemd_argv(unit, instance, state), env, tmp_path, role)

    workers = [start(f"worker@{role}", worker_unit, role, role) for role in roles]
    beats = [start("beat", beat_unit, "")]
    by_pid, _beats = wait_for_nodes(deploy_redis.url, workers, beats)
    assert file_env["T0DQM_FLAVOUR"] == "offline"
    check_roles(by_pid, workers)


def test_worker_and_beat_without_broker_refuse_to_start(tmp_path: Path) -> None:
    """As shipped but with no broker URL: exit 78 naming the setting, even where `t0dqm up` left its
    embedded broker's address (only up/demo/chaos use that)."""
    svcs = compose_services()
    root = tmp_path / "data"
    stack = root / "offline" / "stack.json"
    stack.parent.mkdir(parents=True)
    stack.write_text(json.dumps({"broker_url": "redis://127.0.0.1:1/0"}))
    launch = Launcher(tmp_path)
    for name in ("worker-receive", "beat"):
        env = {
            **launch.base_env(name),
            **svcs[name]["environment"],
            "T0DQM_ROOT": str(root),
            "T0DQM_CATALOG_URL": f"sqlite:///{tmp_path / 'catalog.sqlite'}",
        }
        del env["T0DQM_BROKER_URL"]
        launch.start(name, svcs[name]["command"], env, tmp_path)
    try:
        for item in launch.started:
            assert item.proc.wait(120) == EXIT_STATUS, item.tail()
            out = item.log.read_text()
            assert "T0DQM_BROKER_URL" in out and "broker_url" in out, item.tail()
            assert "Traceback" not in out, item.tail()
    finally:
        launch.stop_all()


def test_roles_file_and_its_documentation_agree() -> None:
    roles = tomllib.loads((ROOT / "workers" / "roles.toml").read_text())
    rows = [
        line.split("|")[1:-1]
        for line in (ROOT / "workers" / "README.md").read_text().splitlines()
        if line.startswith("| ") and not line.startswith("| role") and "---" not in line
    ]
    table = {cells[0].strip(): cells for cells in rows}
    assert set(table) == set(roles)
    for name, role in roles.items():
        assert int(table[name][2]) == role["concurrency"], name
        documented = set(re.findall(r"[\w.{}*-]+", table[name][1].split("(")[0].replace("`", "")))
        assert documented == set(role["queues"]), (name, documented)


def test_compose_validates_with_flower_auth() -> None:
    services_ = compose_services()
    assert {"redis", "postgres", "xrootd", "beat", "flower", "worker-index-merge"} <= set(services_)
    assert "--basic-auth=ops:secret" in services_["flower"]["command"]
    for name, svc in services_.items():
        if name.startswith(("worker-", "beat")) or name in ("flower", "migrate"):
            assert svc["environment"]["T0DQM_CATALOG_URL"].startswith("postgresql")
        if name.startswith(("worker-", "beat")):
            assert svc["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_refuses_flower_without_auth() -> None:
    result = compose_config({k: v for k, v in os.environ.items() if k != "T0DQM_FLOWER_AUTH"})
    assert result.returncode != 0 and "T0DQM_FLOWER_AUTH" in result.stderr


def test_redis_conf_is_durable_and_never_evicts() -> None:
    lines = {
        line.split()[0]: line.split()[1:]
        for line in (ROOT / "ops/redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert lines["appendonly"] == ["yes"]
    assert lines["maxmemory-policy"] == ["noeviction"]


def test_worker_roles_merge_is_single_process() -> None:
    roles = tomllib.loads((ROOT / "workers" / "roles.toml").read_text())
    assert roles["index-merge"]["queues"] == ["index-merge"] and roles["index-merge"]["concurrency"] == 1
