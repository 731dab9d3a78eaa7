"""A real Rucio server for the tests: rucio 41 from PyPI in its own venv, PostgreSQL, no Docker.

The server package pins versions (SQLAlchemy, redis, ...) that t0dqm's venv does not use, so it lives in
``.venv-rucio`` (``make rucio-venv``; ``T0DQM_RUCIO_VENV`` points elsewhere). ``start`` writes a
rucio.cfg and an alembic.ini, bootstraps a fresh database with rucio's own ``tools/bootstrap.py``
(tables, root account, userpass identity), and serves ``rucio.web.rest.flaskapi.v1.main.application``
with werkzeug on a free loopback port. The small policy package in ``rucio_policy/`` widens the generic
name patterns to CMS names (``T0_CH_CERN_Disk``, ``/PD/Era-v1/RAW#block``).

``RucioServer.drive`` runs ``rucio_drive.py`` in the server's venv: rucio core calls that no REST
endpoint offers (a lock to STUCK through ``failed_transfer``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from t0dqm.dev import services

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
POLICY_DIR = HERE / "rucio_policy"
DRIVER = HERE / "rucio_drive.py"
POLICY_PACKAGE = "t0dqm_rucio_policy"


def rucio_venv() -> Path:
    venv = Path(os.environ.get("T0DQM_RUCIO_VENV") or REPO / ".venv-rucio")
    python = venv / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"no Rucio server venv at {venv}: run `make rucio-venv` (or set T0DQM_RUCIO_VENV)")
    return venv


def _config(db_url: str, alembic_ini: Path, logdir: Path, password: str) -> str:
    return f"""[common]
logdir = {logdir}
loglevel = WARNING

[database]
default = {db_url}
pool_reset_on_return = rollback
echo = 0

[alembic]
cfg = {alembic_ini}

[bootstrap]
userpass_identity = t0dqm-test
userpass_pwd = {password}
userpass_email = t0dqm-test@localhost

[policy]
package = {POLICY_PACKAGE}
permission = generic
schema = generic
lfn2pfn_algorithm_default = identity

[api]
endpoints = accounts, auth, config, dids, identities, locks, ping, replicas, requests, rses, rules, scopes

[trace]
tracedir = {logdir}/trace

[monitor]
enable_metrics = False

[conveyor]
scheme = root,davs,https
transfertool = fts3
"""


def _alembic(db_url: str, server_site: Path) -> str:
    # rucio's template, with one version_table_schema line (the template repeats it) and an absolute
    # script location
    return f"""[alembic]
sqlalchemy.url = {db_url}
script_location = {server_site / "rucio" / "db" / "sqla" / "migrate_repo"}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""


@dataclass
class RucioServer:
    url: str
    account: str
    username: str
    password: str
    env: dict[str, str]
    python: str
    service: services.Service
    db_name: str

    def drive(self, action: str, **args: object) -> object:
        """Run one rucio core action in the server's venv (see rucio_drive.py); returns its JSON result."""
        proc = subprocess.run(
            [self.python, str(DRIVER), action, json.dumps(args)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"rucio_drive {action} failed: {proc.stderr[-3000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        self.service.stop()


def _site_packages(python: str) -> Path:
    out = subprocess.run(
        [python, "-c", "import rucio, os; print(os.path.dirname(os.path.dirname(rucio.__file__)))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return Path(out.stdout.strip())


def start(base: Path, pg_admin_url: str) -> RucioServer:
    """Fresh database, bootstrap, server on a free loopback port; ready when /ping answers."""
    from sqlalchemy import create_engine, text

    venv = rucio_venv()
    python = str(venv / "bin" / "python")
    base.mkdir(parents=True, exist_ok=True)
    db_name = f"t0dqm_rucio_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db_name}"'))
    admin.dispose()
    server_db = pg_admin_url.rsplit("/", 1)[0].replace("+psycopg2", "+psycopg") + f"/{db_name}"
    site = _site_packages(python)
    password = secrets.token_hex(12)
    (base / "logs").mkdir(exist_ok=True)
    alembic_ini = base / "alembic.ini"
    alembic_ini.write_text(_alembic(server_db, site))
    cfg = base / "rucio.cfg"
    cfg.write_text(_config(server_db, alembic_ini, base / "logs", password))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUCIO_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(RUCIO_CONFIG=str(cfg), RUCIO_HOME=str(base), PYTHONPATH=str(POLICY_DIR))
    bootstrap = venv / "rucio" / "tools" / "bootstrap.py"
    proc = subprocess.run(
        [python, str(bootstrap)], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rucio bootstrap failed: {proc.stderr[-3000:]}")
    port = services.free_port()
    log = open(base / "logs" / "server.log", "wb")  # noqa: SIM115 - kept open for the server's life
    server = subprocess.Popen(
        [
            python,
            "-c",
            (
                "import sys\nfrom werkzeug.serving import run_simple\n"
                "from rucio.web.rest.flaskapi.v1.main import application\n"
                "run_simple('127.0.0.1', int(sys.argv[1]), application, threaded=True)"
            ),
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        # PR_SET_PDEATHSIG has no Popen option; the hook only calls prctl
        preexec_fn=services.die_with_parent,  # noqa: PLW1509 - prctl only
    )
    log.close()
    service = services.Service(
        name="rucio", url=f"http://127.0.0.1:{port}", port=port, proc=server, data_dir=base
    )
    try:
        _wait_ping(service.url, server)
    except BaseException:
        service.stop()
        raise
    return RucioServer(
        url=service.url,
        account="root",
        username="t0dqm-test",
        password=password,
        env=env,
        python=python,
        service=service,
        db_name=db_name,
    )


def _wait_ping(url: str, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rucio server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def drop(server: RucioServer, pg_admin_url: str) -> None:
    from sqlalchemy import create_engine, text

    server.stop()
    admin = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{server.db_name}" WITH (FORCE)'))
    admin.dispose()


if __name__ == "__main__":  # manual use: python tests/integration/rucio_server.py /tmp/rucio-test
    srv = start(
        Path(sys.argv[1]),
        os.environ.get("T0DQM_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
    )
    print(json.dumps({"url": srv.url, "username": srv.username, "password": srv.password}))
    try:
        srv.service.proc.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        drop(srv, os.environ.get("T0DQM_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"))
