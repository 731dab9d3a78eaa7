"""The Celery application: ``celery -A t0dqm worker|beat|flower|inspect|call``.

Queues are prefixed per flavour (see config.Settings.queue_prefix), so several flavours share a
broker without interfering. Recovery does not rely on the broker's visibility timeout: tasks keep
leases in the catalog and the ``reconcile`` beat task re-enqueues stale work.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis
from celery import Celery
from celery.signals import (
    beat_init,
    celeryd_init,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from kombu import Exchange, Queue

from t0dqm import beat, broker_guard, config, heartbeat
from t0dqm.queues import (  # noqa: F401 - the app's routing, also imported from here
    BASE_QUEUES,
    LONG_QUEUES,
    MODULE_QUEUES,
    SPECIAL_ROUTES,
    all_queues,
    collect_queue,
    queue_name,
    route_for_task,
)
from t0dqm.servers import flower_guard

# Every task module; routes are by module (see route_for_task).
TASK_MODULES = (
    "t0dqm.tasks.ops",
    "t0dqm.tasks.reconcile",
    "t0dqm.tasks.receive",
    "t0dqm.tasks.index",
    "t0dqm.tasks.archive",
    "t0dqm.tasks.tape",
    "t0dqm.tasks.cleanup",
    "t0dqm.tasks.collect",
    "t0dqm.tasks.sync",
    "t0dqm.tasks.health",
    "t0dqm.tasks.streamer",
    "t0dqm.tasks.sm",
    "t0dqm.tasks.retention",
    "t0dqm.tasks.gui",
    "t0dqm.tasks.placement",
)

BOUNDED_TRANSPORT = "t0dqm.broker_transport:Transport"
VISIBILITY_TIMEOUT = 4 * 3600  # longer than any task's hard limit; recovery is reconcile's job


def stack_file(settings: config.Settings) -> Path:
    """Where `t0dqm up` records the embedded broker URL for other commands on this host."""
    return settings.flavour_root / "stack.json"


def resolve_broker_url(settings: config.Settings) -> str:
    """The configured broker_url, else the embedded one `t0dqm up` recorded on this host (for inspect,
    call, status), else '' (never a guessed localhost: workers and beat refuse to start without one)."""
    if settings.broker_url:
        return settings.broker_url
    try:
        return str(json.loads(stack_file(settings).read_text())["broker_url"])
    except (FileNotFoundError, KeyError, ValueError):
        return ""


def broker_ssl_options(settings: config.Settings, url: str) -> dict[str, object] | None:
    """redis-py SSL options for a rediss:// URL (configuration table broker_ssl), else None."""
    if not url.startswith("rediss://"):
        return None
    import ssl

    cfg = settings.broker_ssl
    reqs = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}
    options: dict[str, object] = {"ssl_cert_reqs": reqs[cfg.cert_reqs]}
    for key in ("ca_certs", "certfile", "keyfile"):
        if cfg[key]:
            options[f"ssl_{key}"] = cfg[key]
    return options


def redis_client(url: str, timeout: float = 2.0, settings: config.Settings | None = None) -> redis.Redis:
    """A redis-py client on the broker URL with the configured TLS options and short timeouts
    (metrics, queue depths, markers: everything that talks to Redis outside kombu)."""
    if not url:
        raise redis.ConnectionError(broker_guard.NOT_SET)
    options = broker_ssl_options(settings or config.get(), url) or {}
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout, **options)


def configure(app: Celery, settings: config.Settings) -> None:
    broker = resolve_broker_url(settings)
    backend = settings.result_backend or broker
    tasks = settings.tasks
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    prefix = settings.queue_prefix
    app.conf.update(
        broker_url=broker or None,
        # kombu's Redis transport with a bounded pub/sub read (a worker must not hang after a Redis restart)
        broker_transport=BOUNDED_TRANSPORT if broker.startswith(("redis://", "rediss://")) else None,
        result_backend=backend or None,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=tasks.soft_time_limit,
        task_time_limit=tasks.time_limit,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        broker_connection_retry=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_send_task_events=True,
        result_expires=86400,
        task_default_queue=queue_name("ops", settings),
        task_queues=[Queue(q, Exchange(q, type="direct"), routing_key=q) for q in all_queues(settings)],
        task_routes=(
            lambda name, args, kwargs, options, task=None, **kw: {"queue": route_for_task(name, settings)},
        ),
        task_create_missing_queues=True,
        task_default_exchange=queue_name("ops", settings),
        task_default_routing_key=queue_name("ops", settings),
        worker_hijack_root_logger=False,
        enable_utc=True,
        timezone="UTC",
        beat_schedule_filename=str(settings.work_dir / f"{prefix}celerybeat-schedule"),
        # beat on several hosts, one elected sender (catalog lease; see t0dqm.beat_election)
        beat_scheduler="t0dqm.beat_election:ElectedScheduler",
        # the flavour keys of the Redis keyspace (locks, metrics, heartbeats)
        t0dqm_prefix=f"t0dqm:{settings.flavour}:",
        broker_use_ssl=broker_ssl_options(settings, broker),
        redis_backend_use_ssl=broker_ssl_options(settings, backend),
    )
    app.conf.beat_schedule = beat.build(settings)


flower_guard.check()  # a Flower process bound beyond loopback without auth exits here
app = Celery("t0dqm", include=list(TASK_MODULES))
try:
    configure(app, config.get())
except config.ConfigError as exc:  # a worker, beat or Flower must not start on a bad configuration
    raise SystemExit(f"t0dqm: configuration error: {exc}") from None


def schema_guard() -> None:
    """Refuse to start a worker or beat on a catalog at another schema revision (SQLite: create it)."""
    from t0dqm.catalog.db import Catalog
    from t0dqm.catalog.schema import SchemaMismatch

    catalog = Catalog(config.get().catalog_url)
    try:
        catalog.ensure_schema()
    except SchemaMismatch as exc:
        raise SystemExit(f"t0dqm: refusing to start: {exc}") from None
    finally:
        catalog.dispose()  # no connection inherited by forked children


@celeryd_init.connect
def _worker_needs_broker(**_kwargs: object) -> None:
    broker_guard.check("worker")


@worker_init.connect
def _worker_init(**_kwargs: object) -> None:
    schema_guard()
    heartbeat.ensure(role="worker")


@beat_init.connect
def _beat_init(**_kwargs: object) -> None:
    broker_guard.check("beat")
    schema_guard()
    heartbeat.ensure(role="beat")


@worker_process_init.connect
def _after_fork(**_kwargs: object) -> None:
    """A pool child: own identity and heartbeat (the parent's connections are left alone)."""
    heartbeat.ensure(role="worker-child")


@worker_process_shutdown.connect
@worker_shutdown.connect
def _stop_heartbeats(**_kwargs: object) -> None:
    heartbeat.stop_all()


def reload(settings: config.Settings) -> None:
    """Re-point the app at new settings (tests, benchmarks) and drop every cached connection, so
    nothing keeps publishing to, or reading results from, the previous broker."""
    config.reset(settings)
    configure(app, settings)
    from kombu import pools

    if app._pool is not None:
        app._pool.force_close_all()
        app._pool = None
    pools.reset()  # kombu's global connection/producer pools, keyed by URL, would hand back closed ones
    app.amqp._producer_pool = None
    try:
        del app._local.backend
    except AttributeError:
        pass
