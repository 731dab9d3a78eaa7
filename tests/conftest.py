"""Fixtures that start real services: redis-server, an XRootD server, PostgreSQL databases,
and an in-process Celery worker bound to the t0dqm app."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from t0dqm import config
from t0dqm.dev import services

PG_ADMIN_URL = os.environ.get("T0DQM_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    service = services.start_redis(tmp_path_factory.mktemp("redis"), persistent=False)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def xrootd_server() -> Iterator[services.Service]:
    # Not under pytest's 0700 tmp dirs: the server runs as the 'xrootd' user when we are root.
    base = Path(tempfile.mkdtemp(prefix="t0dqm-xrootd-"))
    service = services.start_xrootd(base)
    yield service
    service.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def xrootd_dir(xrootd_server: services.Service) -> str:
    """A fresh directory URL on the XRootD server: root://127.0.0.1:P//store/<unique>."""
    return f"{xrootd_server.url}/store/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"t0dqm_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    from t0dqm.catalog.db import reset_catalogs

    reset_catalogs()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A catalog URL per backend: a SQLite file in tmp_path, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite'}"
    return request.getfixturevalue("pg_url")


def make_settings(root: Path, **overrides: str) -> config.Settings:
    env = {"T0DQM_ROOT": str(root), "T0DQM_FLAVOUR": "dev"}
    env.update({f"T0DQM_{k.upper()}": v for k, v in overrides.items()})
    return config.load(None, environ=env)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[config.Settings]:
    """Settings rooted in tmp_path (SQLite catalog, local archive dir), made current."""
    from t0dqm.catalog.db import reset_catalogs

    current = make_settings(tmp_path / "root")
    config.reset(current)
    yield current
    reset_catalogs()
    config.reset(None)


@pytest.fixture
def stack_env() -> dict[str, str]:
    """Extra T0DQM_* settings for celery_stack (override this fixture in a test module)."""
    return {}


@pytest.fixture
def celery_stack(
    tmp_path: Path, redis_server: services.Service, stack_env: dict[str, str]
) -> Iterator[config.Settings]:
    """The t0dqm app pointed at the test Redis and a tmp root, with a worker thread consuming every queue."""
    import redis as redislib
    from celery.contrib.testing.worker import start_worker

    from t0dqm import celery as t0celery
    from t0dqm.catalog.db import reset_catalogs

    redislib.Redis.from_url(redis_server.url).flushall()
    current = make_settings(tmp_path / "root", broker_url=redis_server.url, **stack_env)
    t0celery.reload(current)
    app = t0celery.app
    app.loader.import_task_module("celery.contrib.testing.tasks")
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        shutdown_timeout=30,
        queues=t0celery.all_queues(current),
    ):
        yield current
    reset_catalogs()
    config.reset(None)
