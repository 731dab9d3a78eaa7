"""Hardening, each with a test: JSON-only messages through an authenticated Redis, Redis over TLS
(rediss://) end to end, Flower refuses to run open beyond loopback,
time limits on every task, and configuration errors that stop `t0dqm up` and a worker with a clear message.

Redis, the workers and Flower are real processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redislib

from t0dqm import config
from t0dqm.dev import services
from t0dqm.servers import flower_guard
from tests.conftest import make_settings
from tests.integration.workerproc import REPO, point_app, t0dqm_env, worker

PASSWORD = "s3cret-t0dqm-pw"


def _round_trip(settings: config.Settings, root: Path, log: Path, **env: str) -> str:
    """A noop through a worker subprocess configured by ``env``; returns the worker log."""
    from t0dqm.tasks.ops import noop, step

    point_app(settings)
    try:
        with worker(root, "ops", log, **env) as proc:
            assert noop.apply_async(args=({"via": "worker"},)).get(timeout=90) == {"via": "worker"}
            assert step.apply_async(args=(41,)).get(timeout=30) == 42
            assert proc.poll() is None
        return log.read_text()
    finally:
        config.reset(None)


# -- JSON only, through Redis with a password -----------------------------------------------------------


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[services.Service]:
    service = services.start_redis(tmp_path / "redis-pw", password=PASSWORD, persistent=False)
    yield service
    service.stop()


def test_redis_password_and_pickle_refused(redis_with_password: services.Service, tmp_path: Path) -> None:
    """A worker process on a password-protected Redis: round trip works; a pickled message is refused
    (never executed, no result) and the worker lives on; without the password nothing connects."""
    from kombu import Connection

    from t0dqm.tasks.ops import noop

    url = redis_with_password.url
    assert f":{PASSWORD}@" in url
    with pytest.raises(redislib.AuthenticationError):
        redislib.Redis.from_url(url.replace(f":{PASSWORD}@", "")).set("x", 1)
    with pytest.raises(redislib.AuthenticationError):
        redislib.Redis.from_url(url.replace(PASSWORD, "wrong")).ping()
    root = tmp_path / "root"
    settings = make_settings(root, broker_url=url)
    point_app(settings)
    log = tmp_path / "worker.log"
    try:
        with worker(root, "ops", log, T0DQM_BROKER_URL=url) as proc:
            assert noop.apply_async(args=(1,)).get(timeout=90) == 1
            with Connection(url) as conn:
                conn.Producer(serializer="pickle").publish(
                    {
                        "task": "t0dqm.tasks.ops.noop",
                        "id": "pickled-hardening",
                        "args": [{"pickled": True}],
                        "kwargs": {},
                    },
                    exchange="ops",
                    routing_key="ops",
                    serializer="pickle",
                    headers={
                        "task": "t0dqm.tasks.ops.noop",
                        "id": "pickled-hardening",
                        "lang": "py",
                        "argsrepr": "",
                        "kwargsrepr": "",
                    },
                )
            assert noop.apply_async(args=(2,)).get(timeout=60) == 2  # sent after the pickle: still served
            assert proc.poll() is None
        assert redislib.Redis.from_url(url).get("celery-task-meta-pickled-hardening") is None
        text = log.read_text()
        assert "ContentDisallowed" in text or "Refusing to deserialize" in text, text[-2000:]
    finally:
        config.reset(None)


# -- Redis over TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca_and_server_cert(folder: Path, name: str = "ca") -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost signed by it (openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.crt",
        "-days",
        "2",
        "-subj",
        f"/CN=t0dqm test {name}",
        cwd=folder,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
        cwd=folder,
    )
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        f"{name}.crt",
        "-CAkey",
        f"{name}.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        cwd=folder,
    )
    return {"ca": folder / f"{name}.crt", "cert": folder / "server.crt", "key": folder / "server.key"}


@pytest.fixture
def redis_tls(tmp_path: Path) -> Iterator[tuple[str, dict[str, Path]]]:
    """redis-server with TLS only (no plain port) and a password; yields (rediss URL, cert paths)."""
    certs = make_ca_and_server_cert(tmp_path / "tls")
    port = services.free_port()
    data = tmp_path / "redis-tls"
    data.mkdir()
    proc = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(certs["cert"]),
            "--tls-key-file",
            str(certs["key"]),
            "--tls-ca-cert-file",
            str(certs["ca"]),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
            "--logfile",
            str(data / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        services.wait_for_port(port)
        yield f"rediss://:{PASSWORD}@127.0.0.1:{port}/0", certs
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_over_tls_end_to_end(redis_tls: tuple[str, dict[str, Path]], tmp_path: Path) -> None:
    url, certs = redis_tls
    ca = str(certs["ca"])
    # the server speaks TLS only, and only to clients that trust its CA
    assert redislib.Redis.from_url(url, ssl_cert_reqs="required", ssl_ca_certs=ca).ping()
    other = make_ca_and_server_cert(tmp_path / "other", name="other")
    with pytest.raises(redislib.ConnectionError):
        redislib.Redis.from_url(url, ssl_cert_reqs="required", ssl_ca_certs=str(other["ca"])).ping()
    root = tmp_path / "root"
    settings = make_settings(root, broker_url=url, broker_ssl__ca_certs=ca)
    from t0dqm.celery import broker_ssl_options

    assert broker_ssl_options(settings, url) == {
        "ssl_cert_reqs": __import__("ssl").CERT_REQUIRED,
        "ssl_ca_certs": ca,
    }
    _round_trip(settings, root, tmp_path / "worker.log", T0DQM_BROKER_URL=url, T0DQM_BROKER_SSL__CA_CERTS=ca)
    # the stack's own clients (readiness ping, queue depths) use the same TLS options
    from t0dqm.dev.stack import LocalStack
    from t0dqm.tasks.queued import queue_depths

    stack_settings = make_settings(tmp_path / "stack", broker_url=url, broker_ssl__ca_certs=ca)
    stack = LocalStack(stack_settings, extra_env={"T0DQM_BROKER_SSL__CA_CERTS": ca})
    try:
        stack.start(concurrency=1, beat=False, flower=False)
        stack.wait_ready(timeout=90)
    finally:
        stack.stop()
    config.reset(stack_settings)
    try:
        assert queue_depths(url, ["ops"]) == {"ops": 0}
    finally:
        config.reset(None)


def test_broker_ssl_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="broker_ssl.cert_reqs"):
        config.load(None, environ={"T0DQM_BROKER_SSL__CERT_REQS": "sometimes"})
    with pytest.raises(config.ConfigError, match="broker_ssl.ca_certs: no such file"):
        config.load(None, environ={"T0DQM_BROKER_SSL__CA_CERTS": str(tmp_path / "missing.pem")})
    from t0dqm.celery import broker_ssl_options

    plain = config.load(None, environ={})
    assert broker_ssl_options(plain, "redis://127.0.0.1:6379/0") is None


# -- Flower: no auth, no start beyond loopback -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "refused"),
    [
        (["celery", "-A", "t0dqm", "flower", "--address=0.0.0.0"], {}, True),
        (["celery", "-A", "t0dqm", "flower"], {}, True),  # Flower's default address is every interface
        (["celery", "-A", "t0dqm", "flower", "--address", "10.1.2.3"], {}, True),
        (["celery", "-A", "t0dqm", "flower"], {"FLOWER_ADDRESS": "0.0.0.0"}, True),  # noqa: S104 - refused
        (["celery", "-A", "t0dqm", "flower", "--address=0.0.0.0", "--basic-auth= "], {}, True),
        (["celery", "-A", "t0dqm", "flower", "--address=0.0.0.0", "--basic-auth=u:p"], {}, False),
        (["celery", "-A", "t0dqm", "flower", "--address=0.0.0.0"], {"FLOWER_BASIC_AUTH": "u:p"}, False),
        (["celery", "-A", "t0dqm", "flower", "--address=0.0.0.0", "--auth=.*@cern.ch"], {}, False),
        (["celery", "-A", "t0dqm", "flower", "--address=127.0.0.1"], {}, False),
        (["celery", "-A", "t0dqm", "flower", "--address=localhost"], {}, False),
        (["celery", "-A", "t0dqm", "worker", "--hostname=flower"], {}, False),  # not a Flower process
        (["celery", "-A", "t0dqm", "worker", "-Q", "ops"], {}, False),
    ],
)
def test_flower_guard_rules(argv: list[str], env: dict[str, str], refused: bool) -> None:
    why = flower_guard.problem(argv, env)
    assert (why is not None) == refused, why
    if refused:
        assert "without authentication" in why and "--basic-auth" in why


def _flower(root: Path, broker: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "t0dqm", "flower", *args],
        cwd=REPO,
        env=t0dqm_env(root, T0DQM_BROKER_URL=broker),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_flower_refuses_open_start_and_runs_with_auth(redis_server: services.Service, tmp_path: Path) -> None:
    port = services.free_port()
    proc = _flower(tmp_path / "root", redis_server.url, "--address=0.0.0.0", f"--port={port}")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == flower_guard.EXIT_STATUS, err.decode()[-2000:]
    assert b"refusing to start Flower on 0.0.0.0 without authentication" in err
    proc = _flower(
        tmp_path / "root", redis_server.url, "--address=0.0.0.0", f"--port={port}", "--basic-auth=u:p"
    )
    try:
        services.wait_for_port(port, timeout=90)
        assert proc.poll() is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=10) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/workers", timeout=10)
        assert denied.value.code == 401
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(10)


# -- time limits on every task -------------------------------------------------------------------------------


def test_every_task_and_beat_entry_has_time_limits() -> None:
    """Beyond test_celery_app's check: every task module is loaded, so no task escapes the check, and
    every beat entry names a registered task (which therefore has limits)."""
    import importlib

    from t0dqm import celery as t0celery

    for module in t0celery.TASK_MODULES:
        importlib.import_module(module)
    tasks = {n: t for n, t in t0celery.app.tasks.items() if n.startswith("t0dqm.")}
    assert len(tasks) >= 20
    long_limit = config.DEFAULTS["tasks"]["long_time_limit"]
    for name, task in tasks.items():
        assert task.soft_time_limit and task.time_limit, f"{name} has no explicit time limits"
        assert 0 < task.soft_time_limit < task.time_limit <= long_limit, name
    for entry in t0celery.app.conf.beat_schedule.values():
        assert entry["task"] in tasks, entry


# -- configuration validated at start-up --------------------------------------------------------------------

BAD_CONFIG = [
    ({"T0DQM_QUOTA__ONLINE_DATA": "-5"}, "quota.online_data must be a positive integer"),
    ({"T0DQM_ARCHIVE_ENDPOINT": "http://tape.example/x"}, "archive_endpoint must be root://host//path"),
    ({"T0DQM_BROKER_URL": "http://127.0.0.1:1/"}, "broker_url has an unsupported scheme"),
    ({"T0DQM_TIMEOUTS__COPY": "0"}, "timeouts.copy must be a number >= 1"),
]


@pytest.mark.parametrize(("env", "message"), BAD_CONFIG, ids=[next(iter(e)) for e, _m in BAD_CONFIG])
def test_bad_configuration_stops_up(env: dict[str, str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "t0dqm", "up", "--no-flower"],
        cwd=REPO,
        timeout=120,
        env=t0dqm_env(tmp_path / "root", **env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert f"configuration error: {message}" in proc.stderr, proc.stderr
    assert not (tmp_path / "root" / "dev" / "stack.json").exists()  # nothing was started


@pytest.mark.parametrize(("env", "message"), BAD_CONFIG[:2], ids=["quota", "endpoint"])
def test_bad_configuration_stops_a_worker(env: dict[str, str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "t0dqm", "worker", "-Q", "ops"],
        cwd=REPO,
        timeout=120,
        env=t0dqm_env(tmp_path / "root", T0DQM_BROKER_URL="redis://127.0.0.1:1/0", **env),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert f"t0dqm: configuration error: {message}" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr


def test_more_keys_are_validated() -> None:
    for env, message in [
        ({"T0DQM_RECEIVE__BATCH": "0"}, "receive.batch must be a number >= 1"),
        ({"T0DQM_RECONCILE__STALE_SECONDS": "-1"}, "reconcile.stale_seconds"),
        ({"T0DQM_ARCHIVE__STAGE_MAX_TRIES": "0"}, "archive.stage_max_tries"),
        ({"T0DQM_TASKS__LONG_SOFT_TIME_LIMIT": "5000"}, "tasks.long_soft_time_limit must be below"),
    ]:
        with pytest.raises(config.ConfigError, match=__import__("re").escape(message)):
            config.load(None, environ=env)
    data = config._deep_merge(config.DEFAULTS, {"quota": {"online_dat": 5}})
    with pytest.raises(config.ConfigError, match="quota.online_dat is not a file class"):
        config._validate(data)
    data = config._deep_merge(config.DEFAULTS, {"deletion": {"dry_run": "yes"}})
    with pytest.raises(config.ConfigError, match="deletion.dry_run must be true or false"):
        config._validate(data)
