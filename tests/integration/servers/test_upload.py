"""The DQM GUI upload endpoint, exercised by a client written to the visDQMUpload protocol."""

from __future__ import annotations

import hashlib
import http.client
import io
import random
import re
import shutil
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.servers import upload as upload_server
from tests.integration.pki import CLIENT_SUBJECT, OTHER_SUBJECT, Pki, make_pki

NAME = "DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root"


def client_upload(
    url: str,
    path: Path,
    *,
    name: str | None = None,
    size: int | None = None,
    checksum: str | None = None,
    context: ssl.SSLContext | None = None,
    chunk: int = 1 << 16,
) -> tuple[int, dict[str, str], bytes]:
    """visDQMUpload's request: POST <url>/data/put, multipart fields size, checksum, file; streamed."""
    name = name or path.name
    real_size = path.stat().st_size
    if checksum is None:
        checksum = "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
    boundary = uuid.uuid4().hex
    pre = io.BytesIO()
    for key, value in (("size", str(real_size if size is None else size)), ("checksum", checksum)):
        pre.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    pre.write(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    post = f"\r\n--{boundary}--\r\n".encode()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    if url.startswith("https"):
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, int(port), context=context, timeout=30
        )
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/dqm/dev/data/put")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(pre.getvalue()) + real_size + len(post)))
        conn.putheader("User-Agent", "visDQMUpload-test")
        conn.endheaders()
        conn.send(pre.getvalue())
        try:
            with open(path, "rb") as fh:
                while data := fh.read(chunk):
                    conn.send(data)
            conn.send(post)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer early and close; read its answer below
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def server(box: Path) -> Iterator[upload_server.UploadServer]:
    srv = upload_server.make_server("127.0.0.1", 0, box, max_size=50 << 20)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def dqm_file(tmp_path: Path) -> Path:
    path = tmp_path / "src" / NAME
    path.parent.mkdir()
    simulate.write_dqm_file(path, 357902, ["Muon", "Ecal"], n_hists=40)
    return path


def stored_files(box: Path) -> list[Path]:
    return sorted(p for p in box.rglob("*") if p.is_file())


def test_good_upload_lands_in_the_dropbox(
    server: upload_server.UploadServer, box: Path, dqm_file: Path
) -> None:
    status, headers, body = client_upload(server.url, dqm_file)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert headers["dqm-status-message"] == "File saved"
    assert headers["dqm-status-detail"] == f"Wrote {dqm_file.stat().st_size} bytes" and body == b"Thanks.\n"
    target = box / "0000" / NAME
    assert target.read_bytes() == dqm_file.read_bytes()
    origin = dropbox.read_origin(str(target) + ".origin")
    assert (
        origin.md5 == hashlib.md5(dqm_file.read_bytes()).hexdigest()
        and origin.size == dqm_file.stat().st_size
    )
    [candidate] = dropbox.scan(box)
    assert candidate.path == target and candidate.info is not None and candidate.info.run == 357902
    # the same name again takes the next slot
    assert client_upload(server.url, dqm_file)[1]["dqm-status-code"] == "100"
    assert (box / "0001" / NAME).exists()
    assert list((box / dropbox.UPLOADING).iterdir()) == []


def test_crc32_checksum_accepted(server: upload_server.UploadServer, box: Path, dqm_file: Path) -> None:
    import zlib

    crc = zlib.crc32(dqm_file.read_bytes())
    status, headers, _ = client_upload(server.url, dqm_file, checksum=f"crc32:{crc}")
    assert status == 200 and headers["dqm-status-code"] == "100"
    assert (
        dropbox.read_origin(box / "0000" / (NAME + ".origin")).md5
        == hashlib.md5(dqm_file.read_bytes()).hexdigest()
    )


@pytest.mark.parametrize(
    "name, detail",
    [
        ("DQM_V0001_R000357902__ZeroBias__Run2023D-CMSSW_13-v1__DQMIO.root", "CMSSW"),
        ("DQM_V0001_Ecal_R000000042.root", "10000"),
        ("notdqm.root", "name does not match"),
        ("DQM_V0001_R1.root;rm", "unsafe"),
    ],
)
def test_bad_name_refused_before_storing(
    server: upload_server.UploadServer, box: Path, dqm_file: Path, name: str, detail: str
) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, name=name)
    assert status == 500 and headers["dqm-status-code"] == "300"
    assert headers["dqm-status-message"] == "File name does not match the expected convention"
    assert detail in headers["dqm-status-detail"]
    assert stored_files(box) == []


