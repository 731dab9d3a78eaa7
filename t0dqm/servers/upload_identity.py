"""Who uploads: the TLS context of the endpoint, the client certificate's subject DN, the allow-list, and the
``.origin`` source token.

DNs are written in the grid's slash form (``/DC=ch/DC=cern/OU=Users/CN=cmsdqm``), as ``openssl x509 -noout
-subject -nameopt compat`` and ``voms-proxy-info`` print them. For an RFC 3820 proxy (subject = issuer's
subject + CN) the identity is the issuer's DN, so an allow-list names people and robots, not their proxies.

The ``.origin`` third field stays one token without spaces (the original receive daemon reads
``^md5:([0-9a-f]+) (\\d+) (\\S+)$``): ``http:<peer>``, or ``https:<peer>;dn=<DN percent-encoded>`` over TLS;
:func:`t0dqm.formats.dropbox.parse_origin` decodes it.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.parse
from pathlib import Path
from typing import Any

log = logging.getLogger("t0dqm.servers.upload")

# OpenSSL long names (what ssl.getpeercert() gives) -> the short names of the slash form
SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "domainComponent": "DC",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "emailAddress": "emailAddress",
    "userId": "UID",
    "serialNumber": "serialNumber",
    "givenName": "GN",
    "surname": "SN",
}
DN_SAFE = "/=:@,.-_+()'"
PROXY_CN = ("proxy", "limited proxy")


def server_ssl_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    """TLS for the endpoint: every client must present a certificate signed by ``ca`` (file or directory);
    RFC 3820 proxy certificates are accepted."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if os.path.isdir(ca):
        ctx.load_verify_locations(capath=ca)
    else:
        ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
    return ctx


def _rdns(name: Any) -> list[tuple[str, str]]:
    return [(SHORT.get(k, k), v) for rdn in name or () for k, v in rdn]


def slash_dn(rdns: list[tuple[str, str]]) -> str:
    return "".join(f"/{k}={v}" for k, v in rdns)


def peer_dn(cert: dict[str, Any] | None) -> str | None:
    """The identity DN of a peer certificate as ``ssl.SSLSocket.getpeercert()`` returns it (None: no cert)."""
    if not cert:
        return None
    subject, issuer = _rdns(cert.get("subject")), _rdns(cert.get("issuer"))
    if (
        len(subject) > len(issuer)
        and subject[: len(issuer)] == issuer
        and all(k == "CN" and (v.isdigit() or v in PROXY_CN) for k, v in subject[len(issuer) :])
    ):
        subject = issuer  # a proxy: the identity is the certificate it was signed with
    return slash_dn(subject)


def origin_source(scheme: str, peer: str, dn: str | None) -> str:
    """The ``.origin`` source token: ``http:<peer>`` or ``https:<peer>;dn=<encoded DN>``, never a space."""
    token = f"{scheme}:{peer}".replace(" ", "%20")
    if dn:
        token += ";dn=" + urllib.parse.quote(dn, safe=DN_SAFE)
    return token


def normalise(dn: str) -> str:
    """A DN of an allow-list line in the slash form, blanks around separators removed."""
    parts = [p.strip() for p in dn.strip().split("/") if p.strip()]
    return "".join("/" + "=".join(s.strip() for s in p.split("=", 1)) for p in parts)


class AllowList:
    """Subject DNs allowed to upload, one per line (``#`` comments); re-read when the file changes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._dns: frozenset[str] = frozenset()
        self.load()

    def load(self) -> frozenset[str]:
        st = self.path.stat()  # a missing allow-list is an error, never "allow everybody"
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            if stamp != self._stamp:
                lines = self.path.read_text(encoding="utf-8").splitlines()
                self._dns = frozenset(
                    normalise(line) for line in lines if line.strip() and not line.lstrip().startswith("#")
                )
                self._stamp = stamp
                log.info("upload allow-list %s: %d DN(s)", self.path, len(self._dns))
            return self._dns

    def allows(self, dn: str | None) -> bool:
        if dn is None:
            return False
        try:
            dns = self.load()
        except OSError as exc:
            log.error("upload allow-list %s unreadable (%s): refusing", self.path, exc)
            return False
        return normalise(dn) in dns
