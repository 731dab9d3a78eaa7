"""The upload endpoint against slow and hostile clients: stalls, floods, limits, disconnects; its metrics.

Every wait polls an end state (socket closed by the server, temp folder empty) under a deadline; nothing
sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import resource
import selectors
import socket
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from t0dqm.formats import dropbox
from t0dqm.servers import upload as upload_server
from tests.integration.servers.test_upload import NAME, client_upload, form, post_head, raw_request

TIMEOUT = 2.0
PAYLOAD = b"root\0" + bytes(range(256)) * 400


def wait_for(check: Callable[[], bool], deadline: float, what: str) -> None:
    end = time.monotonic() + deadline
    while not check():
        assert time.monotonic() < end, f"not within {deadline} s: {what}"
        time.sleep(0.05)


def temp_files(box: Path) -> list[Path]:
    folder = box / dropbox.UPLOADING
    return list(folder.iterdir()) if folder.exists() else []


def good_body(payload: bytes = PAYLOAD, name: str = NAME) -> bytes:
    return form(
        "bound",
        [
            ("size", None, str(len(payload)).encode()),
            ("checksum", None, b"md5:" + hashlib.md5(payload).hexdigest().encode()),
            ("file", name, payload),
        ],
    )


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src" / NAME
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


@pytest.fixture
def make(box: Path) -> Iterator[Callable[..., upload_server.UploadServer]]:
    servers: list[upload_server.UploadServer] = []

    def start(**kw: object) -> upload_server.UploadServer:
        srv = upload_server.make_server("127.0.0.1", 0, box, timeout=kw.pop("timeout", TIMEOUT), **kw)  # type: ignore[arg-type]
        srv.start()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_closed_by_server(socks: list[socket.socket], deadline: float) -> None:
    """Every socket sees the server close it (EOF or reset), within ``deadline`` seconds."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = len(socks)
    end = time.monotonic() + deadline
    while open_:
        left = end - time.monotonic()
        assert left > 0, f"{open_} of {len(socks)} connections still open after {deadline} s"
        for key, _ in sel.select(timeout=left):
            try:
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            except ConnectionResetError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                open_ -= 1
    sel.close()


@pytest.fixture(autouse=True)
def enough_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


def test_stalled_clients_are_closed_and_leave_nothing(
    make: Callable[..., upload_server.UploadServer], box: Path, src: Path
) -> None:
    """200 clients stall after their headers, 200 in the middle of the file, a few inside their headers; an
    upload made meanwhile succeeds; all are closed by the server within the timeout plus 5 s."""
    srv = make(max_uploads=512)
    body = good_body()
    cut = body.index(PAYLOAD) + 5000  # the file part has started: a temp file exists
    after_headers, mid_body, in_headers = [], [], []
    for _ in range(200):
        s = connect(srv.server_port)
        s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode())
        after_headers.append(s)
    for _ in range(200):
        s = connect(srv.server_port)
        s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[:cut])
        mid_body.append(s)
    for _ in range(5):
        s = connect(srv.server_port)
        s.sendall(b"POST /dqm/dev/data/put HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        in_headers.append(s)
    started = time.monotonic()  # the last stalled client has sent its last byte
    assert temp_files(box), "mid-body uploads hold temp files"
    status, headers, _ = client_upload(srv.url, src)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert (box / "0000" / NAME).read_bytes() == PAYLOAD
    wait_closed_by_server(after_headers + mid_body + in_headers, TIMEOUT + 5 - (time.monotonic() - started))
    wait_for(lambda: temp_files(box) == [], 10, "temp files removed")
    for s in after_headers + mid_body + in_headers:
        s.close()
    assert sorted(p.name for p in (box / "0000").iterdir()) == sorted([NAME, NAME + ".origin"])
    assert not (box / "0001").exists()
    scrape = metrics(srv)
    assert scrape[("t0dqm_upload_requests_total", (("outcome", "timeout"),))] == 400
    assert scrape[("t0dqm_upload_requests_total", (("outcome", "saved"),))] == 1
    assert scrape[("t0dqm_uploads_in_flight", ())] == 0


def test_busy_server_answers_503_with_retry_after(
    make: Callable[..., upload_server.UploadServer], box: Path, src: Path
) -> None:
    srv = make(max_uploads=3, timeout=30)
    body = good_body()
    cut = body.index(PAYLOAD) + 5000
    held = []
    for _ in range(3):
        s = connect(srv.server_port)
        s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[:cut])
        held.append(s)
    wait_for(lambda: len(temp_files(box)) == 3, 30, "3 uploads in flight")
    status, headers, _ = client_upload(srv.url, src)
    assert status == 503 and headers["dqm-status-code"] == "400", headers
    assert headers["dqm-status-message"] == "Server busy" and headers["retry-after"] == "30"
    assert "max_uploads 3" in headers["dqm-status-detail"]
    for s in held:
        s.sendall(body[cut:])  # the held uploads finish: a slot frees up
        s.close()
    wait_for(lambda: client_upload(srv.url, src)[0] == 200, 30, "an upload accepted once the others ended")
    assert sorted(p.parent.name for p in box.glob("[0-9]*/" + NAME)) == [f"{i:04d}" for i in range(4)]


