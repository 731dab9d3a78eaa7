"""A small HTTP server on loopback that answers as the new DQM GUI does (test double of its API).

``POST /api/v1/register``: a JSON list of samples; 201 and stored INSERT-OR-REPLACE by (dataset, run,
lumi), or 400 ``{"message": ...}`` when a field is missing, ``fileformat`` is not an allowed integer, or
a file is in ``refuse``; 500 while ``register_status`` says so. ``GET /api/v1/archive/<run>/<PD>/<Era>/
<Tier>/``: 404 for an unknown sample, 500 when the sample's file is in ``unreadable`` (the GUI's import
fails), else 200 with a listing. Every request is recorded. State is guarded by a lock: the handler
thread finishes its update before the client gets the answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote


@dataclass
class FakeGui:
    url: str = ""
    samples: dict[tuple[str, int, int], dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)  # files answered with 400
    unreadable: set[str] = field(default_factory=set)  # files whose archive GET answers 500
    register_status: int = 201
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[list[dict[str, Any]]]:
        with self.lock:
            return [body for method, path, body in self.requests if method == "POST"]

    def files(self) -> set[str]:
        with self.lock:
            return {s["file"] for s in self.samples.values()}

    def handle_register(self, body: bytes) -> tuple[int, dict[str, Any] | None]:
        if self.register_status != 201:
            return self.register_status, None
        try:
            items = json.loads(body)
        except ValueError:
            return 400, {"message": "Please provide correctly formatted JSON"}
        for item in items:
            if any(item.get(k) is None for k in ("dataset", "run", "lumi", "file", "fileformat")):
                return 400, {"message": "Please provide all required fields"}
            if type(item["fileformat"]) is not int or item["fileformat"] not in (1, 2, 3):
                return 400, {"message": "Please provide a valid file format"}
            if item["file"] in self.refuse:
                return 400, {"message": f"Please provide a readable file: {item['file']}"}
        for item in items:
            self.samples[(item["dataset"], int(item["run"]), int(item["lumi"]))] = item
        return 201, None

    def handle_archive(self, path: str) -> tuple[int, dict[str, Any] | None]:
        parts = unquote(path)[len("/api/v1/archive/") :].split("/")
        run, dataset = int(parts[0]), "/" + "/".join(parts[1:4])
        sample = self.samples.get((dataset, run, 0))
        if sample is None:
            return 404, None
        if sample["file"] in self.unreadable:
            return 500, {"message": "500 Internal Server Error"}
        return 200, {"data": [{"subdir": "Ecal", "me_count": 3}]}


@contextmanager
def fake_gui() -> Iterator[FakeGui]:
    state = FakeGui()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any] | None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                try:
                    parsed: Any = json.loads(body)
                except ValueError:
                    parsed = body
                state.requests.append(("POST", self.path, parsed))
                status, answer = (
                    state.handle_register(body) if self.path == "/api/v1/register" else (404, None)
                )
            self._answer(status, answer)

        def do_GET(self) -> None:
            with state.lock:
                state.requests.append(("GET", self.path, None))
                status, answer = (
                    state.handle_archive(self.path)
                    if self.path.startswith("/api/v1/archive/")
                    else (404, None)
                )
            self._answer(status, answer)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-dqm-gui", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