def test_wrong_checksum_refused_and_nothing_stored(
    server: upload_server.UploadServer, box: Path, dqm_file: Path
) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, checksum="md5:" + "0" * 32)
    assert status == 500 and headers["dqm-status-code"] == "300"
    assert headers["dqm-status-message"] == "Checksum mismatch"
    assert stored_files(box) == []


def test_malformed_checksum_and_size_mismatch(
    server: upload_server.UploadServer, box: Path, dqm_file: Path
) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, checksum="sha1:abc")
    assert status == 500 and headers["dqm-status-code"] == "200"
    status, headers, _ = client_upload(server.url, dqm_file, size=dqm_file.stat().st_size + 1)
    assert status == 500 and headers["dqm-status-code"] == "400"
    assert "expected to write" in headers["dqm-status-detail"]
    assert stored_files(box) == []


def big_payload(size: int = 8 << 20) -> bytearray:
    """ROOT's magic, then a byte pattern that holds no CRLF followed by dashes."""
    return bytearray((b"root\0" + bytes(range(256)) * (size // 256 + 1))[:size])


def md5_field(payload: bytes) -> tuple[str, None, bytes]:
    return ("checksum", None, b"md5:" + hashlib.md5(payload).hexdigest().encode())


def visdqmupload_body(payload: bytes, size: int, part_length: int | None, boundary: str = "bound") -> bytes:
    """The body visDQMUpload sends: the fields, then the file part with its own Content-Length, then the
    closing delimiter and an empty line (bin/visDQMUpload's encode())."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{NAME}"\r\n'
    head += "Content-Type: application/octet-stream\r\n"
    if part_length is not None:
        head += f"Content-Length: {part_length}\r\n"
    fields = form(boundary, [("size", None, str(size).encode()), md5_field(payload)])
    return (
        fields[: -len(f"--{boundary}--\r\n")]
        + (head + "\r\n").encode()
        + payload
        + (f"\r\n--{boundary}--\r\n\r\n".encode())
    )


@pytest.mark.parametrize("part_length", [True, False])
def test_an_8_mib_upload_as_visdqmupload_sends_it(
    server: upload_server.UploadServer, box: Path, part_length: bool
) -> None:
    """With the file part's own Content-Length (aiohttp then reads the part by length) and without it."""
    payload = bytes(big_payload())
    body = visdqmupload_body(payload, len(payload), len(payload) if part_length else None)
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert (box / "0000" / NAME).read_bytes() == payload


@pytest.mark.parametrize("part_length", [True, False])
@pytest.mark.parametrize("delta", [1 << 20, -(1 << 20), 1, -1])
def test_a_size_field_that_lies_gets_the_real_count(
    server: upload_server.UploadServer, box: Path, delta: int, part_length: bool
) -> None:
    payload = bytes(big_payload())
    declared = len(payload) + delta
    body = visdqmupload_body(payload, declared, len(payload) if part_length else None)
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert status == 500 and headers["dqm-status-code"] == "400", headers
    assert headers["dqm-status-detail"] == f"Wrote {len(payload)} bytes, expected to write {declared}"
    assert stored_files(box) == []


@pytest.mark.parametrize("delta", [1 << 20, -(1 << 20), 1, -1])
def test_the_file_parts_own_length_is_ignored(
    server: upload_server.UploadServer, box: Path, delta: int
) -> None:
    """RFC 7578: a form-data part's Content-Length is ignored (aiohttp's reader does); the closing delimiter
    ends the file, checked against the size field and md5."""
    payload = bytes(big_payload())
    body = visdqmupload_body(payload, len(payload), len(payload) + delta)
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert (box / "0000" / NAME).read_bytes() == payload


def straight_read_cases() -> list[tuple[bytes, int]]:
    """Bodies of 1-3 MiB files (seeded): size fields that lie or not, epilogues, md5 right or wrong, the file
    last or followed by a field; with a wire size at which the straight read takes most of the file."""
    rng = random.Random(11)
    cases = []
    for i in range(24):
        payload = bytes(big_payload(rng.randint(1 << 20, 3 << 20)))
        delta = rng.choice([0, 0, 1, -1, 1000, -1000, 1 << 20, -(1 << 19)])
        md5 = md5_field(payload) if i % 5 else ("checksum", None, b"md5:" + b"0" * 32)
        size = ("size", None, str(len(payload) + delta).encode())
        parts = [size, md5, ("file", NAME, payload)] if i % 4 else [size, ("file", NAME, payload), md5]
        body = form("bound", parts) + rng.choice([b"", b"\r\n", b"e" * 29])
        cases.append((body, rng.choice([1, 3, 40])))
    return cases


def test_the_straight_read_gives_the_answers_of_aiohttps_reader_alone(
    server: upload_server.UploadServer, box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Differential: each body is sent to the server as it is and with the straight read switched off; the
    answers (HTTP status, Dqm-Status code, message, detail) and the files stored are the same."""

    def answers() -> list[tuple[int, str, str, str, list[bytes]]]:
        out = []
        for body, pieces in straight_read_cases():
            status, headers, _ = raw_request(server.server_port, post_head(len(body)), body, pieces)
            stored = [p.read_bytes() for p in stored_files(box) if p.name == NAME]
            shutil.rmtree(box, ignore_errors=True)
            out.append((status, *(headers[f"dqm-status-{k}"] for k in ("code", "message", "detail")), stored))
        return out

    as_is = answers()
    monkeypatch.setattr(upload_server, "straight_bytes", lambda *_: 0)
    alone = answers()
    assert [a[:4] for a in as_is] == [a[:4] for a in alone]
    assert as_is == alone
    assert {a[1] for a in as_is} == {"100", "300", "400"}  # saved, md5 refused, size refused: all met


def test_a_file_holding_its_own_delimiter_is_refused(server: upload_server.UploadServer, box: Path) -> None:
    """RFC 2046 forbids a part's delimiter inside its content, here 4 MiB into an 8 MiB file; the size field
    and md5 agree with the bytes sent. The server reads at most a few hundred KiB of a body ahead of its
    handler (aiohttp's flow control), so these 4 MiB are read straight (upload_framing) and checked there."""
    payload = big_payload()
    payload[4 << 20 : (4 << 20) + 11] = b"\r\n--bound\r\n"
    body = visdqmupload_body(bytes(payload), len(payload), None)
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert status == 400 and headers["dqm-status-code"] == "200", headers
    assert headers["dqm-status-message"] == "Malformed multipart body"
    assert headers["dqm-status-detail"] == "the file's data contains the multipart delimiter"
    assert stored_files(box) == []


@pytest.mark.parametrize("order", ["file-size-checksum", "size-file-checksum", "checksum-size-file"])
def test_any_order_of_the_parts(server: upload_server.UploadServer, box: Path, order: str) -> None:
    """The file part first, in the middle or last (the size field before it or not)."""
    payload = bytes(big_payload(3 << 20))
    parts = {
        "size": ("size", None, str(len(payload)).encode()),
        "checksum": md5_field(payload),
        "file": ("file", NAME, payload),
    }
    body = form("bound", [parts[name] for name in order.split("-")])
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body, pieces=50)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert (box / "0000" / NAME).read_bytes() == payload


def test_not_a_root_file(server: upload_server.UploadServer, box: Path, tmp_path: Path) -> None:
    fake = tmp_path / NAME
    fake.write_bytes(b"ROOT?" + b"x" * 100)
    _status, headers, _ = client_upload(server.url, fake)
    assert headers["dqm-status-code"] == "300" and headers["dqm-status-message"] == "Not a ROOT file"
    assert stored_files(box) == []


def test_size_limit(box: Path, dqm_file: Path) -> None:
    srv = upload_server.make_server("127.0.0.1", 0, box, max_size=1000)
    srv.start()
    try:
        status, headers, _ = client_upload(srv.url, dqm_file)
        assert status == 413 and headers["dqm-status-code"] == "300"
    finally:
        srv.stop()
    assert stored_files(box) == []


def raw_request(
    port: int, head: list[str], body: bytes, pieces: int = 1
) -> tuple[int, dict[str, str], bytes]:
    """Send a request over a raw socket (the body in ``pieces`` sends), read the answer to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        step = max(1, -(-len(body) // pieces))
        for i in range(0, len(body), step):
            sock.sendall(body[i : i + step])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head_text, _, rest = answer.partition(b"\r\n\r\n")
    lines = head_text.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def form(boundary: str, fields: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, value in fields:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def post_head(length: int, boundary: str = "bound", *extra: str) -> list[str]:
    return [
        "POST /dqm/dev/data/put HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Length: {length}",
        f"Content-Type: multipart/form-data; boundary={boundary}",
        "Connection: close",
        *extra,
    ]


@pytest.mark.parametrize("pieces", [1, 7, 333])
def test_delimiter_like_bytes_and_any_split_of_the_body(
    server: upload_server.UploadServer, box: Path, pieces: int
) -> None:
    """The file holds the boundary's prefix, CRLFs and dashes; the body arrives in many small sends."""
    payload = b"root\0" + b"\r\n--boun" + bytes(range(256)) * 3 + b"--bound\r\n" + b"\r\n-"
    body = (
        b"preamble\r\n"
        + form(
            "bound",
            [
                ("size", None, str(len(payload)).encode()),
                ("checksum", None, b"md5:" + hashlib.md5(payload).hexdigest().encode()),
                ("file", NAME, payload),
            ],
        )
        + b"epilogue"
    )
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body, pieces)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert (box / "0000" / NAME).read_bytes() == payload


@pytest.mark.parametrize(
    "body, detail",
    [
        (b"no boundary anywhere\r\n" * 10, "body ended before the closing boundary"),
        (
            b'--bound\r\nContent-Disposition: form-data; name="size"\r\n\r\n12',
            "body ended before the closing boundary",
        ),
        (
            b"--bound\r\nContent-Type: multipart/mixed; boundary=inner\r\n\r\n--inner--\r\n\r\n--bound--\r\n",
            "nested multipart part",
        ),
        (
            b'--bound\r\nContent-Disposition: form-data; name="x"\r\nX-Long: '
            + b"a" * 9000
            + b"\r\n\r\nv\r\n--bound--\r\n",
            "Got more than",
        ),
        (
            b"".join(
                b'--bound\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(20)
            )
            + b"--bound--\r\n",
            "more than 16 parts",
        ),
    ],
)
def test_malformed_multipart_refused(
    server: upload_server.UploadServer, box: Path, body: bytes, detail: str
) -> None:
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert status in (400, 500) and headers["dqm-status-code"] == "200", headers
    assert detail in headers["dqm-status-detail"], headers
    assert stored_files(box) == []
    assert not list((box / dropbox.UPLOADING).glob("*")) if (box / dropbox.UPLOADING).exists() else True


def test_field_too_long(server: upload_server.UploadServer, box: Path) -> None:
    body = form("bound", [("checksum", None, b"md5:" + b"0" * 5000)])
    status, headers, _ = raw_request(server.server_port, post_head(len(body)), body)
    assert (
        status == 500
        and headers["dqm-status-code"] == "200"
        and headers["dqm-status-detail"] == "field too long"
    )


# -- TLS with client certificates ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_server(pki: Pki, box: Path, allowed: str | None = None) -> upload_server.UploadServer:
    return upload_server.make_server(
        "127.0.0.1",
        0,
        box,
        cert=pki.path("server.pem"),
        key=pki.path("server.key"),
        ca=pki.path("ca.pem"),
        allowed_dns=allowed,
    )


def test_tls_requires_a_client_certificate(pki: Pki, box: Path, dqm_file: Path) -> None:
    srv = tls_server(pki, box)
    srv.start()
    try:
        assert srv.url.startswith("https://")
        status, headers, _ = client_upload(srv.url, dqm_file, context=pki.client_context("client"))
        assert status == 200 and headers["dqm-status-code"] == "100"
        origin_text = (box / "0000" / (NAME + ".origin")).read_text()
        # the original receive daemon's pattern, applied as it did: to the whole file
        m = re.match(r"^md5:([0-9a-f]+) (\d+) (\S+)$", origin_text)
        assert m and m.group(3) == "https:127.0.0.1;dn=/O=CMS/OU=Users/CN=Test%20Operator", origin_text
        assert dropbox.read_origin(box / "0000" / (NAME + ".origin")).dn == CLIENT_SUBJECT
        for anonymous in (pki.client_context(""), pki.client_context("rogue-client")):  # no cert, unknown CA
            with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
                client_upload(srv.url, dqm_file, context=anonymous)
        assert not (box / "0001").exists()
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="CA"):
        upload_server.make_server(
            "127.0.0.1", 0, box, cert=pki.path("server.pem"), key=pki.path("server.key")
        )


def test_allow_list_of_subjects(pki: Pki, box: Path, tmp_path: Path, dqm_file: Path) -> None:
    allowed = tmp_path / "allowed_dns"
    allowed.write_text("# DQM uploaders\n" + CLIENT_SUBJECT.replace("/CN=", " / CN = ") + "\n")
    srv = tls_server(pki, box, str(allowed))
    srv.start()
    try:
        status, headers, _ = client_upload(srv.url, dqm_file, context=pki.client_context("other"))
        assert status == 403 and headers["dqm-status-code"] == "300", headers
        assert headers["dqm-status-message"] == "Certificate subject not allowed"
        assert OTHER_SUBJECT in headers["dqm-status-detail"] and "allow-list" in headers["dqm-status-detail"]
        assert stored_files(box) == []
        status, headers, _ = client_upload(srv.url, dqm_file, context=pki.client_context("client"))
        assert status == 200 and headers["dqm-status-code"] == "100"
        # an RFC 3820 proxy of an allowed certificate uploads as its owner
        proxy = ssl.create_default_context(cafile=pki.path("ca.pem"))
        proxy.load_cert_chain(pki.path("proxy-chain.pem"), pki.path("proxy.key"))
        status, headers, _ = client_upload(srv.url, dqm_file, context=proxy)
        assert status == 200 and headers["dqm-status-code"] == "100", headers
        assert dropbox.read_origin(box / "0001" / (NAME + ".origin")).dn == CLIENT_SUBJECT
        # the list is re-read when it changes
        allowed.write_text(OTHER_SUBJECT + "\n")
        status, headers, _ = client_upload(srv.url, dqm_file, context=pki.client_context("client"))
        assert status == 403 and headers["dqm-status-code"] == "300"
        assert client_upload(srv.url, dqm_file, context=pki.client_context("other"))[0] == 200
    finally:
        srv.stop()
    with pytest.raises(ValueError, match="TLS"):
        upload_server.make_server("127.0.0.1", 0, box, allowed_dns=str(allowed))


def test_uploaded_file_is_received_indexed_and_zipped(settings: object, dqm_file: Path) -> None:
    """End to end without a broker: upload server -> dropbox -> receive -> index -> zip."""
    from sqlalchemy import select

    from t0dqm import config
    from t0dqm.catalog.db import files, get_catalog, members
    from t0dqm.steps import index as dqmindex
    from t0dqm.steps.receive import receive_one
    from t0dqm.tasks import archive

    current = config.get()
    catalog = get_catalog(current.catalog_url)
    srv = upload_server.make_server("127.0.0.1", 0, current.dropbox)
    srv.start()
    try:
        _status, headers, _ = client_upload(srv.url, dqm_file)
    finally:
        srv.stop()
    assert headers["dqm-status-code"] == "100"
    [candidate] = dropbox.scan(current.dropbox)
    outcome = receive_one(candidate.path, current, catalog)
    assert outcome.status == "filed", outcome
    dqmindex.import_one(outcome.file_id, current, catalog)
    dqmindex.merge_all(current, catalog)
    archive.zip_file.apply(args=(outcome.file_id,)).get()
    with catalog.read() as conn:
        row = conn.execute(select(files).where(files.c.id == outcome.file_id)).mappings().one()
        member = conn.execute(select(members).where(members.c.file_id == outcome.file_id)).first()
    assert row["name"] == NAME and row["md5"] == hashlib.md5(dqm_file.read_bytes()).hexdigest()
    assert row["index_state"] == "indexed" and row["state"] == "zipped" and member is not None
