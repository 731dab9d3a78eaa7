"""Online sync against a real HTTP server on loopback, and the partial mirror on real folders."""

from __future__ import annotations

import contextlib
import functools
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from t0dqm import beat, config, deleter
from t0dqm.catalog.db import audit, get_catalog
from t0dqm.steps import sync
from tests.integration.pki import Pki, make_pki

SUB = "00012xxxx/0001234xx"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(served folder, base URL) of a real http.server on 127.0.0.1."""
    served = tmp_path / "online"
    served.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def remote_file(served: Path, rel: str, size: int, mtime: float = 1_700_000_000) -> Path:
    path = served / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"root\0" + os.urandom(size - 5))
    os.utime(path, (mtime, mtime))
    return path


def names(run: int, sub: str = "Ecal", v: int = 1) -> str:
    return f"{SUB}/DQM_V{v:04d}_{sub}_R{run:09d}.root"


def test_parse_apache_listing() -> None:
    html = """<html><body><h1>Index of /browse/Original</h1><table>
    <tr><th><a href="?C=N;O=D">Name</a></th><th><a href="?C=M;O=A">Last modified</a></th></tr>
    <tr><td><a href="/browse/">Parent Directory</a></td></tr>
    <tr><td><a href="00012xxxx/">00012xxxx/</a></td><td>2024-01-01 10:00</td><td>-</td></tr>
    <tr><td><a href='/browse/Original/DQM_V0001_R000123456.root'>DQM_V0001_R000123456.root</a></td></tr>
    <tr><td><a href="http://elsewhere/x.root">x</a></td></tr>
    <tr><td><a href="deep/er/y.root">y</a></td></tr>
    </table></body></html>"""
    dirs, files = sync.parse_listing(html, "http://h/browse/Original")
    assert dirs == ["http://h/browse/Original/00012xxxx/"]
    assert files == ["http://h/browse/Original/DQM_V0001_R000123456.root"]


def test_online_sync_downloads_changes_and_respects_archived(
    http_root: tuple[Path, str], tmp_path: Path
) -> None:
    served, url = http_root
    a = remote_file(served, names(123401), 3000)
    remote_file(served, names(123402), 5000)
    remote_file(served, "00013xxxx/0001300xx/DQM_V0001_Hcal_R000130001.root", 700, mtime=1_700_000_500)
    (served / SUB / "README.txt").write_text("not a ROOT file")
    dest = tmp_path / "repo" / "OnlineData" / "original"

    report = sync.online_sync(url, dest, connections=4, timeout=10)
    assert sorted(report.downloaded) == sorted(
        [names(123401), names(123402), "00013xxxx/0001300xx/DQM_V0001_Hcal_R000130001.root"]
    )
    assert report.errors == [] and report.bytes == 8700
    local_a = dest / names(123401)
    assert local_a.read_bytes() == a.read_bytes()
    assert int(local_a.stat().st_mtime) == int(a.stat().st_mtime)
    assert not (dest / SUB / "README.txt").exists()
    assert [p.name for p in dest.rglob(".*")] == []  # no temp files left

    again = sync.online_sync(url, dest, connections=4, timeout=10)
    assert again.downloaded == [] and again.up_to_date == 3

    # a file changing size on the online side is fetched again
    remote_file(served, names(123402), 6000)
    changed = sync.online_sync(url, dest, connections=2, timeout=10)
    assert changed.downloaded == [names(123402)] and (dest / names(123402)).stat().st_size == 6000

    # an archived file removed locally (its .dqminfo stays) is never downloaded again
    (dest / names(123401)).unlink()
    (dest / (names(123401) + ".dqminfo")).write_text("{}")
    skipped = sync.online_sync(url, dest, connections=2, timeout=10)
    assert skipped.downloaded == [] and skipped.skipped_archived == [names(123401)]
    assert not (dest / names(123401)).exists()

    # removed without a .dqminfo: it comes back
    (dest / names(123402)).unlink()
    assert sync.online_sync(url, dest, timeout=10).downloaded == [names(123402)]


def test_online_sync_reports_unreachable_server(tmp_path: Path) -> None:
    report = sync.online_sync("http://127.0.0.1:9/", tmp_path / "d", timeout=2)
    assert report.downloaded == [] and len(report.errors) == 1


def test_online_sync_task_uses_settings(http_root: tuple[Path, str], settings: config.Settings) -> None:
    from t0dqm.tasks import sync as tasks

    served, url = http_root
    remote_file(served, names(123401), 1000)
    current = config.Settings(data=dict(settings.data, sync={"url": url, "connections": 2}))
    config.reset(current)
    try:
        result = tasks.online_sync.apply().get()
        assert result["downloaded"] == [names(123401)]
        assert (current.repository / "OnlineData" / "original" / names(123401)).exists()
        assert set(beat.sync_schedule(current)) == {"online-sync"}
    finally:
        config.reset(settings)


# -- partial mirror -------------------------------------------------------------------------------


def online(run: int, sub: str = "Ecal", v: int = 1) -> str:
    return f"OnlineData/{run // 10000:05d}xxxx/{run // 100:07d}xx/DQM_V{v:04d}_{sub}_R{run:09d}.root"


def repo_file(repo: Path, rel: str, size: int, mtime: float) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    os.utime(path, (mtime, mtime))


def test_partial_mirror(settings: config.Settings, tmp_path: Path) -> None:
    mirror = tmp_path / "afs" / "dqm"
    current = config.Settings(
        data=dict(settings.data, deletion=dict(settings["deletion"], extra_roots=[str(mirror)]))
    )
    repo = current.repository
    for i in range(6):
        repo_file(repo, online(20000 + i), 100, 1_000_000 + i)
    repo_file(repo, online(20005, v=2), 100, 1_000_010)  # newest version of run 20005
    repo_file(repo, online(20005, sub="Hcal"), 50, 1_000_011)
    repo_file(
        repo,
        "OfflineData/Run2023/ZeroBias/0003579xx/"
        "DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root",
        80,
        1_000_000,
    )
    # already mirrored: one old run (to be dropped), one stray file, in its own folder (to be emptied)
    repo_file(mirror, online(20000), 100, 1_000_000)
    repo_file(mirror, "OnlineData/old/stray.root", 10, 1)

    report = sync.partial_mirror(
        repo, mirror, {"OnlineData": 400, "OfflineData": None}, total=500, settings=current
    )
    # OnlineData quota 396: Hcal 20005 (50), V2 20005 (100), 20004 (100), 20003 (100) = 350; 20002 does not fit
    # OfflineData shares the rest of the total: (500 - 400) * 0.99 = 99 bytes, the 80-byte file fits
    offline = "OfflineData/Run2023/ZeroBias/0003579xx/DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root"
    expect_online = {online(20005, sub="Hcal"), online(20005, v=2), online(20004), online(20003)}
    mirrored = {p.relative_to(mirror).as_posix() for p in mirror.rglob("*.root")}
    assert mirrored == expect_online | {offline}
    assert report.quotas == {"OnlineData": 396, "OfflineData": 99}
    assert report.used == {"OnlineData": 350, "OfflineData": 80}
    assert set(report.deleted) == {online(20000), "OnlineData/old/stray.root"}
    assert not (mirror / "OnlineData" / "old").exists()
    for rel in expect_online | {offline}:
        assert (mirror / rel).stat().st_mtime == (repo / rel).stat().st_mtime
    with get_catalog(current.catalog_url).read() as conn:
        rules = conn.execute(select(audit.c.rule).where(audit.c.action == "delete")).scalars().all()
    assert rules == ["partial-mirror", "partial-mirror"]

    again = sync.partial_mirror(
        repo, mirror, {"OnlineData": 400, "OfflineData": None}, total=500, settings=current
    )
    assert again.copied == [] and again.deleted == []


def test_partial_mirror_refuses_destination_outside_deletion_roots(
    settings: config.Settings, tmp_path: Path
) -> None:
    with pytest.raises(deleter.DeletionRefused):
        sync.partial_mirror(
            settings.repository, tmp_path / "elsewhere", {"OnlineData": 100}, None, settings=settings
        )


# -- online sync over https with X509 client certificates ---------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@contextlib.contextmanager
def https_root(pki: Pki, served: Path, server_cert: str = "server") -> Iterator[str]:
    """A real http.server on 127.0.0.1 behind TLS that requires a client certificate of the test CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.path(f"{server_cert}.pem"), pki.path(f"{server_cert}.key"))
    ctx.load_verify_locations(cafile=pki.path("ca.pem"))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_online_sync_over_https_with_client_certificate(pki: Pki, tmp_path: Path) -> None:
    served = tmp_path / "online"
    a = remote_file(served, names(123401), 3000)
    remote_file(served, "00013xxxx/0001300xx/DQM_V0001_Hcal_R000130001.root", 700)
    dest = tmp_path / "dest"
    with https_root(pki, served) as url:
        context = sync.make_ssl_context(pki.path("client.pem"), pki.path("client.key"), pki.path("ca.pem"))
        report = sync.online_sync(url, dest, connections=2, timeout=10, context=context)
        assert report.errors == [] and len(report.downloaded) == 2
        assert (dest / names(123401)).read_bytes() == a.read_bytes()
        # no client certificate: the server refuses the handshake, nothing is written
        bare = sync.online_sync(
            url, tmp_path / "bare", timeout=10, context=sync.make_ssl_context(ca=pki.path("ca.pem"))
        )
        assert bare.downloaded == [] and bare.errors and not (tmp_path / "bare").exists()
        # a certificate of another CA is refused too
        rogue = sync.make_ssl_context(
            pki.path("rogue-client.pem"), pki.path("rogue-client.key"), pki.path("ca.pem")
        )
        assert sync.online_sync(url, tmp_path / "rogue", timeout=10, context=rogue).downloaded == []


