"""HTTP upload endpoint compatible with the DQM GUI's upload client (visDQMUpload, Tier-0 harvesting).

``POST /data/put`` (any prefix ending in ``/data/put`` is accepted), ``multipart/form-data`` with the
fields ``size`` (decimal bytes), ``checksum`` (``md5:<hex>``, or ``crc32:<n>`` as the original server
accepted) and ``file`` (filename = base name). The file name is checked and classified
(:mod:`t0dqm.naming`) as soon as the file part's headers arrive, before any byte of it is stored. The
body is parsed incrementally and streamed to a temp file in ``<dropbox>/.uploading`` (never held in
memory); size, checksum and the ``root\\0`` magic are verified; the file then lands in the dropbox under
the upload protocol (``NNNN/<name>`` then ``<name>.origin``, see :mod:`t0dqm.dropbox`).

Answers carry ``Dqm-Status-Code`` (100 success; 200 bad request; 300 unacceptable parameter; 400 failed
to execute — the original server's codes), ``Dqm-Status-Message`` and ``Dqm-Status-Detail``; errors
are HTTP 500 (413 / 411 for size and length problems), as the client expects an HTTP error.
Optional TLS with client-certificate authentication (``ssl.CERT_REQUIRED``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import threading
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO

from t0dqm import dropbox, naming

log = logging.getLogger("t0dqm.upload_server")

STATUS_OK = 100
STATUS_BAD_REQUEST = 200
STATUS_ERROR_PARAMETER = 300
STATUS_FAIL_EXECUTE = 400

CHUNK = 1 << 20
MAX_HEADER = 16 * 1024
MAX_FIELD = 4096
DEFAULT_MAX_SIZE = 8 << 30
RX_SIZE = re.compile(r"^\d+$")
RX_CHECKSUM = re.compile(r"^(?:md5:([0-9a-fA-F]{32})|crc32:(\d+))$")
RX_DISPOSITION_PARAM = re.compile(r';\s*([A-Za-z0-9_*-]+)="((?:[^"\\]|\\.)*)"')


class UploadError(Exception):
    """An upload refused with a DQM status code; ``http`` is the HTTP status of the answer."""

    def __init__(self, code: int, message: str, detail: str = "", http: int = 500) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.code, self.message, self.detail, self.http = code, message, detail, http


# -- incremental multipart/form-data parser --------------------------------------------------------

class _Body:
    """Reads at most ``length`` bytes of the request body, in chunks."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self) -> bytes:
        """The next chunk; UploadError when the body ended before the multipart data did."""
        if self.left <= 0:
            raise UploadError(STATUS_BAD_REQUEST, "Malformed multipart body", "body ended before the closing boundary",
                              http=400)
        data = self.stream.read(min(CHUNK, self.left))
        if not data:
            raise UploadError(STATUS_BAD_REQUEST, "Truncated request", "connection closed before the body ended",
                              http=400)
        self.left -= len(data)
        return data

    def drain(self) -> None:
        while self.left > 0:
            data = self.stream.read(min(CHUNK, self.left))
            if not data:
                return
            self.left -= len(data)


def _disposition(headers: dict[str, str]) -> tuple[str | None, str | None]:
    value = headers.get("content-disposition", "")
    params = {k.lower(): v.replace('\\"', '"') for k, v in RX_DISPOSITION_PARAM.findall(value)}
    return params.get("name"), params.get("filename")


def parse_multipart(body: _Body, boundary: bytes, handler: Any) -> None:
    """Stream the parts of a multipart body to ``handler``.

    ``handler.start(name, filename)`` is called when a part's headers are complete; ``handler.data(bytes)``
    with its content piece by piece; ``handler.end()`` when it is complete. Only a few bytes (the
    length of the delimiter) are kept back between reads, so memory stays flat for any file size.
    """
    delim = b"\r\n--" + boundary
    buf = b"\r\n"  # lets the first boundary match the same delimiter
    while True:  # preamble up to the first delimiter
        i = buf.find(delim)
        if i >= 0:
            buf = buf[i + len(delim):]
            break
        buf = buf[-len(delim):] + body.read()
    while True:
        while len(buf) < 2:
            buf += body.read()
        if buf.startswith(b"--"):
            return  # closing delimiter
        if not buf.startswith(b"\r\n"):
            raise UploadError(STATUS_BAD_REQUEST, "Malformed multipart body", "boundary not followed by CRLF", http=400)
        buf = buf[2:]
        while (end := buf.find(b"\r\n\r\n")) < 0:
            if len(buf) > MAX_HEADER:
                raise UploadError(STATUS_BAD_REQUEST, "Malformed multipart body", "part headers too long", http=400)
            buf += body.read()
        headers: dict[str, str] = {}
        for line in buf[:end].decode("utf-8", errors="replace").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        buf = buf[end + 4:]
        name, filename = _disposition(headers)
        handler.start(name, filename)
        while True:
            i = buf.find(delim)
            if i >= 0:
                if i:
                    handler.data(buf[:i])
                buf = buf[i + len(delim):]
                break
            keep = len(delim) - 1
            if len(buf) > keep:
                handler.data(buf[:-keep])
                buf = buf[-keep:]
            buf += body.read()
        handler.end()


