"""Uploader identity: DNs of peer certificates, proxies, the allow-list, the .origin source token."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from t0dqm.formats import dropbox
from t0dqm.servers import upload_identity as identity

ORIGINAL = re.compile(r"^md5:([0-9a-f]+) (\d+) (\S+)$")  # the original receive daemon's pattern
CA = ((("countryName", "CH"),), (("organizationName", "CERN"),), (("commonName", "CERN Grid CA"),))
USER = (
    (("domainComponent", "ch"),),
    (("domainComponent", "cern"),),
    (("organizationalUnitName", "Users"),),
    (("commonName", "cmsdqm"),),
    (("commonName", "Robot: CMS DQM"),),
)


def test_peer_dn_slash_form() -> None:
    assert (
        identity.peer_dn({"subject": USER, "issuer": CA})
        == "/DC=ch/DC=cern/OU=Users/CN=cmsdqm/CN=Robot: CMS DQM"
    )
    assert identity.peer_dn(None) is None and identity.peer_dn({}) is None
    odd = {"subject": ((("1.2.3.4", "x"),),), "issuer": CA}
    assert identity.peer_dn(odd) == "/1.2.3.4=x"


@pytest.mark.parametrize("extra", ["1234567", "proxy", "limited proxy"])
def test_proxy_counts_as_its_owner(extra: str) -> None:
    proxy = {"subject": (*USER, (("commonName", extra),)), "issuer": USER}
    assert identity.peer_dn(proxy) == "/DC=ch/DC=cern/OU=Users/CN=cmsdqm/CN=Robot: CMS DQM"


def test_not_a_proxy_when_the_extra_part_is_not_a_proxy_cn() -> None:
    cert = {"subject": (*USER, (("commonName", "Someone"),)), "issuer": USER}
    assert identity.peer_dn(cert).endswith("/CN=Someone")
    assert identity.peer_dn({"subject": USER[:2], "issuer": USER[:2]}) == "/DC=ch/DC=cern"


@pytest.mark.parametrize(
    "scheme, peer, dn",
    [
        ("http", "127.0.0.1", None),
        ("https", "::1", "/DC=ch/DC=cern/OU=Users/CN=cmsdqm/CN=Robot: CMS DQM"),
        ("https", "10.0.0.7", '/O=A;B/CN=50% sure, "quoted"\tTab'),
    ],
)
def test_origin_source_one_token_read_back(tmp_path: Path, scheme: str, peer: str, dn: str | None) -> None:
    token = identity.origin_source(scheme, peer, dn)
    text = dropbox.format_origin("0" * 32, 12, token)
    m = ORIGINAL.match(text)
    assert m and m.group(3) == token and token.startswith(f"{scheme}:{peer}")
    path = tmp_path / "x.origin"
    path.write_text(text)
    origin = dropbox.read_origin(path)
    assert origin.source == token and origin.dn == dn


def test_old_origin_forms_still_read() -> None:
    old = dropbox.parse_origin(
        "md5:" + "a" * 32 + " 41082 http:127.0.0.1 [organizationName=CMS,commonName=Test Operator]\n"
    )
    assert old.size == 41082 and old.dn == "organizationName=CMS,commonName=Test Operator"
    producer = dropbox.parse_origin("md5:" + "a" * 32 + " 5 /path with spaces/f.root\n")
    assert producer.source == "/path with spaces/f.root" and producer.dn is None


def test_allow_list(tmp_path: Path) -> None:
    path = tmp_path / "dns"
    path.write_text("# uploaders\n\n /DC=ch / DC = cern/CN=cmsdqm \n/O=CMS/CN=Other\n")
    allow = identity.AllowList(path)
    assert allow.allows("/DC=ch/DC=cern/CN=cmsdqm") and allow.allows("/O=CMS/CN=Other")
    assert not allow.allows("/DC=ch/DC=cern/CN=cmsdqm/CN=x") and not allow.allows(None)
    path.write_text("/O=CMS/CN=Other\n")
    os.utime(path, ns=(1, 10**18))  # a new mtime even within the same clock tick
    assert not allow.allows("/DC=ch/DC=cern/CN=cmsdqm") and allow.allows("/O=CMS/CN=Other")
    path.unlink()
    assert not allow.allows("/O=CMS/CN=Other")  # an unreadable list refuses, never allows everybody
    with pytest.raises(FileNotFoundError):
        identity.AllowList(tmp_path / "missing")
