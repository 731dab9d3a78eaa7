"""The DQM GUI's own upload client, ``bin/visDQMUpload`` (Python 3, cms-DQM/dqmgui_prod), run unchanged
against the endpoint over http and over TLS with client certificates.

The client is not part of this repository: point ``T0DQM_DQMGUI_PROD`` at a checkout of cms-DQM/dqmgui_prod
(it needs ``bin/visDQMUpload`` and ``src/python/DQM/visDQMUtils.py``), e.g.
``git clone https://github.com/cms-DQM/dqmgui_prod /opt/dqmgui_prod``, then run from the repository root:

    T0DQM_DQMGUI_PROD=/opt/dqmgui_prod .venv/bin/python -m pytest -q ops/dev/interop

This interoperability check lives outside ``tests/`` because the client comes from GitHub, which CI cannot
reach; the suite speaks the same protocol with its own client (test_upload_server.client_upload).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from t0dqm.dev import simulate
from t0dqm.formats import dropbox
from t0dqm.servers import upload as upload_server
from tests.integration.pki import CLIENT_SUBJECT, Pki, make_pki

CHECKOUT = os.environ.get("T0DQM_DQMGUI_PROD", "")
if not CHECKOUT:
    raise pytest.UsageError("set T0DQM_DQMGUI_PROD to a checkout of cms-DQM/dqmgui_prod (see the docstring)")

NAME = "DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the client script, a PYTHONPATH with Monitoring.DQM.visDQMUtils as the RPM installs it)."""
    top = Path(CHECKOUT)
    lib = tmp_path_factory.mktemp("pylib")
    (lib / "Monitoring" / "DQM").mkdir(parents=True)
    (lib / "Monitoring" / "__init__.py").write_text("")
    (lib / "Monitoring" / "DQM" / "__init__.py").write_text("")
    shutil.copy(
        top / "src" / "python" / "DQM" / "visDQMUtils.py", lib / "Monitoring" / "DQM" / "visDQMUtils.py"
    )
    return top / "bin" / "visDQMUpload", lib


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return tmp_path / "uploads"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    src = tmp_path / "src"
    src.mkdir()
    good = src / NAME
    simulate.write_dqm_file(good, 357902, ["Muon"], n_hists=20)
    not_root = src / "not" / NAME
    not_root.parent.mkdir()
    not_root.write_bytes(b"this is not a ROOT file\n" * 10)
    empty = src / "empty" / NAME
    empty.parent.mkdir()
    empty.write_bytes(b"")
    big = src / "big" / NAME  # read mostly straight from the body (t0dqm.servers.upload_framing)
    big.parent.mkdir()
    big.write_bytes(b"root\0" + os.urandom((64 << 20) - 5))
    return {"good": good, "not_root": not_root, "empty": empty, "big": big}


def run(
    client: tuple[Path, Path], url: str, path: Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    script, lib = client
    full = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(path.parent),
        "PYTHONPATH": str(lib),
        **(env or {}),
    }
    out = subprocess.run(
        [sys.executable, str(script), url, str(path)],
        capture_output=True,
        text=True,
        env=full,
        timeout=120,
        check=False,
    )
    return out.returncode, out.stdout + out.stderr


def check_behaviour(
    client: tuple[Path, Path], url: str, box: Path, files: dict[str, Path], env: dict[str, str] | None = None
) -> None:
    code, out = run(client, url, files["good"], env)
    assert code == 0 and "Status code:  100" in out, out
    code, out = run(client, url, files["good"], env)
    assert code == 0 and (box / "0001" / NAME).exists(), out  # a duplicate takes the next slot
    for bad in ("not_root", "empty"):
        code, out = run(client, url, files[bad], env)
        assert (
            code == 1 and "HTTP Error 500" in out and "Status code:  300" in out and "Not a ROOT file" in out
        ), out
    code, out = run(client, url, files["good"].with_name("DQM_V0001_R000000042.root"), env)
    assert code == 1, out  # the client's own name check
    code, out = run(client, url, files["big"], env)
    assert code == 0 and (box / "0002" / NAME).read_bytes() == files["big"].read_bytes(), out
    assert sorted(p.parent.name for p in box.glob("*/" + NAME)) == ["0000", "0001", "0002"]
    assert list((box / dropbox.UPLOADING).iterdir()) == []


def test_real_client_over_http(client: tuple[Path, Path], box: Path, files: dict[str, Path]) -> None:
    srv = upload_server.make_server("127.0.0.1", 0, box)
    srv.start()
    try:
        check_behaviour(client, srv.url + "/dqm/dev", box, files)
    finally:
        srv.stop()
    assert dropbox.read_origin(box / "0000" / (NAME + ".origin")).source == "http:127.0.0.1"


@pytest.fixture
def tls_env(pki: Pki) -> Iterator[dict[str, str]]:
    yield {
        "X509_USER_CERT": pki.path("client.pem"),
        "X509_USER_KEY": pki.path("client.key"),
        "SSL_CERT_FILE": pki.path("ca.pem"),
    }


def test_real_client_over_tls_with_client_certificate(
    client: tuple[Path, Path],
    box: Path,
    files: dict[str, Path],
    pki: Pki,
    tls_env: dict[str, str],
    tmp_path: Path,
) -> None:
    allowed = tmp_path / "allowed"
    allowed.write_text(CLIENT_SUBJECT + "\n")
    srv = upload_server.make_server(
        "127.0.0.1",
        0,
        box,
        cert=pki.path("server.pem"),
        key=pki.path("server.key"),
        ca=pki.path("ca.pem"),
        allowed_dns=str(allowed),
    )
    srv.start()
    try:
        check_behaviour(client, srv.url + "/dqm/dev", box, files, tls_env)
        origin = dropbox.read_origin(box / "0000" / (NAME + ".origin"))
        assert origin.source.startswith("https:127.0.0.1;dn=") and origin.dn == CLIENT_SUBJECT
        other = dict(tls_env, X509_USER_CERT=pki.path("other.pem"), X509_USER_KEY=pki.path("other.key"))
        code, out = run(client, srv.url, files["good"], other)
        assert code == 1 and "HTTP Error 403" in out and "Status code:  300" in out, out
        assert "Certificate subject not allowed" in out
        proxy = tmp_path / "x509up"
        proxy.write_text(
            Path(pki.path("proxy-chain.pem")).read_text() + Path(pki.path("proxy.key")).read_text()
        )
        code, out = run(
            client,
            srv.url,
            files["good"],
            {"X509_USER_PROXY": str(proxy), "SSL_CERT_FILE": pki.path("ca.pem")},
        )
        assert code == 0 and "Status code:  100" in out, out
    finally:
        srv.stop()
