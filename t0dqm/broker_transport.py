"""kombu's Redis transport with a bounded pub/sub read (``broker_transport`` of the t0dqm app).

kombu reads its pub/sub connection (fanout exchanges: remote control, ping, broadcast) with
``PubSub.parse_response()``, i.e. ``block=True``, when its event loop finds the socket readable. Since
redis-py 8 (redis/redis-py#4119) a blocking pub/sub read ignores ``socket_timeout`` and waits for
ever. After a Redis restart the socket turns readable (EOF), redis-py reconnects inside that call and
reads again without a timeout; when nothing is published there, or the re-subscription did not happen
(``CLIENT LIST``: ``cmd=NULL sub=0``), the worker's main process waits in that read for good: it
consumes nothing and answers no ping (finding 2 of the multi-host chaos runs).

Here that read waits at most the transport's ``socket_timeout``. kombu only reads when the socket is
readable, so in normal work the data is already there; a read that finds nothing returns None (kombu
goes on), and a broken connection raises, so kombu and Celery reconnect as they do for any lost broker.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

FALLBACK_TIMEOUT = 30.0  # seconds, when the transport has no socket_timeout


class BoundedPubSub:
    """A redis-py PubSub whose blocking ``parse_response`` waits at most ``timeout`` seconds."""

    def __init__(self, pubsub: Any, timeout: float) -> None:
        object.__setattr__(self, "_pubsub", pubsub)
        object.__setattr__(self, "_timeout", timeout)

    def parse_response(self, block: bool = True, timeout: float = 0) -> Any:
        if block:
            return self._pubsub.parse_response(block=False, timeout=self._timeout)
        return self._pubsub.parse_response(block=False, timeout=timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pubsub, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._pubsub, name, value)


class Channel(kombu_redis.Channel):
    def _receive_one(self, c: Any) -> Any:
        return super()._receive_one(BoundedPubSub(c, float(self.socket_timeout or FALLBACK_TIMEOUT)))


class Transport(kombu_redis.Transport):
    Channel = Channel
