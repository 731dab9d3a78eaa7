"""``t0dqm metrics serve``'s HTTP side under the same bounds as the upload endpoint: idle timeout, open
connections, header limits, scrapes at once."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import CollectorRegistry

from t0dqm.servers import metrics
from tests.conftest import make_settings
from tests.integration.servers.test_upload_hardening import connect, wait_closed_by_server, wait_for

TIMEOUT = 2


class Gate:
    """A collector that blocks until released, to hold a scrape in progress."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.hold = False

    def collect(self) -> Iterator[Any]:
        if self.hold:
            self.entered.set()
            self.release.wait(60)
        yield GaugeMetricFamily("t0dqm_test_up", "a test gauge", value=1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, Gate]]:
    settings = make_settings(
        tmp_path / "root",
        metrics__timeout=str(TIMEOUT),
        metrics__max_connections="6",
        metrics__max_scrapes="1",
    )
    gate = Gate()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(gate)  # type: ignore[arg-type]
    server = metrics.serve(settings, "127.0.0.1", 0, registry)
    yield server, gate
    gate.release.set()
    server.shutdown()
    server.server_close()


def scrape(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_scrape_and_stalled_clients(served: tuple[Any, Gate]) -> None:
    server, _gate = served
    stalled = [connect(server.server_port) for _ in range(4)]
    stalled[0].sendall(b"GET /metr")  # inside the request line
    stalled[1].sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # inside the headers
    status, text = scrape(server.server_port)
    assert status == 200 and "t0dqm_test_up 1.0" in text
    wait_closed_by_server(stalled, TIMEOUT + 5)
    for s in stalled:
        s.close()


def test_connection_bound_and_header_limits(served: tuple[Any, Gate]) -> None:
    server, _gate = served
    held = [connect(server.server_port) for _ in range(6)]
    with connect(server.server_port) as extra:
        answer = b""
        while chunk := extra.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 503 ")
    for s in held:
        s.close()
    wait_for(lambda: scrape(server.server_port)[0] == 200, 30, "scrapes served again")
    with connect(server.server_port) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n")
        assert s.recv(65536).split(b"\r\n", 1)[0].endswith(b" 400 Bad Request")


def test_one_scrape_at_a_time(served: tuple[Any, Gate]) -> None:
    server, gate = served
    gate.hold = True
    first: list[tuple[int, str]] = []
    thread = threading.Thread(target=lambda: first.append(scrape(server.server_port)))
    thread.start()
    assert gate.entered.wait(30)
    status, _ = scrape(server.server_port)
    assert status == 503
    gate.hold = False
    gate.release.set()
    thread.join(30)
    assert first and first[0][0] == 200
    assert scrape(server.server_port)[0] == 200
