"""The Celery app through a real Redis: round trip, chains, JSON-only, configuration of every task."""

from __future__ import annotations

import pickle

import pytest
import redis

from t0dqm import config


def test_round_trip_and_chain(celery_stack: config.Settings) -> None:
    from celery import chain

    from t0dqm.tasks.ops import noop, step

    assert noop.delay({"a": [1, 2]}).get(timeout=20) == {"a": [1, 2]}
    assert chain(step.s(0), step.s(), step.s()).apply_async().get(timeout=20) == 3


def test_reliability_settings() -> None:
    from t0dqm.celery import app

    conf = app.conf
    assert conf.accept_content == ["json"] and conf.result_accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.worker_cancel_long_running_tasks_on_connection_loss
    assert conf.worker_send_task_events and conf.broker_connection_retry_on_startup
    vt = conf.broker_transport_options["visibility_timeout"]
    assert vt == conf.result_backend_transport_options["visibility_timeout"]
    for name, task in app.tasks.items():
        if name.startswith("t0dqm."):
            assert task.soft_time_limit and task.time_limit, f"{name} has no time limits"
            assert task.soft_time_limit < task.time_limit < vt, name
            assert task.acks_late, name


def test_routes_keep_queues_apart() -> None:
    from t0dqm.celery import route_for_task

    dev = config.load(None, environ={"T0DQM_FLAVOUR": "dev"})
    online = config.load(None, environ={"T0DQM_FLAVOUR": "online"})
    assert route_for_task("t0dqm.tasks.receive.receive_file", dev) == "receive"
    assert route_for_task("t0dqm.tasks.index.merge", dev) == "index-merge"
    assert route_for_task("t0dqm.tasks.index.import_file", online) == "online.index"
    assert route_for_task("t0dqm.tasks.tape.stage", online) == "online.tape"


def test_pickled_message_is_refused(celery_stack: config.Settings, redis_server) -> None:
    """A message in pickle format never executes: the worker rejects content it does not accept."""
    from kombu import Connection

    from t0dqm.celery import app
    from t0dqm.tasks.ops import noop

    marker = {"pickled": True}
    with Connection(app.conf.broker_url) as conn:
        producer = conn.Producer(serializer="pickle")
        producer.publish(
            {"task": "t0dqm.tasks.ops.noop", "id": "pickled-1", "args": [marker], "kwargs": {}},
            exchange="ops",
            routing_key="ops",
            serializer="pickle",
            headers={
                "task": "t0dqm.tasks.ops.noop",
                "id": "pickled-1",
                "lang": "py",
                "argsrepr": "",
                "kwargsrepr": "",
            },
        )
    # A JSON task sent after it still runs: the worker survived the bad message.
    assert noop.delay(1).get(timeout=20) == 1
    backend = redis.Redis.from_url(redis_server.url)
    assert backend.get("celery-task-meta-pickled-1") is None
    assert pickle.dumps(marker)  # the payload itself was a valid pickle


def test_config_env_overrides_and_validation(tmp_path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('flavour = "offline"\n[quota]\nonline_data = 5\n')
    s = config.load(cfg, environ={"T0DQM_QUOTA__OFFLINE_DATA": "7", "T0DQM_ROOT": str(tmp_path)})
    assert s.flavour == "offline" and s["quota"]["online_data"] == 5 and s["quota"]["offline_data"] == 7
    assert s.queue_prefix == "offline." and s.repository == tmp_path / "offline" / "data"
    with pytest.raises(config.ConfigError, match="quota.online_data"):
        config.load(None, environ={"T0DQM_QUOTA__ONLINE_DATA": "-1"})
    with pytest.raises(config.ConfigError, match="archive_endpoint"):
        config.load(None, environ={"T0DQM_ARCHIVE_ENDPOINT": "http://nope"})
    with pytest.raises(config.ConfigError, match="flavour"):
        config.load(None, environ={"T0DQM_FLAVOUR": "prod"})
    bad = tmp_path / "bad.toml"
    bad.write_text("flavour = \n")
    with pytest.raises(config.ConfigError, match="invalid TOML"):
        config.load(bad, environ={})
