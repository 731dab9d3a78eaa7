"""The broker transport after a Redis restart (finding 2 of the multi-host chaos runs): the pub/sub read
kombu does when its socket turns readable is bounded, and a real `celery -A t0dqm worker` answers ping
and consumes again once Redis is back. Real Redis; end states polled with generous deadlines."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery
from kombu import Connection
from kombu.exceptions import KombuError

from t0dqm.celery import BOUNDED_TRANSPORT
from t0dqm.dev import services
from tests.integration.test_heartbeat import wait_for
from tests.integration.workerproc import worker


def _receive_in_thread(channel: object, deadline: float = 60.0) -> tuple[bool, list[object]]:
    """Run channel._receive_one(subclient) as kombu's event loop does on a readable socket; (returned
    before the deadline, results)."""
    out: list[object] = []
    thread = threading.Thread(
        target=lambda: out.append(channel._receive_one(channel.subclient)),  # type: ignore[attr-defined]
        daemon=True,
    )
    thread.start()
    thread.join(deadline)
    return not thread.is_alive(), out


def test_a_pubsub_read_with_nothing_to_read_returns(redis_server: services.Service) -> None:
    """Since redis-py 8 a blocking pub/sub read ignores socket_timeout: the t0dqm transport bounds it by
    socket_timeout, and still delivers what is published."""
    options = {"socket_timeout": 0.5, "health_check_interval": 25, "retry_on_timeout": True}
    with Connection(redis_server.url, transport=BOUNDED_TRANSPORT, transport_options=options) as conn:
        channel = conn.default_channel
        channel.subclient.psubscribe("/0.t0dqm-probe/*")  # kombu's fanout naming
        assert channel.subclient.parse_response()[0] == b"psubscribe"
        returned, out = _receive_in_thread(channel)
        assert returned and out == [None]  # nothing there: kombu goes on (stock: waits for ever)

        conn.default_channel.client.publish("/0.t0dqm-probe/x", '{"hello": 1}')
        delivered: list[object] = []
        channel.connection._deliver = lambda message, queue: delivered.append((message, queue))  # type: ignore[method-assign]
        channel._fanout_to_queue["t0dqm-probe"] = "probe-queue"
        returned, out = _receive_in_thread(channel)
        assert returned and out == [True] and delivered == [({"hello": 1}, "probe-queue")]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[services.Service]:
    service = services.start_redis(tmp_path / "redis", persistent=False)
    yield service
    service.stop()


def test_the_pubsub_read_after_a_redis_restart_returns(own_redis: services.Service, tmp_path: Path) -> None:
    """The finding's path: Redis restarts under a subscribed pub/sub connection, the socket turns
    readable (EOF), kombu reads; redis-py reconnects and re-subscribes inside that read, and the read
    returns. (Stock kombu returns here too, on the re-subscription's reply; it waits for ever when that
    reply does not come, the case the first test pins down: this one guards the reconnect path through
    the bounded wrapper.)"""
    options = {"socket_timeout": 0.5, "health_check_interval": 25, "retry_on_timeout": True}
    with Connection(own_redis.url, transport=BOUNDED_TRANSPORT, transport_options=options) as conn:
        channel = conn.default_channel
        channel.subclient.psubscribe("/0.t0dqm-probe/*")
        assert channel.subclient.parse_response()[0] == b"psubscribe"
        own_redis.stop()
        own_redis = services.start_redis(tmp_path / "redis", port=own_redis.port, persistent=False)
        returned, out = _receive_in_thread(channel)
        assert returned, "the pub/sub read still waits after the restart"
        assert out in (
            [None],
            [],
        )  # nothing delivered; [] when it raised a connection error (kombu reconnects)
    own_redis.stop()


def test_a_worker_answers_ping_and_consumes_after_redis_restarts(
    own_redis: services.Service, tmp_path: Path
) -> None:
    # a client app of its own: the t0dqm app of this test process keeps pools of earlier tests
    client = Celery("restart-probe", broker=own_redis.url, backend=own_redis.url)
    client.conf.update(
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
    )

    def answers() -> bool:
        try:
            return bool(client.control.ping(timeout=1.0))
        except (redis.RedisError, OSError, KombuError):  # this test's own connection, re-made
            return False

    try:
        with worker(
            tmp_path / "root", "ops", tmp_path / "worker.log", T0DQM_BROKER_URL=own_redis.url
        ) as proc:
            assert wait_for(answers, 180), (tmp_path / "worker.log").read_text()[-3000:]
            for _restart in range(2):
                own_redis.stop()
                own_redis = services.start_redis(tmp_path / "redis", port=own_redis.port, persistent=False)
                assert wait_for(answers, 240), (tmp_path / "worker.log").read_text()[-3000:]
                assert proc.poll() is None
            result = client.send_task("t0dqm.tasks.ops.noop", args=("after the restarts",), queue="ops")
            assert result.get(timeout=120) == "after the restarts"
    finally:
        own_redis.stop()
        client.close()
