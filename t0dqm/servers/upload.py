"""HTTP upload endpoint compatible with the DQM GUI's upload client (visDQMUpload, Tier-0 harvesting), on aiohttp.

``POST /data/put`` (any prefix ending in ``/data/put`` is accepted), ``multipart/form-data`` with the
fields ``size`` (decimal bytes), ``checksum`` (``md5:<hex>``, or ``crc32:<n>`` as the original server
accepted) and ``file`` (filename = base name). Before any byte of the body is read, the request is refused
when its Content-Length is missing or too large, when it is not multipart, when the client certificate's
subject is not on the allow-list, or when ``max_uploads`` uploads are already in progress (503 with
``Retry-After``). The body is read with aiohttp's streaming multipart reader (most of the file part straight
from the body when the ``size`` field came first: :mod:`t0dqm.servers.upload_framing`), every read bounded
by the idle timeout; the file streams to a temp file in ``<dropbox>/.uploading`` (:mod:`t0dqm.servers.upload_receiver`), which
is removed on every refusal, timeout, disconnect and shutdown. Size, checksum and the ``root\\0`` magic are
verified; the file then lands in the dropbox under the upload protocol (:mod:`t0dqm.formats.dropbox`).

Answers carry ``Dqm-Status-Code`` (100 success; 200 bad request; 300 unacceptable parameter; 400 failed
to execute — the original server's codes), ``Dqm-Status-Message`` and ``Dqm-Status-Detail``; errors
are HTTP 500 (413 / 411 / 400 for size, length and framing problems, 403 for a certificate subject not
allowed, 408 for a client that stalled, 503 when busy), as the client expects an HTTP error.
With TLS every client must present a certificate signed by the configured CA (:mod:`t0dqm.servers.upload_identity`).
``GET /metrics`` serves the endpoint's Prometheus metrics (:mod:`t0dqm.servers.upload_stats`). Connection limits
and timeouts: :mod:`t0dqm.servers.webserve`.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import queue
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from t0dqm.servers import webserve
from t0dqm.servers.upload_framing import RX_BOUNDARY, DelimiterCheck, boundary_of, straight_bytes
from t0dqm.servers.upload_identity import AllowList, origin_source, peer_dn, server_ssl_context
from t0dqm.servers.upload_receiver import (
    STATUS_BAD_REQUEST,
    STATUS_ERROR_PARAMETER,
    STATUS_FAIL_EXECUTE,
    STATUS_OK,
    Receiver,
    Stored,
    UploadError,
    sweep_stale,
)
from t0dqm.servers.upload_stats import UploadStats

__all__ = [
    "STATUS_BAD_REQUEST",
    "STATUS_ERROR_PARAMETER",
    "STATUS_FAIL_EXECUTE",
    "STATUS_OK",
    "Stored",
    "UploadError",
    "UploadServer",
    "make_server",
    "server_ssl_context",
]

log = logging.getLogger("t0dqm.servers.upload")

# Pieces and reads. While fewer than MANY_UPLOADS uploads are in progress (itself included), an upload reads
# 1 MiB per recv() and reads the file part in 1 MiB pieces; otherwise 72 KiB (memory per connection stays
# ~350 KiB: 50 parallel uploads peaked at 53-58 MB of RSS, against 55-64 MB with 80 KiB pieces at the same
# CPU per GB, 58-64 with 96 KiB, 63-70 with 128 KiB); decided again after every piece. Each upload's pieces
# are digested and written in order by one of WRITERS threads (md5, crc32 and write release the GIL), at
# most DEPTH pieces behind the reads.
BIG_PIECE, BIG_RECV = 1 << 20, 1 << 20
MANY_UPLOADS, SMALL_PIECE, SMALL_RECV = 2, 72 << 10, 72 << 10
DEPTH = 2
WRITERS = 8
FIELD_CHUNK = 1024
MAX_OVERHEAD = 1 << 16  # multipart framing and the small fields, beyond the file itself
DEFAULT_MAX_SIZE = 8 << 30
DEFAULT_MAX_UPLOADS = 64
DEFAULT_TIMEOUT = 30.0
RETRY_AFTER = 30
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters
MMAP_THRESHOLD, TRIM_THRESHOLD = 4 << 20, 16 << 20


def answer(http: int, code: int, message: str, detail: str, body: str) -> web.Response:
    headers = {
        "Dqm-Status-Code": str(code),
        "Dqm-Status-Message": message,
        "Dqm-Status-Detail": detail.replace("\r", " ").replace("\n", "; "),
    }
    return web.Response(status=http, text=body, headers=headers)


def framing_error(status: int, message: str) -> web.Response:
    """The answer to a request aiohttp's parser refused (bad request line, too many or too long headers)."""
    return answer(status, STATUS_BAD_REQUEST, "Malformed request", message, "Bad request\n")