def test_content_length_refused_before_the_body(
    make: Callable[..., upload_server.UploadServer], box: Path
) -> None:
    """Headers only, no body sent: the answer comes at once (the server did not wait for the body)."""
    srv = make(max_size=1000, timeout=30)
    for head, code, dqm in (
        (post_head(10**12), 413, "300"),
        (
            [
                "POST /data/put HTTP/1.1",
                "Host: x",
                "Content-Type: multipart/form-data; boundary=b",
                "Transfer-Encoding: chunked",
            ],
            411,
            "200",
        ),
        ([*post_head(100)[:-2], "Content-Type: text/plain"], 400, "200"),
        (post_head(100, "bound", "Content-Encoding: gzip"), 415, "200"),
    ):
        with connect(srv.server_port) as s:
            s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            answer = s.recv(65536)
        assert answer.startswith(f"HTTP/1.1 {code} ".encode()), answer
        assert f"Dqm-Status-Code: {dqm}".encode() in answer, answer
    assert temp_files(box) == []


def test_header_limits(make: Callable[..., upload_server.UploadServer]) -> None:
    srv = make()
    many = post_head(10) + [f"X-H{i}: v" for i in range(100)]
    status, headers, _ = raw_request(srv.server_port, many, b"")
    assert (
        status == 400
        and headers["dqm-status-code"] == "200"
        and headers["dqm-status-message"] == "Malformed request"
    )
    long = [*post_head(10), "X-Long: " + "a" * 20000]
    status, headers, _ = raw_request(srv.server_port, long, b"")
    assert status == 400 and headers["dqm-status-code"] == "200"
    status, headers, _ = raw_request(srv.server_port, ["GET /" + "a" * 20000 + " HTTP/1.1", "Host: x"], b"")
    assert status in (400, 414) and headers["dqm-status-code"] == "200"


def test_connection_bound(make: Callable[..., upload_server.UploadServer], src: Path) -> None:
    srv = make(max_connections=4, timeout=30)
    idle = [connect(srv.server_port) for _ in range(4)]
    for s in idle:
        s.sendall(b"POST /data/put HTTP/1.1\r\n")
    with connect(srv.server_port) as extra:
        answer = b""
        while chunk := extra.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After" in answer
    for s in idle:
        s.close()
    wait_for(lambda: client_upload(srv.url, src)[0] == 200, 30, "connections accepted again")