# -- one upload --------------------------------------------------------------------------------------

@dataclass
class Stored:
    path: Path
    size: int
    md5: str


class _Upload:
    """Receives the parts of one request: small fields in memory, the file streamed to a temp file."""

    def __init__(self, box: Path, max_size: int) -> None:
        self.box, self.max_size = box, max_size
        self.fields: dict[str, str] = {}
        self.current: str | None = None
        self.field_buf = bytearray()
        self.name: str | None = None
        self.tmp: Path | None = None
        self.out: BinaryIO | None = None
        self.md5 = hashlib.md5()
        self.crc = 0
        self.want_crc = True
        self.size = 0
        self.head = b""
        self.files = 0

    def start(self, name: str | None, filename: str | None) -> None:
        self.current = name
        if name != "file":
            self.field_buf = bytearray()
            return
        self.files += 1
        if self.files > 1:
            raise UploadError(STATUS_BAD_REQUEST, "Incorrect or missing file argument",
                              "Must provide a single file-type argument")
        if not filename:
            raise UploadError(STATUS_BAD_REQUEST, "Incorrect or missing file argument",
                              "Must provide a single file-type argument")
        base = filename.replace("\\", "/").rsplit("/", 1)[-1]
        try:
            naming.check_upload_name(base)
            naming.classify(base)
        except naming.InvalidName as exc:
            raise UploadError(STATUS_ERROR_PARAMETER, "File name does not match the expected convention",
                              exc.reason) from None
        declared = self.fields.get("size")
        if declared is not None and RX_SIZE.match(declared) and int(declared) > self.max_size:
            raise UploadError(STATUS_ERROR_PARAMETER, "File too large",
                              f"declared size {declared} exceeds the limit {self.max_size}", http=413)
        self.name = base
        # crc32 only when asked for (or when the checksum field has not arrived yet)
        self.want_crc = not self.fields.get("checksum", "").startswith("md5:")
        staging = self.box / dropbox.UPLOADING
        staging.mkdir(parents=True, exist_ok=True)
        self.tmp = staging / f"{base}.{uuid.uuid4().hex}.upload"
        self.out = open(self.tmp, "wb")

    def data(self, chunk: bytes) -> None:
        if self.current != "file":
            self.field_buf += chunk
            if len(self.field_buf) > MAX_FIELD:
                raise UploadError(STATUS_BAD_REQUEST, f"Malformed {self.current} argument", "field too long")
            return
        assert self.out is not None
        self.size += len(chunk)
        if self.size > self.max_size:
            raise UploadError(STATUS_ERROR_PARAMETER, "File too large", f"exceeds the limit {self.max_size}", http=413)
        if len(self.head) < 5:
            self.head += chunk[: 5 - len(self.head)]
        self.md5.update(chunk)
        if self.want_crc:
            self.crc = zlib.crc32(chunk, self.crc)
        self.out.write(chunk)

    def end(self) -> None:
        if self.current == "file":
            assert self.out is not None
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()
            self.out = None
        elif self.current:
            if self.current in self.fields:
                raise UploadError(STATUS_BAD_REQUEST, f"Incorrect or missing {self.current} parameter",
                                  "Must provide single argument")
            self.fields[self.current] = self.field_buf.decode("utf-8", errors="replace").strip()

    def cleanup(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)

    def verify(self) -> None:
        size, checksum = self.fields.get("size"), self.fields.get("checksum")
        if self.name is None or self.tmp is None:
            raise UploadError(STATUS_BAD_REQUEST, "Incorrect or missing file argument",
                              "Must provide a single file-type argument")
        if size is None or not RX_SIZE.match(size):
            raise UploadError(STATUS_BAD_REQUEST, "Incorrect or missing size parameter", r"must match ^\d+$")
        m = RX_CHECKSUM.match(checksum or "")
        if not m:
            raise UploadError(STATUS_BAD_REQUEST, "Malformed checksum argument", "want md5:<hex> or crc32:<n>")
        if self.head != dropbox_magic():
            raise UploadError(STATUS_ERROR_PARAMETER, "Not a ROOT file",
                              "File data contents do not represent a ROOT file")
        if self.size != int(size):
            raise UploadError(STATUS_FAIL_EXECUTE, "Failed to save file data",
                              f"Wrote {self.size} bytes, expected to write {size}")
        if m.group(1) and m.group(1).lower() != self.md5.hexdigest():
            raise UploadError(STATUS_ERROR_PARAMETER, "Checksum mismatch",
                              f"md5 of the data is {self.md5.hexdigest()}, declared {m.group(1).lower()}")
        if m.group(2) and (not self.want_crc or int(m.group(2)) != self.crc):
            raise UploadError(STATUS_ERROR_PARAMETER, "Checksum mismatch",
                              f"crc32 of the data is {self.crc}, declared {m.group(2)}")

    def land(self, source: str) -> Stored:
        """Move the verified temp file into its dropbox slot, then write the .origin (the commit point)."""
        assert self.tmp is not None and self.name is not None
        try:
            target = dropbox.place(self.tmp, self.box, self.name)
        except OSError as exc:
            raise UploadError(STATUS_FAIL_EXECUTE, "Failed to save file data", str(exc)) from None
        self.tmp = None
        md5 = self.md5.hexdigest()
        dropbox.write_atomic(target.with_name(target.name + dropbox.ORIGIN),
                             dropbox.format_origin(md5, self.size, source).encode())
        return Stored(target, self.size, md5)


