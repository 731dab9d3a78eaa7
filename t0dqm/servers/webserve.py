"""Hosting of t0dqm's HTTP endpoints on aiohttp's low-level server, guarded against slow and hostile clients.

Every endpoint (the upload server, ``t0dqm metrics serve``) gets the same :class:`Limits`:

- an idle timeout: a connection that has not completed its request headers within ``timeout`` seconds is
  closed (aiohttp's keep-alive timer, armed at connection time), and so is a keep-alive connection idle
  that long; handlers wrap every body read in :func:`within` with the same timeout; the TLS handshake has
  the same bound;
- a bound on open connections: beyond ``max_connections`` a new connection gets a plain ``503`` and is closed;
- limits on the request line, on the size of one header and on the number of headers (aiohttp's parser
  answers 400 beyond them);
- after an early answer, at most ``lingering`` seconds spent reading the rest of an unwanted body.

A client that half-closes its side while the server still owes an answer gets it (the body stream of the
current request sees its end, so a truncated body is reported rather than waited for). Request bodies are
never decompressed (no zip bombs). Errors of clients are logged in one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("t0dqm.servers.webserve")

T = TypeVar("T")
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
ErrorResponder = Callable[[int, str], web.Response]
BODY = (
    "t0dqm.body"  # request key: the handler is reading this request's body (see GuardedProtocol.eof_received)
)


@dataclass(frozen=True)
class Limits:
    """Bounds of one endpoint; see the module doc."""

    timeout: float = 30.0
    max_connections: int = 1024
    max_line_size: int = 8190
    max_field_size: int = 8190
    max_headers: int = 64
    lingering: float = 2.0
    read_bufsize: int = 1 << 15
    recv_size: int = 1 << 17

    def __post_init__(self) -> None:
        for name in ("timeout", "max_connections", "max_line_size", "max_field_size", "max_headers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")


class Stalled(Exception):
    """The client sent nothing for the idle timeout."""


async def within(timeout: float, aw: Awaitable[T]) -> T:  # noqa: ASYNC109 - this is the bounded await itself
    """Await ``aw`` for at most ``timeout`` seconds; Stalled otherwise."""
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise Stalled(f"no data from the client for {timeout:g} s") from None


def plain_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


class GuardedProtocol(web.RequestHandler):
    """aiohttp's connection handler with the connection bound, half-close handling and quiet errors."""

    half_closed = False
    headers_seen = False
    guard_server: GuardedServer  # set by GuardedServer.__call__

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self.guard_server
        if hasattr(transport, "max_size"):  # asyncio's plain socket transport: bytes per recv()
            transport.max_size = manager.limits.recv_size
        if manager.open_connections > manager.limits.max_connections:
            log.warning(
                "refusing a connection: %d open (max_connections %d)",
                manager.open_connections,
                manager.limits.max_connections,
            )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 30\r\nConnection: close\r\n"
                b"Content-Length: 12\r\n\r\nServer busy\n"
            )
            self.force_close()

    def data_received(self, data: bytes) -> None:
        """Feed the first request's header block on its own, so that garbage right behind it (a body sent
        without Content-Length) cannot make the parser drop that request: it gets its own answer."""
        if not self.headers_seen:
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                self.headers_seen = True
                if end + 4 < len(data):
                    super().data_received(data[: end + 4])
                    data = data[end + 4 :]
        super().data_received(data)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio's protocol: False = close the transport
        """The client closed its sending side. Idle: close. Otherwise end the body being read and answer."""
        self.half_closed = True
        if self.transport is None or self.transport.get_extra_info("sslcontext") is not None:
            return False  # asyncio's TLS transport closes on EOF whatever we answer
        waiter = getattr(self, "_waiter", None)
        if waiter is not None and not waiter.done():
            return False  # waiting for a request: nothing is owed, close
        for request in self.guard_server.reading.get(self, ()):
            if not request.content.is_eof():
                request.content.feed_eof()
        self.close()  # answer the current request, then close
        return True

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot answer the error")
        if status >= 500 and exc is not None and not isinstance(exc, HttpProcessingError):
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            text = "Internal server error"
        else:
            text = message or (getattr(exc, "message", None) or str(exc) if exc else "Bad request")
            log.warning("bad request from %s: %s %s", request.remote, status, text)
        resp = self.guard_server.error_response(status, str(text).replace("\r", " ").replace("\n", " ")[:300])
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's low-level server making :class:`GuardedProtocol` connections under ``limits``."""

    def __init__(
        self, handler: Handler, limits: Limits, error_response: ErrorResponder = plain_error
    ) -> None:
        super().__init__(
            handler,
            keepalive_timeout=limits.timeout,
            max_line_size=limits.max_line_size,
            max_field_size=limits.max_field_size,
            max_headers=limits.max_headers,
            lingering_time=limits.lingering,
            read_bufsize=limits.read_bufsize,
            auto_decompress=False,
            access_log=None,
        )
        self.limits = limits
        self.error_response = error_response
        self.open_connections = 0
        self.reading: dict[web.RequestHandler, list[web.BaseRequest]] = {}

    def __call__(self) -> GuardedProtocol:
        proto = GuardedProtocol(self, loop=self._loop, **self._kwargs)
        proto.guard_server = self
        return proto

    def connection_made(self, handler: web.RequestHandler, transport: asyncio.Transport) -> None:
        self.open_connections += 1
        super().connection_made(handler, transport)

    def connection_lost(self, handler: web.RequestHandler, exc: BaseException | None = None) -> None:
        self.open_connections -= 1
        self.reading.pop(handler, None)
        super().connection_lost(handler, exc)