def test_online_sync_refuses_an_untrusted_server(pki: Pki, tmp_path: Path) -> None:
    served = tmp_path / "online"
    remote_file(served, names(123401), 3000)
    with https_root(pki, served, server_cert="rogue-server") as url:
        context = sync.make_ssl_context(pki.path("client.pem"), pki.path("client.key"), pki.path("ca.pem"))
        report = sync.online_sync(url, tmp_path / "dest", timeout=10, context=context)
        assert report.downloaded == [] and len(report.errors) == 1
        assert "CERTIFICATE_VERIFY_FAILED" in report.errors[0], report.errors
        # nor does the system's CA store trust it
        report = sync.online_sync(url, tmp_path / "dest", timeout=10)
        assert report.downloaded == [] and "CERTIFICATE_VERIFY_FAILED" in report.errors[0]
    assert not (tmp_path / "dest").exists()


def test_online_sync_task_over_https_with_a_grid_proxy(
    pki: Pki, settings: config.Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings name no certificate: X509_USER_PROXY (an RFC 3820 proxy, chain and key in one file) and a
    CA directory in X509_CERT_DIR are used, as the original daemon did."""
    from t0dqm.tasks import sync as tasks

    proxy = tmp_path / "x509up"
    proxy.write_text(Path(pki.path("proxy-chain.pem")).read_text() + Path(pki.path("proxy.key")).read_text())
    cadir = tmp_path / "certificates"
    cadir.mkdir()
    ca_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", pki.path("ca.pem")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    (cadir / f"{ca_hash}.0").write_text(Path(pki.path("ca.pem")).read_text())
    monkeypatch.setenv("X509_USER_PROXY", str(proxy))
    monkeypatch.setenv("X509_CERT_DIR", str(cadir))
    served = tmp_path / "online"
    remote_file(served, names(123401), 1000)
    with https_root(pki, served) as url:
        current = config.Settings(data=dict(settings.data, sync={"url": url, "connections": 2}))
        config.reset(current)
        try:
            result = tasks.online_sync.apply().get()
        finally:
            config.reset(settings)
    assert result["downloaded"] == [names(123401)], result
    assert (current.repository / "OnlineData" / "original" / names(123401)).exists()


def test_x509_files_from_settings_then_environment(tmp_path: Path) -> None:
    proxy = tmp_path / "x509up"
    proxy.write_text("x")
    env = {
        "X509_USER_PROXY": str(proxy),
        "X509_USER_CERT": "/c.pem",
        "X509_USER_KEY": "/k.pem",
        "X509_CERT_DIR": "/grid/certificates",
    }
    assert sync.x509_files({"cert": "/a.pem", "key": "/b.pem", "ca": "/ca.pem"}, env) == (
        "/a.pem",
        "/b.pem",
        "/ca.pem",
    )
    assert sync.x509_files({}, env) == (str(proxy), str(proxy), "/grid/certificates")
    del env["X509_USER_PROXY"]
    assert sync.x509_files({"ca": "/ca.pem"}, env) == ("/c.pem", "/k.pem", "/ca.pem")
    assert sync.x509_files({}, {}) == ("", "", "")