def dropbox_magic() -> bytes:
    return b"root\0"


# -- HTTP ------------------------------------------------------------------------------------------

class UploadHandler(BaseHTTPRequestHandler):
    server_version = "t0dqm-upload/1"
    protocol_version = "HTTP/1.1"
    server: UploadServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)

    def _answer(self, http: int, code: int, message: str, detail: str, body: str, close: bool = False) -> None:
        data = body.encode()
        self.send_response(http)
        self.send_header("Dqm-Status-Code", str(code))
        self.send_header("Dqm-Status-Message", message)
        self.send_header("Dqm-Status-Detail", detail.replace("\r", " ").replace("\n", "; "))
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _peer(self) -> str:
        cert = getattr(self.connection, "getpeercert", lambda: None)()
        if cert:
            subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
            return f"{self.client_address[0]} [{subject}]"
        return self.client_address[0]

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._answer(404, STATUS_BAD_REQUEST, "Not found", self.path, "Not found\n", close=True)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if not self.path.split("?", 1)[0].rstrip("/").endswith("/data/put"):
            self._answer(404, STATUS_BAD_REQUEST, "Not found", self.path, "Not found\n", close=True)
            return
        length_text = self.headers.get("Content-Length")
        if length_text is None or not length_text.isdigit():
            self._answer(411, STATUS_BAD_REQUEST, "Length required", "send Content-Length", "Length required\n",
                         close=True)
            return
        length = int(length_text)
        ctype = self.headers.get("Content-Type", "")
        m = re.search(r'boundary="?([^";]+)"?', ctype)
        if not ctype.lower().startswith("multipart/form-data") or not m:
            self._answer(400, STATUS_BAD_REQUEST, "Malformed request", "expected multipart/form-data with a boundary",
                         "Bad request\n", close=True)
            return
        server = self.server
        if length > server.max_size + MAX_HEADER * 4:
            self._answer(413, STATUS_ERROR_PARAMETER, "File too large",
                         f"request of {length} bytes exceeds the limit {server.max_size}", "Too large\n", close=True)
            return
        body = _Body(self.rfile, length)
        upload = _Upload(server.dropbox, server.max_size)
        try:
            parse_multipart(body, m.group(1).encode("latin-1"), upload)
            upload.verify()
            stored = upload.land(f"http:{self._peer()}")
        except UploadError as exc:
            upload.cleanup()
            body.drain()  # read (and discard) the rest so the client gets our answer
            log.warning("upload refused from %s: %s", self._peer(), exc)
            self._answer(exc.http, exc.code, exc.message, exc.detail, f"{exc.message}\n", close=True)
            return
        except OSError as exc:
            upload.cleanup()
            log.exception("upload failed")
            self._answer(500, STATUS_FAIL_EXECUTE, "Failed to save file data", str(exc), "Failed\n", close=True)
            return
        server.stored.append(stored)
        log.info("saved %s size %d md5 %s from %s", stored.path, stored.size, stored.md5, self._peer())
        self._answer(200, STATUS_OK, "File saved", f"Wrote {stored.size} bytes", "Thanks.\n")


class UploadServer(ThreadingHTTPServer):
    """The upload endpoint; ``serve_forever()`` or ``start()`` (background thread)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], dropbox_dir: str | os.PathLike[str], *,
                 max_size: int = DEFAULT_MAX_SIZE, ssl_context: ssl.SSLContext | None = None) -> None:
        self.dropbox = Path(dropbox_dir)
        self.max_size = max_size
        self.stored: list[Stored] = []
        self.ssl_context = ssl_context
        self._thread: threading.Thread | None = None
        super().__init__(address, UploadHandler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(60)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS handshake with %s failed: %s", client_address, exc)
                return
        super().finish_request(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self.serve_forever, name="upload-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(10)


def server_ssl_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """TLS for the server; with ``ca`` every client must present a certificate signed by it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        if os.path.isdir(ca):
            ctx.load_verify_locations(capath=ca)
        else:
            ctx.load_verify_locations(cafile=ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def make_server(host: str, port: int, dropbox_dir: str | os.PathLike[str], *, max_size: int = DEFAULT_MAX_SIZE,
                cert: str | None = None, key: str | None = None, ca: str | None = None) -> UploadServer:
    context = server_ssl_context(cert, key or cert, ca) if cert else None
    return UploadServer((host, port), dropbox_dir, max_size=max_size, ssl_context=context)