def reading_body(request: web.BaseRequest, on: bool) -> None:
    """Tell the connection that the handler reads (``on``) or stopped reading this request's body."""
    server: GuardedServer = request.protocol.guard_server  # type: ignore[union-attr,attr-defined]  # set on our protocol
    if on:
        server.reading.setdefault(request.protocol, []).append(request)
        if getattr(request.protocol, "half_closed", False) and not request.content.is_eof():
            request.content.feed_eof()  # the client closed its side before the handler started reading
    elif request in server.reading.get(request.protocol, []):
        server.reading[request.protocol].remove(request)


async def send(request: web.BaseRequest, resp: web.StreamResponse, timeout: float) -> None:  # noqa: ASYNC109 - maps a stall to "gone"
    """Write ``resp`` now (bounded by ``timeout``); quietly nothing when the client is gone."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    try:
        async with asyncio.timeout(timeout):
            await resp.prepare(request)
            await resp.write_eof()
    except (ConnectionError, TimeoutError) as exc:
        log.info("could not answer %s: %s", request.remote, exc or "timeout")
        request.protocol.force_close()  # type: ignore[union-attr]


def set_recv_size(request: web.BaseRequest, size: int) -> None:
    """Bytes per recv() on this connection from now on (plain TCP only; TLS reads its own records)."""
    transport = request.transport
    if transport is not None and hasattr(transport, "max_size"):
        transport.max_size = size


def close_now(request: web.BaseRequest) -> None:
    """Drop the connection once the answer is written (no lingering read of the rest of the body)."""
    proto = request.protocol
    if proto is not None:
        proto.force_close()


def prometheus(registry: Any, max_scrapes: int = 4) -> Handler:
    """A handler serving ``GET /metrics`` (and ``/``) from ``registry``; collection runs in a thread, at most
    ``max_scrapes`` at once (beyond: 503 with Retry-After)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    running = asyncio.Semaphore(max_scrapes)

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD") or request.path not in ("/", "/metrics"):
            return web.Response(status=404, text="Not found\n")
        if running.locked():
            return web.Response(status=503, text="Busy: scrapes in progress\n", headers={"Retry-After": "5"})
        async with running:
            body = await asyncio.to_thread(generate_latest, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return handler


def listen(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A bound, listening TCP socket (IPv4 or IPv6 literal, or a name)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=False)


class Hosted:
    """One endpoint: bound at construction; served in a background thread (``start``/``stop``) or in the
    foreground (``serve_forever``, until interrupted)."""

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        limits: Limits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        error_response: ErrorResponder = plain_error,
        name: str = "http",
    ) -> None:
        self.limits = limits or Limits()
        self.ssl_context = ssl_context
        self.name = name
        self._handler = handler
        self._error_response = error_response
        self._sock = listen(host, port)
        self.server_address: tuple[Any, ...] = self._sock.getsockname()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: GuardedServer | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def server_port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        host = self.server_address[0]
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.server_port}"

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = GuardedServer(self._handler, self.limits, self._error_response)
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            tls = {
                "ssl": self.ssl_context,
                "ssl_handshake_timeout": self.limits.timeout,
                "ssl_shutdown_timeout": min(self.limits.timeout, 5.0),
            }
        self._listener = await loop.create_server(self._server, sock=self._sock, **tls)
        self._stopped = asyncio.Event()

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            await self._server.shutdown(timeout=min(self.limits.timeout, 5.0))
        if self._stopped is not None:
            self._stopped.set()

    async def _run(self, ready: Callable[[], None] | None = None) -> None:
        await self._open()
        if ready:
            ready()
        assert self._stopped is not None
        try:
            await self._stopped.wait()
        finally:
            await self._close()
            self._sock.close()

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (KeyboardInterrupt, SIGTERM in the main thread) or
        :meth:`stop`; in-flight requests are cancelled and clean up either way."""

        def ready() -> None:
            self._remember_loop()
            if threading.current_thread() is threading.main_thread() and self._stopped is not None:
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, self._stopped.set)

        try:
            asyncio.run(self._run(ready))
        except KeyboardInterrupt:
            pass

    def _remember_loop(self) -> None:
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        """Serve in a daemon thread; returns once the endpoint accepts connections."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            try:

                def started() -> None:
                    self._remember_loop()
                    ready.set()

                asyncio.run(self._run(started))
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name=f"{self.name}-server", daemon=True)
        self._thread.start()
        ready.wait(30)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        """Stop accepting, cancel in-flight requests (their handlers clean up) and close."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopped.set)
            except RuntimeError:
                pass  # the loop has already finished
        if self._thread is not None:
            self._thread.join(30)
        if loop is None:
            self._sock.close()  # never served

    # the names of socketserver, for callers written against http.server
    shutdown = stop

    def server_close(self) -> None:
        self._sock.close()