def tune_malloc() -> bool:
    """glibc only, once per process: serve buffers up to 4 MiB from the heap and keep up to 16 MiB of free
    heap between them. A big upload allocates 1-2 MiB buffers (recv, aiohttp's body piece and its boundary
    window) many times per second; with glibc's defaults many of them are fresh mmap()s whose pages fault in
    on first touch (75 000-120 000 page faults per GiB uploaded, ~1 300 for the http.server version) and
    return to the system when freed. Left alone when the operator tunes malloc through the environment."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _wake(fut: asyncio.Future[None]) -> None:
    """In the loop: resolve a writer's wake-up (once)."""
    if not fut.done():
        fut.set_result(None)


class Feed:
    """The file pieces of one upload on their way to its writer thread (loop side: send, wait, drain). The
    writer writes them, and digests them too unless ``digest`` is False (the loop digests them before
    sending)."""

    def __init__(
        self,
        receiver: Receiver,
        lane: queue.SimpleQueue[Any],
        loop: asyncio.AbstractEventLoop,
        digest: bool = True,
    ) -> None:
        self.receiver, self.lane, self.loop, self.digest = receiver, lane, loop, digest
        self.sent = 0  # written by the loop only
        self.done = 0  # written by the writer only
        self.error: BaseException | None = None
        self.abort = False
        self.wake_at = 0
        self.waiter: asyncio.Future[None] | None = None  # set by the loop while it waits
        self.woken: asyncio.Future[None] | None = None  # the writer's last wake-up

    def send(self, chunk: bytes) -> None:
        """Queue the next piece for the writer (the caller keeps at most DEPTH pending)."""
        self.sent += 1
        self.lane.put((self, chunk))

    def process(self, chunk: bytes) -> None:
        """Writer thread: digest and write one piece; wake the loop when it waits for this."""
        if self.error is None and not self.abort:
            try:
                if self.digest:
                    self.receiver.digest(chunk)
                self.receiver.write(chunk)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop
                self.error = exc
        self.done += 1  # before reading the waiter: see wait()
        waiter = self.waiter
        if waiter is not None and waiter is not self.woken and self.sent - self.done <= self.wake_at:
            self.woken = waiter
            try:
                self.loop.call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    async def wait(self, upto: int) -> None:
        """Until at most ``upto`` pieces are pending; then the writer's error, if any. The waiter is
        published before the count is checked again, and the writer counts before it reads the waiter:
        one of the two sees the other (the GIL orders them), so no wake-up is lost."""
        while self.sent - self.done > upto:
            fut = self.loop.create_future()
            self.wake_at = upto
            self.waiter = fut
            try:
                if self.sent - self.done > upto:  # checked again once the waiter is visible
                    await fut
            finally:
                self.waiter = None
        if self.error is not None:
            raise self.error

    async def drain(self) -> None:
        """Until the writer is done with every piece (skipping the rest); never closes a file under it."""
        if self.sent == self.done:
            return
        self.abort = True
        cancelled = False
        while self.sent != self.done:
            try:
                await self.wait(0)
            except asyncio.CancelledError:
                cancelled = True
            except BaseException:  # noqa: BLE001, S110 - already reported to the handler, or moot once aborted
                pass
        if cancelled:
            raise asyncio.CancelledError