def test_client_vanishing_mid_body_leaves_nothing_and_no_traceback(
    make: Callable[..., upload_server.UploadServer], box: Path, src: Path, caplog: pytest.LogCaptureFixture
) -> None:
    srv = make(timeout=30)
    body = good_body()
    cut = body.index(PAYLOAD) + 5000
    caplog.set_level(logging.DEBUG)
    for how in ("reset", "close", "half-close"):
        s = connect(srv.server_port)
        s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[:cut])
        wait_for(lambda: len(temp_files(box)) == 1, 30, "the upload holds a temp file")
        if how == "reset":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "half-close":
            s.shutdown(socket.SHUT_WR)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 400 ") and b"Truncated request" in answer, answer
        s.close()
        wait_for(lambda: temp_files(box) == [], 30, f"temp file removed after {how}")
    assert client_upload(srv.url, src)[0] == 200  # the server is fine
    noisy = [
        r
        for r in caplog.records
        if r.exc_info
        or r.levelno >= logging.ERROR
        or "Traceback" in r.getMessage()
        or "BrokenPipe" in r.getMessage()
    ]
    assert noisy == [], [r.getMessage() for r in noisy]


def test_expect_100_continue(make: Callable[..., upload_server.UploadServer], box: Path) -> None:
    srv = make()
    body = good_body()
    with connect(srv.server_port) as s:
        s.sendall(("\r\n".join(post_head(len(body), "bound", "Expect: 100-continue")) + "\r\n\r\n").encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += s.recv(1)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and b"Dqm-Status-Code: 100" in answer
    assert (box / "0000" / NAME).read_bytes() == PAYLOAD


def test_stale_temp_files_swept_at_start(box: Path, make: Callable[..., upload_server.UploadServer]) -> None:
    staging = box / dropbox.UPLOADING
    staging.mkdir(parents=True)
    old, fresh, other = (
        staging / f"{NAME}.{'a' * 32}.upload",
        staging / f"{NAME}.{'b' * 32}.upload",
        staging / "x.tmp",
    )
    for p in (old, fresh, other):
        p.write_bytes(b"x")
    day_ago = time.time() - 86400
    os.utime(old, (day_ago, day_ago))
    os.utime(other, (day_ago, day_ago))
    make()
    assert sorted(staging.iterdir()) == sorted([fresh, other])


def metrics(srv: upload_server.UploadServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{srv.url}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def test_metrics(make: Callable[..., upload_server.UploadServer], src: Path) -> None:
    srv = make()
    assert client_upload(srv.url, src)[0] == 200
    assert client_upload(srv.url, src, checksum="md5:" + "0" * 32)[1]["dqm-status-code"] == "300"
    assert client_upload(srv.url, src, name="bad.root")[1]["dqm-status-code"] == "300"
    got = metrics(srv)

    def v(name: str, **labels: str) -> float:
        return got[(name, tuple(sorted(labels.items())))]

    assert v("t0dqm_upload_requests_total", outcome="saved") == 1
    assert v("t0dqm_upload_requests_total", outcome="refused") == 2
    assert v("t0dqm_upload_refusals_total", dqm_code="300", http="500") == 2
    assert v("t0dqm_upload_saved_bytes_total") == len(PAYLOAD)
    assert v("t0dqm_upload_received_bytes_total") == 2 * len(
        PAYLOAD
    )  # the bad name is refused before its data
    assert v("t0dqm_uploads_in_flight") == 0
    assert v("t0dqm_upload_duration_seconds_count", outcome="saved") == 1
    assert v("t0dqm_upload_connections") >= 1  # the scrape itself


def test_server_stop_mid_upload_removes_the_temp_file(box: Path) -> None:
    srv = upload_server.make_server("127.0.0.1", 0, box, timeout=30)
    srv.start()
    body = good_body()
    cut = body.index(PAYLOAD) + 5000
    with connect(srv.server_port) as s:
        s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[:cut])
        wait_for(lambda: len(temp_files(box)) == 1, 30, "the upload holds a temp file")
        srv.stop()
        assert temp_files(box) == []
        wait_closed_by_server([s], 30)
    assert list(box.glob("[0-9]*/*")) == []


def test_writer_threads_keep_order_report_errors_and_drain() -> None:
    """The file's pieces are digested and written by a writer thread: in order, at most DEPTH ahead of the
    reads; a write error reaches the handler and nothing more is written; drain() returns only when the writer
    holds no piece (the temp file is never closed under a write)."""

    class Sink:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def digest(self, chunk: bytes) -> None:
            pass

        def write(self, chunk: bytes) -> None:
            if chunk == b"full":
                raise OSError(28, "No space left on device")
            self.written.append(chunk)

    async def run() -> None:
        writers = upload_server.Writers(2)
        loop = asyncio.get_running_loop()
        try:
            sink = Sink()
            feed = upload_server.Feed(sink, writers.lane(), loop)  # type: ignore[arg-type]
            pieces = [b"%d" % i for i in range(500)]
            for piece in pieces:
                if feed.sent - feed.done >= upload_server.DEPTH:
                    await feed.wait(upload_server.DEPTH // 2)
                assert feed.sent - feed.done < upload_server.DEPTH
                feed.send(piece)
            await feed.wait(0)
            assert sink.written == pieces and feed.sent == feed.done == 500

            sink = Sink()
            feed = upload_server.Feed(sink, writers.lane(), loop)  # type: ignore[arg-type]
            for piece in (b"a", b"full", b"b", b"c"):
                feed.send(piece)
            with pytest.raises(OSError, match="No space left"):
                await feed.wait(0)
            await feed.drain()
            assert sink.written == [b"a"] and feed.sent == feed.done

            sink = Sink()
            feed = upload_server.Feed(sink, writers.lane(), loop)  # type: ignore[arg-type]
            for piece in pieces[:200]:
                feed.send(piece)
            await (
                feed.drain()
            )  # as after a timeout or a disconnect: the rest is skipped, whatever was written
            assert feed.sent == feed.done == 200 and sink.written == pieces[: len(sink.written)]
        finally:
            writers.shutdown()
        assert not any(t.is_alive() for t in writers.threads)

    asyncio.run(run())


def test_cli_server_stops_on_sigterm_and_cleans_up(tmp_path: Path) -> None:
    """`t0dqm upload-server` under systemd: SIGTERM mid-upload leaves no temp file behind."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "root"
    env = {**os.environ, "T0DQM_ROOT": str(root), "T0DQM_FLAVOUR": "dev", "T0DQM_CONFIG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "t0dqm", "upload-server", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("/data/put")[0].rsplit(":", 1)[1])
        box = Path(line.rsplit("-> ", 1)[1].strip())
        body = good_body()
        cut = body.index(PAYLOAD) + 5000
        with connect(port) as s:
            s.sendall(("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[:cut])
            wait_for(lambda: len(temp_files(box)) == 1, 60, "the upload holds a temp file")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        assert temp_files(box) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def test_tls_clients_stalling_in_the_handshake_or_body_are_closed(
    box: Path, tmp_path: Path, src: Path
) -> None:
    import ssl

    from tests.integration.pki import make_pki

    pki = make_pki(tmp_path / "pki")
    srv = upload_server.make_server(
        "127.0.0.1",
        0,
        box,
        cert=pki.path("server.pem"),
        key=pki.path("server.key"),
        ca=pki.path("ca.pem"),
        timeout=TIMEOUT,
    )
    srv.start()
    try:
        silent = [connect(srv.server_port) for _ in range(20)]  # never say hello
        body = good_body()
        ctx = pki.client_context("client")
        stalled = []
        for _ in range(5):
            s = ctx.wrap_socket(connect(srv.server_port), server_hostname="localhost")
            s.sendall(
                ("\r\n".join(post_head(len(body))) + "\r\n\r\n").encode() + body[: body.index(PAYLOAD) + 5000]
            )
            stalled.append(s)
        assert client_upload(srv.url, src, context=ctx)[0] == 200
        wait_closed_by_server(silent, TIMEOUT + 5)  # their timeout started before the upload
        for s in stalled:
            s.settimeout(TIMEOUT + 5)
            try:
                while s.recv(65536):
                    pass
            except (ssl.SSLError, ConnectionError):
                pass  # closed by the server
        wait_for(lambda: temp_files(box) == [], 10, "temp files removed")
        for s in silent + stalled:
            s.close()
    finally:
        srv.stop()
