"""Materialise the bad-input corpus (tests/corpus/cases.py) into tmp dirs, and the helpers the corpus
test needs: a sentinel snapshot, ROOT contents good and broken, lying HTTP servers, raw upload requests."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from t0dqm.dev import simulate

Snapshot = dict[str, tuple[Any, ...]]


# -- the sentinel: a directory outside every root that nothing may touch ------------------------------


def make_sentinel(base: Path) -> Path:
    sentinel = base / "sentinel"
    (sentinel / "sub").mkdir(parents=True)
    (sentinel / "keep.txt").write_text("precious\n")
    (sentinel / "sub" / "deep.txt").write_text("also precious\n")
    (sentinel / "secret.origin").write_text("SECRET-TOKEN do not quote me\n")
    return sentinel


def snapshot(top: Path) -> Snapshot:
    """Every entry below ``top`` (symlinks not followed): type, size, mtime, content hash or link target."""
    out: Snapshot = {}
    for dirpath, dirs, names in os.walk(top):
        for name in [*dirs, *names, ""]:
            path = Path(dirpath) / name if name else Path(dirpath)
            st = os.lstat(path)
            rel = str(path.relative_to(top))
            if path.is_symlink():
                out[rel] = ("link", os.readlink(path))
            elif path.is_file():
                out[rel] = ("file", st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[rel] = ("dir", st.st_mtime_ns, st.st_mode)
    return out


def fill(text: str, sentinel: Path) -> str:
    return text.replace("{sentinel}", str(sentinel))


# -- file contents --------------------------------------------------------------------------------------


def write_content(path: Path, kind: str, name: str) -> None:
    """Write ``kind`` of content for the DQM file name ``name`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "empty":
        path.write_bytes(b"")
        return
    if kind == "text":
        path.write_bytes(b"I am a text file that only looks like a ROOT file by name.\n" * 20)
        return
    if kind == "magic_only":
        path.write_bytes(b"root\0")
        return
    if kind == "corrupt_header":  # magic, version 62206, fBEGIN=100, fEND=50 (end before begin)
        path.write_bytes(
            b"root"
            + (62206).to_bytes(4, "big")
            + (100).to_bytes(4, "big")
            + (50).to_bytes(4, "big")
            + b"\0" * 200
        )
        return
    run, subsystems, strict = simulate.content_for(name)
    run = run if run > 1 else 300101
    simulate.write_dqm_file(
        path,
        run,
        subsystems,
        n_hists=10,
        strict=strict and kind != "loose",
        run_summary=kind != "no_run_summary",
    )
    size = path.stat().st_size
    if kind == "truncated":
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)
    elif kind == "header_only":
        with open(path, "r+b") as fh:
            fh.truncate(64)
    elif kind == "zeroed_body":  # a sane header, then nothing but zeros where the keys should be
        with open(path, "r+b") as fh:
            fh.seek(100)
            fh.write(b"\0" * (size - 100))


def origin_text(path: Path | None, spec: dict[str, Any], sentinel: Path) -> str:
    if "raw" in spec:
        return fill(spec["raw"], sentinel)
    data = path.read_bytes() if path is not None and path.is_file() else b""
    size = spec.get("size", len(data) + spec.get("size_delta", 0))
    md5 = spec.get("md5", hashlib.md5(data).hexdigest())
    source = fill(spec.get("source", "producer.example:/data/" + (path.name if path else "x")), sentinel)
    return f"md5:{md5} {size} {source}\n"


def materialize_receive(spec: dict[str, Any], dropbox: Path, sentinel: Path, slot: str = "0000") -> Path:
    """Lay out one dropbox entry as the case says; return the upload path to hand to the receiver."""
    name, layout = spec["name"], spec.get("layout", "file")
    folder = dropbox / slot
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    origin = folder / (name + ".origin")
    content = spec.get("content", "good")
    if layout == "file":
        write_content(path, content, name)
    elif layout == "file_symlink_outside":
        real = sentinel / "real" / name
        write_content(real, content, name)
        os.symlink(real, path)
        origin.write_text(origin_text(real, {}, sentinel))
        return path
    elif layout == "dangling_symlink":
        os.symlink(sentinel / "does-not-exist.root", path)
        origin.write_text(f"md5:{'0' * 32} 10 producer\n")
        return path
    elif layout == "directory":
        (path / "inner").mkdir(parents=True)
        origin.write_text(f"md5:{'0' * 32} 4096 producer\n")
        return path
    elif layout == "no_file":
        origin.write_text(f"md5:{'0' * 32} 10 producer\n")
        return path
    elif layout == "origin_symlink_outside":
        write_content(path, content, name)
        os.symlink(sentinel / "secret.origin", origin)
        return path
    elif layout == "slot_symlink_outside":
        outside = sentinel / "slot"
        write_content(outside / name, content, name)
        (outside / (name + ".origin")).write_text(origin_text(outside / name, {}, sentinel))
        folder.rmdir()
        os.symlink(outside, folder)
        return path
    elif layout == "path_traversal":
        write_content(sentinel / "loot" / name, content, name)
        (sentinel / "loot" / (name + ".origin")).write_text(
            origin_text(sentinel / "loot" / name, {}, sentinel)
        )
        return Path(os.path.relpath(sentinel / "loot" / name, dropbox))  # ../../../sentinel/loot/<name>
    else:
        raise ValueError(f"unknown layout {layout!r}")
    origin.write_text(origin_text(path, spec.get("origin", {}), sentinel))
    return path


# -- EOS dumps --------------------------------------------------------------------------------------------


def write_dump(path: Path, lines: list[str], mode: str = "gzip", age: float = 0.0) -> Path:
    body = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    if mode == "plain":
        path.write_bytes(body)
    else:
        data = gzip.compress(body)
        path.write_bytes(data[: len(data) // 2] if mode == "truncated" else data)
    if age:
        when = time.time() - age
        os.utime(path, (when, when))
    return path


# -- lying HTTP listings ------------------------------------------------------------------------------------

GOOD = "DQM_V0001_Ecal_R000300101.root"
PAYLOAD = b"root\0" + bytes(range(256)) * 19 + b"x" * 11  # 4880 bytes
LAST_MODIFIED = "Tue, 14 Nov 2023 22:13:20 GMT"

Response = tuple[int, dict[str, str], bytes]


def _listing(*hrefs: str) -> bytes:
    rows = "".join(f'<tr><td><a href="{h}">{h}</a></td></tr>\n' for h in hrefs)
    return f"<html><body><h1>Index</h1><table>\n{rows}</table></body></html>\n".encode()


def _file(body: bytes = PAYLOAD, length: int | None = None, modified: str = LAST_MODIFIED) -> Response:
    return (
        200,
        {"Content-Length": str(len(body) if length is None else length), "Last-Modified": modified},
        body,
    )


def scenario(name: str, port: int, other_port: int) -> Callable[[str, str], Response]:
    """(method, path) -> response for the lying server ``name``; the base URL is /browse/."""

    def respond(method: str, path: str) -> Response:
        if name == "short_body":
            if path == "/browse/":
                return 200, {}, _listing(GOOD)
            return _file(PAYLOAD[:100], length=5000)
        if name == "head_lies":
            if path == "/browse/":
                return 200, {}, _listing(GOOD)
            return _file(PAYLOAD[:100], length=5000) if method == "HEAD" else _file(PAYLOAD[:100])
        if name == "off_site_links":
            if path == "/browse/":
                return (
                    200,
                    {},
                    _listing(
                        "../",
                        "../../etc/passwd",
                        "/etc/passwd",
                        "http://evil.example.org/DQM_V0001_R000300101.root",
                        "//evil.example.org/x.root",
                        "%2e%2e/up.root",
                        "..%2fup.root",
                        "file:///etc/passwd",
                        f"http://localhost:{other_port}/browse/{GOOD}",
                        "a%2f..%2f..%2fup.root",
                        "/browse/../x.root",
                        GOOD,
                        "?C=N;O=D",
                    ),
                )
            if path == f"/browse/{GOOD}":
                return _file()
            return 404, {}, b"no"
        if name == "self_links":
            if path == "/browse/":
                return 200, {}, _listing("./", "", "/browse/", "/browse/./", GOOD)
            if path == f"/browse/{GOOD}":
                return _file()
            return 404, {}, b"no"
        if name == "infinite_depth":  # every folder has a sub-folder: an endless tree
            return 200, {}, _listing("sub/")
        if name == "redirect_loop":
            return 302, {"Location": path, "Content-Length": "0"}, b""
        if name == "redirect_off_host":
            if path == "/browse/":
                return 200, {}, _listing(GOOD)
            return 302, {"Location": f"http://localhost:{other_port}/stolen.root", "Content-Length": "0"}, b""
        if name == "bad_last_modified":
            if path == "/browse/":
                return 200, {}, _listing(GOOD)
            return _file(modified="yesterday-ish, around noon")
        if name == "http_500":
            if path == "/browse/":
                return 200, {}, _listing(GOOD)
            return 500, {"Content-Length": "4"}, b"boom"
        if name == "binary_listing":
            return 200, {"Content-Type": "application/octet-stream"}, bytes(range(256)) * 64
        if name == "unicode_names":
            if path == "/browse/":
                return 200, {}, _listing("DQM%20V0001.root", "DQM_%C3%89cal.root")
            return _file()
        raise ValueError(f"unknown scenario {name!r}")

    return respond


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _LyingServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self, method: str) -> None:
        self.server.requests.append((method, self.path))
        status, headers, body = self.server.respond(method, self.path)
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method == "GET":
            self.wfile.write(body)
        self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")


class _LyingServer(ThreadingHTTPServer):
    daemon_threads = True
    respond: Callable[[str, str], Response]
    requests: list[tuple[str, str]]


@contextmanager
def serve(
    respond_for: Callable[[int], Callable[[str, str], Response]] | None = None,
) -> Iterator[_LyingServer]:
    """A loopback HTTP server answering with ``respond_for(port)``; yields it (``.requests`` logged)."""
    server = _LyingServer(("127.0.0.1", 0), _Handler)
    server.requests = []
    server.respond = respond_for(server.server_address[1]) if respond_for else (lambda m, p: (404, {}, b""))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


# -- raw requests to the upload endpoint ---------------------------------------------------------------------


def multipart(fields: list[tuple[str, str | None, bytes]], boundary: str) -> bytes:
    out = io.BytesIO()
    for name, filename, value in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode())
        out.write(value + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def upload_request(
    port: int, spec: dict[str, Any], data: bytes, sentinel: Path
) -> tuple[int, dict[str, str]]:
    """Send one (possibly lying) upload request over a raw socket; (HTTP status, headers lowercased)."""
    filename = fill(spec.get("filename", GOOD), sentinel)
    size = spec.get("size", len(data) + spec.get("size_delta", 0))
    checksum = spec.get("checksum", "md5:" + hashlib.md5(data).hexdigest())
    boundary = uuid.uuid4().hex
    fields = [
        ("size", None, str(size).encode()),
        ("checksum", None, checksum.encode()),
        ("file", filename, data),
    ]
    raw = spec.get("raw")
    if raw == "two_files":
        fields.append(("file", GOOD, data))
    body = multipart(fields, boundary)
    length: int | None = len(body)
    send = body
    if raw == "length_long":  # claims the whole body, sends half of it
        send = body[: len(body) // 2]
    elif raw == "length_short":  # claims (and sends) half of the multipart body
        length = len(body) // 2
        send = body[:length]
    elif raw == "no_length":
        length = None
    head = [
        "POST /dqm/dev/data/put HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        "User-Agent: corpus",
    ]
    if length is not None:
        head.append(f"Content-Length: {length}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode("utf-8") + send
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)  # the server sees the end of the body (or of the lie)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    headers: dict[str, str] = {}
    for line in rest.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers
