"""The DQM GUI upload endpoint, exercised by a client written to the visDQMUpload protocol."""

from __future__ import annotations

import hashlib
import http.client
import io
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from t0dqm import dropbox, simulate, upload_server

NAME = "DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root"


def client_upload(url: str, path: Path, *, name: str | None = None, size: int | None = None,
                  checksum: str | None = None, context: ssl.SSLContext | None = None,
                  chunk: int = 1 << 16) -> tuple[int, dict[str, str], bytes]:
    """visDQMUpload's request: POST <url>/data/put, multipart fields size, checksum, file; streamed."""
    name = name or path.name
    real_size = path.stat().st_size
    if checksum is None:
        checksum = "md5:" + hashlib.md5(path.read_bytes()).hexdigest()
    boundary = uuid.uuid4().hex
    pre = io.BytesIO()
    for key, value in (("size", str(real_size if size is None else size)), ("checksum", checksum)):
        pre.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    pre.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode())
    post = f"\r\n--{boundary}--\r\n".encode()
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    if url.startswith("https"):
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, int(port), context=context, timeout=30)
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


def test_good_upload_lands_in_the_dropbox(server: upload_server.UploadServer, box: Path, dqm_file: Path) -> None:
    status, headers, body = client_upload(server.url, dqm_file)
    assert status == 200 and headers["dqm-status-code"] == "100", headers
    assert headers["dqm-status-message"] == "File saved"
    assert headers["dqm-status-detail"] == f"Wrote {dqm_file.stat().st_size} bytes" and body == b"Thanks.\n"
    target = box / "0000" / NAME
    assert target.read_bytes() == dqm_file.read_bytes()
    origin = dropbox.read_origin(str(target) + ".origin")
    assert origin.md5 == hashlib.md5(dqm_file.read_bytes()).hexdigest() and origin.size == dqm_file.stat().st_size
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
    assert dropbox.read_origin(box / "0000" / (NAME + ".origin")).md5 == hashlib.md5(dqm_file.read_bytes()).hexdigest()


@pytest.mark.parametrize("name, detail", [
    ("DQM_V0001_R000357902__ZeroBias__Run2023D-CMSSW_13-v1__DQMIO.root", "CMSSW"),
    ("DQM_V0001_Ecal_R000000042.root", "10000"),
    ("notdqm.root", "name does not match"),
    ("DQM_V0001_R1.root;rm", "unsafe"),
])
def test_bad_name_refused_before_storing(server: upload_server.UploadServer, box: Path, dqm_file: Path, name: str,
                                         detail: str) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, name=name)
    assert status == 500 and headers["dqm-status-code"] == "300"
    assert headers["dqm-status-message"] == "File name does not match the expected convention"
    assert detail in headers["dqm-status-detail"]
    assert stored_files(box) == []


def test_wrong_checksum_refused_and_nothing_stored(server: upload_server.UploadServer, box: Path,
                                                   dqm_file: Path) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, checksum="md5:" + "0" * 32)
    assert status == 500 and headers["dqm-status-code"] == "300"
    assert headers["dqm-status-message"] == "Checksum mismatch"
    assert stored_files(box) == []


def test_malformed_checksum_and_size_mismatch(server: upload_server.UploadServer, box: Path, dqm_file: Path) -> None:
    status, headers, _ = client_upload(server.url, dqm_file, checksum="sha1:abc")
    assert status == 500 and headers["dqm-status-code"] == "200"
    status, headers, _ = client_upload(server.url, dqm_file, size=dqm_file.stat().st_size + 1)
    assert status == 500 and headers["dqm-status-code"] == "400"
    assert "expected to write" in headers["dqm-status-detail"]
    assert stored_files(box) == []


def test_not_a_root_file(server: upload_server.UploadServer, box: Path, tmp_path: Path) -> None:
    fake = tmp_path / NAME
    fake.write_bytes(b"ROOT?" + b"x" * 100)
    status, headers, _ = client_upload(server.url, fake)
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


class Trickle(io.RawIOBase):
    """A stream that returns at most ``n`` bytes per read: delimiters split across reads."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n, self.pos = data, n, 0

    def read(self, size: int = -1) -> bytes:
        out = self.data[self.pos: self.pos + min(self.n, size if size >= 0 else self.n)]
        self.pos += len(out)
        return out


class Collect:
    def __init__(self) -> None:
        self.parts: list[tuple[str | None, str | None, bytes]] = []

    def start(self, name: str | None, filename: str | None) -> None:
        self.parts.append((name, filename, b""))

    def data(self, chunk: bytes) -> None:
        name, filename, body = self.parts[-1]
        self.parts[-1] = (name, filename, body + chunk)

    def end(self) -> None:
        pass


@pytest.mark.parametrize("n", [1, 3, 7, 64, 4096])
def test_multipart_parser_handles_any_read_size(n: int) -> None:
    payload = b"root\0" + b"\r\n--boun" + bytes(range(256)) * 3 + b"\r\n-"
    body = (b"preamble\r\n--bound\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n12\r\n"
            b"--bound\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.root\"\r\n\r\n" + payload +
            b"\r\n--bound--\r\nepilogue")
    sink = Collect()
    upload_server.parse_multipart(upload_server._Body(Trickle(body, n), len(body)), b"bound", sink)
    assert sink.parts == [("size", None, b"12"), ("file", "a.root", payload)]


def test_truncated_body_is_an_error() -> None:
    body = b"--bound\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.root\"\r\n\r\nabc"
    with pytest.raises(upload_server.UploadError):
        upload_server.parse_multipart(upload_server._Body(Trickle(body, 5), len(body)), b"bound", Collect())


# -- TLS with client certificates ------------------------------------------------------------------

def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=t0dqm test CA",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for who, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", str(d / f"{who}.key"),
                 "-out", str(d / f"{who}.csr"))
        (d / f"{who}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{who}.ext"), "-out", str(d / f"{who}.pem"))
    return d


def test_tls_requires_a_client_certificate(pki: Path, box: Path, dqm_file: Path) -> None:
    srv = upload_server.make_server("127.0.0.1", 0, box, cert=str(pki / "server.pem"), key=str(pki / "server.key"),
                                    ca=str(pki / "ca.pem"))
    srv.start()
    try:
        assert srv.url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
        status, headers, _ = client_upload(srv.url, dqm_file, context=ctx)
        assert status == 200 and headers["dqm-status-code"] == "100"
        assert (box / "0000" / NAME).exists()
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            client_upload(srv.url, dqm_file, context=anonymous)
        assert not (box / "0001").exists()
    finally:
        srv.stop()


def test_uploaded_file_is_received_indexed_and_zipped(settings: object, dqm_file: Path) -> None:
    """End to end without a broker: upload server -> dropbox -> receive -> index -> zip."""
    from sqlalchemy import select

    from t0dqm import config
    from t0dqm import index as dqmindex
    from t0dqm.catalog import files, get_catalog, members
    from t0dqm.tasks import archive
    from t0dqm.tasks.receive import receive_one

    current = config.get()
    catalog = get_catalog(current.catalog_url)
    srv = upload_server.make_server("127.0.0.1", 0, current.dropbox)
    srv.start()
    try:
        status, headers, _ = client_upload(srv.url, dqm_file)
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
