"""A throw-away PKI made with the openssl CLI: a CA, server and client certificates, an RFC 3820 proxy of the
client, and a second (untrusted) CA with its own server and client certificates."""

from __future__ import annotations

import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENT_SUBJECT = "/O=CMS/OU=Users/CN=Test Operator"
OTHER_SUBJECT = "/O=CMS/OU=Users/CN=Someone Else"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str, subject: str) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        subject,
        "-keyout",
        str(d / f"{name}.key"),
        "-out",
        str(d / f"{name}.pem"),
    )


def _issue(d: Path, name: str, subject: str, ca: str, ext: str) -> None:
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        str(d / f"{name}.key"),
        "-out",
        str(d / f"{name}.csr"),
    )
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(d / f"{name}.csr"),
        "-CA",
        str(d / f"{ca}.pem"),
        "-CAkey",
        str(d / f"{ca}.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        str(d / f"{name}.ext"),
        "-out",
        str(d / f"{name}.pem"),
    )


SERVER_EXT = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
CLIENT_EXT = "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment"


@dataclass(frozen=True)
class Pki:
    d: Path

    def path(self, name: str) -> str:
        return str(self.d / name)

    def client_context(self, who: str = "client", ca: str = "ca") -> ssl.SSLContext:
        """A client context trusting ``ca`` and presenting ``who``'s certificate (none when ``who`` is '')."""
        ctx = ssl.create_default_context(cafile=self.path(f"{ca}.pem"))
        if who:
            ctx.load_cert_chain(self.path(f"{who}.pem"), self.path(f"{who}.key"))
        return ctx


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    _ca(d, "ca", "/CN=t0dqm test CA")
    _issue(d, "server", "/CN=localhost", "ca", SERVER_EXT)
    _issue(d, "client", CLIENT_SUBJECT, "ca", CLIENT_EXT)
    _issue(d, "other", OTHER_SUBJECT, "ca", CLIENT_EXT)
    # an RFC 3820 proxy signed by the client's own certificate (subject = client's + /CN=<number>)
    _issue(
        d,
        "proxy",
        CLIENT_SUBJECT + "/CN=1234567",
        "client",
        "proxyCertInfo=critical,language:id-ppl-inheritAll\nkeyUsage=critical,digitalSignature,keyEncipherment",
    )
    (d / "proxy-chain.pem").write_text((d / "proxy.pem").read_text() + (d / "client.pem").read_text())
    _ca(d, "rogue-ca", "/CN=untrusted CA")
    _issue(d, "rogue-server", "/CN=localhost", "rogue-ca", SERVER_EXT)
    _issue(d, "rogue-client", CLIENT_SUBJECT, "rogue-ca", CLIENT_EXT)
    return Pki(d)