class Writers:
    """Threads that digest and write uploads' pieces (md5, crc32 and write release the GIL); all pieces
    of one upload go to one thread, in order."""

    def __init__(self, threads: int) -> None:
        self.lanes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(threads)]
        self.threads = [
            threading.Thread(target=self._run, args=(lane,), name=f"upload-writer-{i}", daemon=True)
            for i, lane in enumerate(self.lanes)
        ]
        self.next = 0
        for t in self.threads:
            t.start()

    def lane(self) -> queue.SimpleQueue[Any]:
        """The queue of the next thread (round robin)."""
        self.next = (self.next + 1) % len(self.lanes)
        return self.lanes[self.next]

    @staticmethod
    def _run(lane: queue.SimpleQueue[Any]) -> None:
        while (item := lane.get()) is not None:
            feed, chunk = item
            feed.process(chunk)

    def shutdown(self) -> None:
        """Stop the threads once their queues are done."""
        for lane in self.lanes:
            lane.put(None)
        for t in self.threads:
            t.join(30)


class UploadService:
    """The request handler: admission, streaming the multipart body into a Receiver, the answer."""

    def __init__(
        self,
        box: Path,
        *,
        max_size: int,
        max_uploads: int,
        limits: webserve.Limits,
        tls: bool,
        allow: AllowList | None,
        stats: UploadStats,
    ) -> None:
        self.box, self.max_size, self.max_uploads = box, max_size, max_uploads
        self.limits, self.tls, self.allow, self.stats = limits, tls, allow, stats
        self.in_flight = 0
        self.scrape = webserve.prometheus(stats.registry, max_scrapes=2)
        self.writers = Writers(WRITERS)

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET" and request.path == "/metrics":
            return await self.scrape(request)
        if request.method != "POST" or not request.path.rstrip("/").endswith("/data/put"):
            return self._refuse(
                request,
                UploadError(STATUS_BAD_REQUEST, "Not found", request.path, http=404),
                body="Not found\n",
            )
        started = time.monotonic()
        outcome, resp = await self._upload(request)
        self.stats.requests.labels(outcome).inc()
        self.stats.duration.labels(outcome).observe(time.monotonic() - started)
        return resp

    def _refuse(
        self,
        request: web.BaseRequest,
        exc: UploadError,
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        log.warning("upload refused from %s: %s", request.remote, exc)
        self.stats.refusals.labels(str(exc.code), str(exc.http)).inc()
        resp = answer(exc.http, exc.code, exc.message, exc.detail, body or f"{exc.message}\n")
        resp.headers.update(headers or {})
        resp.force_close()
        return resp

    def _admit(
        self, request: web.BaseRequest, dn: str | None
    ) -> tuple[UploadError, str | None, dict[str, str]] | None:
        """Why the request is refused before its body is read (error, body, extra headers), or None."""
        if self.allow is not None and not self.allow.allows(dn):
            return (
                UploadError(
                    STATUS_ERROR_PARAMETER,
                    "Certificate subject not allowed",
                    f"the certificate subject {dn or '(none)'} is not on this server's upload "
                    "allow-list; ask the DQM operators to add it",
                    http=403,
                ),
                None,
                {},
            )
        if request.headers.get("Content-Encoding", "identity").strip().lower() not in ("identity", ""):
            return (
                UploadError(
                    STATUS_BAD_REQUEST,
                    "Malformed request",
                    "compressed request bodies are not accepted",
                    http=415,
                ),
                "Bad request\n",
                {},
            )
        length = request.headers.get("Content-Length")
        if (
            length is None
            or not length.isdigit()
            or "chunked" in request.headers.get("Transfer-Encoding", "")
        ):
            return (
                UploadError(STATUS_BAD_REQUEST, "Length required", "send Content-Length", http=411),
                "Length required\n",
                {},
            )
        ctype = request.headers.get("Content-Type", "")
        if not ctype.lower().startswith("multipart/form-data") or not RX_BOUNDARY.search(ctype):
            return (
                UploadError(
                    STATUS_BAD_REQUEST,
                    "Malformed request",
                    "expected multipart/form-data with a boundary",
                    http=400,
                ),
                "Bad request\n",
                {},
            )
        if int(length) > self.max_size + MAX_OVERHEAD:
            return (
                UploadError(
                    STATUS_ERROR_PARAMETER,
                    "File too large",
                    f"request of {length} bytes exceeds the limit {self.max_size}",
                    http=413,
                ),
                "Too large\n",
                {},
            )
        if self.in_flight >= self.max_uploads:
            return (
                UploadError(
                    STATUS_FAIL_EXECUTE,
                    "Server busy",
                    f"{self.in_flight} uploads in progress (max_uploads {self.max_uploads}); "
                    f"retry in {RETRY_AFTER} s",
                    http=503,
                ),
                "Busy\n",
                {"Retry-After": str(RETRY_AFTER)},
            )
        return None

    async def _upload(self, request: web.BaseRequest) -> tuple[str, web.StreamResponse]:
        transport = request.transport
        dn = peer_dn(transport.get_extra_info("peercert")) if transport is not None and self.tls else None
        refusal = self._admit(request, dn)
        if refusal is not None:
            exc, body, headers = refusal
            return "refused", self._refuse(request, exc, body, headers)
        source = origin_source("https" if self.tls else "http", request.remote or "unknown", dn)
        receiver = Receiver(self.box, self.max_size)
        self.in_flight += 1
        self._pace(request, self.in_flight < MANY_UPLOADS)
        self.stats.in_flight.inc()
        webserve.reading_body(request, True)
        try:
            return await self._receive_and_land(request, receiver, source)
        finally:
            receiver.cleanup()
            webserve.reading_body(request, False)
            self.in_flight -= 1
            self.stats.in_flight.dec()
            self.stats.received_bytes.inc(receiver.size)

    @staticmethod
    def _pace(request: web.BaseRequest, few: bool) -> int:
        """Reads for few uploads at once: big reads and pieces, fewer events per byte; for many: small ones,
        little memory per connection. The size of the file's pieces."""
        if few:
            webserve.set_recv_size(request, BIG_RECV)
            request.content.set_read_chunk_size(BIG_PIECE)
            return BIG_PIECE
        webserve.set_recv_size(request, SMALL_RECV)
        return SMALL_PIECE

    async def _receive_and_land(
        self, request: web.BaseRequest, receiver: Receiver, source: str
    ) -> tuple[str, web.StreamResponse]:
        timeout = self.limits.timeout
        try:
            if request.headers.get("Expect", "").lower() == "100-continue":
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            try:
                await self._receive(request, receiver)
            except (ValueError, RuntimeError, AssertionError, HttpProcessingError) as exc:
                raise self._malformed(request, exc) from None
            stored = await self._in_thread(receiver.complete, source)
        except UploadError as exc:
            receiver.cleanup()
            resp = self._refuse(request, exc)
            try:
                await self._drain(request)  # the client sends its whole body before it reads the answer
            except webserve.Stalled:
                await webserve.send(request, resp, timeout)
                webserve.close_now(request)
            return "refused", resp
        except webserve.Stalled as exc:
            receiver.cleanup()
            log.warning("upload from %s timed out after %d bytes: %s", request.remote, receiver.size, exc)
            resp = answer(408, STATUS_FAIL_EXECUTE, "Request timeout", str(exc), "Request timeout\n")
            self.stats.refusals.labels(str(STATUS_FAIL_EXECUTE), "408").inc()
            await webserve.send(request, resp, timeout)
            webserve.close_now(request)
            return "timeout", resp
        except ConnectionError as exc:
            receiver.cleanup()
            log.info(
                "upload from %s: the client went away after %d bytes (%s)",
                request.remote,
                receiver.size,
                exc or type(exc).__name__,
            )
            return "disconnected", web.Response(status=400)
        except OSError as exc:
            receiver.cleanup()
            log.exception("upload failed")
            return "error", self._refuse(
                request,
                UploadError(STATUS_FAIL_EXECUTE, "Failed to save file data", str(exc)),
                body="Failed\n",
            )
        self.stats.saved_bytes.inc(stored.size)
        log.info("saved %s size %d md5 %s from %s", stored.path, stored.size, stored.md5, source)
        try:
            await self._drain(request)  # the epilogue, if any: keeps the connection usable
        except webserve.Stalled:
            webserve.close_now(request)
        return "saved", answer(200, STATUS_OK, "File saved", f"Wrote {stored.size} bytes", "Thanks.\n")

    async def _receive(self, request: web.BaseRequest, receiver: Receiver) -> None:
        timeout = self.limits.timeout
        reader = MultipartReader(
            request.headers,
            request.content,
            max_field_size=self.limits.max_field_size,
            max_headers=self.limits.max_headers,
        )
        while (part := await webserve.within(timeout, reader.next())) is not None:
            if isinstance(part, MultipartReader):
                raise UploadError(
                    STATUS_BAD_REQUEST, "Malformed multipart body", "nested multipart part", http=400
                )
            receiver.start(part.name, part.filename)
            if part.name == "file":
                await self._stream_file(request, part, receiver)
            else:  # small reads: the reader looks one read ahead for the boundary, a big read would swallow
                while not part.at_eof():  # the start of the file with the field
                    chunk = await webserve.within(timeout, part.read_chunk(FIELD_CHUNK))
                    if chunk:
                        receiver.data(chunk)
            receiver.end()

    async def _stream_file(self, request: web.BaseRequest, part: Any, receiver: Receiver) -> None:
        """The file part: the event loop reads the pieces and checks them; a writer thread writes them
        meanwhile. The first pieces come straight from the body when the ``size`` field allows it
        (:mod:`t0dqm.servers.upload_framing`), the last ones through aiohttp's reader, which finds the
        closing boundary. An upload that starts alone is digested in the
        loop, right after the read, while the piece is still in the CPU's cache (measured: ~0.4 s of CPU per
        GB less than in the writer); with others in progress, in its writer thread, so that the digests of
        many uploads use every core. The size of the pieces follows the number of uploads in progress.
        One timeout covers the whole part, moved on at most every ``slack`` seconds while data comes: a
        client that sends nothing for the idle timeout is cut after ``timeout`` to ``timeout + slack`` s."""
        loop = asyncio.get_running_loop()
        few = self.in_flight < MANY_UPLOADS
        size = self._pace(request, few)
        timeout = self.limits.timeout
        slack = min(1.0, timeout / 10)
        in_loop = few
        feed = Feed(receiver, self.writers.lane(), loop, digest=not in_loop)
        accept, digest, read, send = receiver.accept, receiver.digest, part.read_chunk, feed.send
        content, ctype = request.content, request.headers.get("Content-Type", "")
        straight = straight_bytes(
            receiver.fields.get("size"), request.content_length, content.total_bytes, ctype
        )
        boundary = boundary_of(ctype) if straight else None  # straight bytes need a boundary
        check = DelimiterCheck(boundary) if boundary else None
        try:
            async with asyncio.timeout_at(loop.time() + timeout + slack) as deadline:
                moved = loop.time()
                while not part.at_eof():
                    if straight:
                        chunk = await content.read(min(size, straight))
                        if not chunk:
                            raise ValueError("the body ended inside the file part")
                        straight -= len(chunk)
                    else:
                        chunk = await read(size)
                    if check is not None:
                        check.feed(chunk)
                    if chunk and accept(chunk):
                        if in_loop:
                            digest(chunk)
                        if feed.sent - feed.done >= DEPTH:
                            await feed.wait(DEPTH // 2)
                        send(chunk)
                    now = loop.time()
                    if now - moved >= slack:
                        deadline.reschedule(now + timeout + slack)
                        moved = now
                    if (self.in_flight < MANY_UPLOADS) is not few:
                        few = not few
                        size = self._pace(request, few)
            await feed.wait(0)
        except TimeoutError:
            if deadline.expired():
                raise webserve.Stalled(f"no data from the client for {timeout:g} s") from None
            raise
        finally:
            await feed.drain()

    @staticmethod
    def _malformed(request: web.BaseRequest, exc: BaseException) -> UploadError:
        content, length = request.content, request.content_length or 0
        if getattr(request.protocol, "half_closed", False) and content.total_bytes < length:
            return UploadError(
                STATUS_BAD_REQUEST, "Truncated request", "connection closed before the body ended", http=400
            )
        if content.at_eof():
            return UploadError(
                STATUS_BAD_REQUEST,
                "Malformed multipart body",
                "body ended before the closing boundary",
                http=400,
            )
        return UploadError(STATUS_BAD_REQUEST, "Malformed multipart body", str(exc)[:200], http=400)

    async def _drain(self, request: web.BaseRequest) -> None:
        """Read and discard the rest of the body (at most Content-Length, each read within the timeout)."""
        content = request.content
        try:
            while not content.at_eof():
                if not await webserve.within(self.limits.timeout, content.readany()):
                    break
        except (ConnectionError, ValueError, HttpProcessingError):
            pass

    @staticmethod
    async def _in_thread(func: Any, *args: Any) -> Any:
        """Run blocking work in a thread; on cancellation wait for it, so cleanup never races it."""
        task = asyncio.ensure_future(asyncio.to_thread(func, *args))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise


class UploadServer(webserve.Hosted):
    """The upload endpoint, bound at construction; ``start()``/``stop()`` or ``serve_forever()``."""

    def __init__(
        self,
        address: tuple[str, int],
        dropbox_dir: str | os.PathLike[str],
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        ssl_context: ssl.SSLContext | None = None,
        max_uploads: int = DEFAULT_MAX_UPLOADS,
        limits: webserve.Limits | None = None,
        allow: AllowList | None = None,
    ) -> None:
        if allow is not None and ssl_context is None:
            raise ValueError("an allow-list of certificate subjects needs TLS with client certificates")
        if max_uploads < 1 or max_size < 1:
            raise ValueError("max_uploads and max_size must be positive")
        self.dropbox = Path(dropbox_dir)
        self.max_size = max_size
        tune_malloc()
        self.stats = UploadStats()
        limits = limits or webserve.Limits(timeout=DEFAULT_TIMEOUT)
        self.service = UploadService(
            self.dropbox,
            max_size=max_size,
            max_uploads=max_uploads,
            limits=limits,
            tls=ssl_context is not None,
            allow=allow,
            stats=self.stats,
        )
        super().__init__(
            self.service,
            address[0],
            address[1],
            limits=limits,
            ssl_context=ssl_context,
            error_response=framing_error,
            name="upload",
        )
        self.stats.connections.set_function(lambda: self._server.open_connections if self._server else 0)
        sweep_stale(self.dropbox, max(3600.0, 10 * limits.timeout))

    async def _close(self) -> None:
        await super()._close()
        self.service.writers.shutdown()  # the handlers are done: nothing is pending


def make_server(
    host: str,
    port: int,
    dropbox_dir: str | os.PathLike[str],
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    cert: str | None = None,
    key: str | None = None,
    ca: str | None = None,
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = 1024,
    allowed_dns: str | None = None,
) -> UploadServer:
    """The endpoint on ``host:port``; TLS when ``cert`` is given, and then ``ca`` is required."""
    context = None
    if cert:
        if not ca:
            raise ValueError("TLS needs a CA: clients must present a certificate (ca= / --ca)")
        context = server_ssl_context(cert, key or cert, ca)
    elif key or ca or allowed_dns:
        raise ValueError("key, ca and allowed_dns need a server certificate (TLS)")
    limits = webserve.Limits(timeout=timeout, max_connections=max_connections)
    allow = AllowList(allowed_dns) if allowed_dns else None
    return UploadServer(
        (host, port),
        dropbox_dir,
        max_size=max_size,
        ssl_context=context,
        max_uploads=max_uploads,
        limits=limits,
        allow=allow,
    )
