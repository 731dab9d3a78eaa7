from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from t0dqm.clients.rundone import Prefetching, RunStreamDone, is_done_reply

REPLIES = {
    "done": (200, b'{"result": [true]}'),
    "notdone": (200, b'{"result": [false]}'),
    "one": (200, b'{"result": [1]}'),
    "two": (200, b'{"result": [true, true]}'),
    "extra": (200, b'{"result": [true], "x": 1}'),
    "badjson": (200, b'{"result": [true'),
    "err500": (500, b'{"result": [true]}'),
    "slow": (200, b'{"result": [true]}'),
}


class Handler(BaseHTTPRequestHandler):
    calls: ClassVar[list[tuple[int, str]]] = []
    active = 0
    peak = 0
    lock = threading.Lock()
    # test_bounded_concurrency: every request waits here until `parties` of them are in flight
    barrier: threading.Barrier | None = None
    # "slow" requests wait for this (set at teardown), so the client's timeout always fires first
    release = threading.Event()

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        run, stream = int(q["run"][0]), q["stream"][0]
        with Handler.lock:
            Handler.calls.append((run, stream))
            Handler.active += 1
            Handler.peak = max(Handler.peak, Handler.active)
        key = stream if stream in REPLIES else ("done" if run % 2 == 0 else "notdone")
        try:
            if key == "slow":
                Handler.release.wait(30)
            if Handler.barrier is not None:
                Handler.barrier.wait(30)
        except threading.BrokenBarrierError:
            key = "err500"
        finally:
            # leave the in-flight count before the client can see the reply: its next request is
            # counted only after this one is (the race behind a flaky `assert 4 <= 3`)
            with Handler.lock:
                Handler.active -= 1
        status, body = REPLIES[key]
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # a "slow" reply: the client has given up
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Handler.calls = []
    Handler.active = Handler.peak = 0
    Handler.barrier = None
    Handler.release.clear()
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/t0wmadatasvc/prod/run_stream_done"
    Handler.release.set()
    if Handler.barrier is not None:
        Handler.barrier.abort()
    srv.shutdown()
    srv.server_close()


def test_is_done_reply_exact():
    assert is_done_reply(b'{"result":[true]}')
    for body in (
        b'{"result":[false]}',
        b'{"result":[1]}',
        b'{"result":true}',
        b"[true]",
        b"",
        b'{"result":[]}',
    ):
        assert not is_done_reply(body)


@pytest.mark.parametrize(
    "stream,expected",
    [
        ("done", True),
        ("notdone", False),
        ("one", False),
        ("two", False),
        ("extra", False),
        ("badjson", False),
        ("err500", False),
    ],
)
def test_replies(server, stream, expected):
    assert RunStreamDone(server, timeout=5).is_done(123456, stream) is expected


def test_timeout_means_not_done(server):
    client = RunStreamDone(server, timeout=0.2)
    assert client.is_done(123456, "slow") is False
    assert client.errors == 1


def test_connection_refused_means_not_done():
    assert RunStreamDone("http://127.0.0.1:9/x", timeout=1).is_done(123456, "done") is False


def test_cache_300s(server):
    now = [1000.0]
    client = RunStreamDone(server, clock=lambda: now[0])
    assert client.is_done(123456, "done")
    now[0] += 299
    assert client.is_done(123456, "done")
    assert len(Handler.calls) == 1
    now[0] += 2
    assert client.is_done(123456, "done")
    assert len(Handler.calls) == 2


def test_invalid_names_no_request(server):
    client = RunStreamDone(server)
    assert not client.is_done(0, "done")
    assert not client.is_done(12345678, "done")
    assert not client.is_done(123456, "bad-stream")
    assert Handler.calls == []


def test_bounded_concurrency(server):
    """Requests are held until three are in flight at once: a client that sent fewer at a time would
    break the barrier (500s, wrong answers); one that sent more would push the peak above three."""
    Handler.barrier = threading.Barrier(3)
    client = RunStreamDone(server, max_workers=3, timeout=60)
    pairs = [(100000 + i, "S") for i in range(12)]
    res = client.many(pairs)
    assert res == {p: p[0] % 2 == 0 for p in pairs}
    assert Handler.peak == 3
    assert len(Handler.calls) == 12


def test_prefetching_order(server):
    client = RunStreamDone(server, max_workers=2)
    order = [(100000 + i, "S") for i in range(10)]
    pred = Prefetching(client, order, batch=4)
    assert pred(100000, "S") is True
    assert len(Handler.calls) == 4
    assert pred(100001, "S") is False
    assert len(Handler.calls) == 4


def test_query_params(server):
    RunStreamDone(server).is_done(357902, "PhysicsMuons")
    assert Handler.calls == [(357902, "PhysicsMuons")]
    assert json.dumps(Handler.calls)
