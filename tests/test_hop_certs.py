"""The mutual hop's client certificates (docs/resolver-isolation.md): one per tenant, the
tenant in a URI SAN, EKU clientAuth, the lifetime asked for, re-issued at half-life."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from controlplane.identity.certs import (
    hop_client_uri,
    hop_sni,
    hop_tenant_prefix,
    issue_client_cert,
    make_ca,
    server_tls,
)
from controlplane.identity.hop_issuer import TenantCerts

T0 = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)
SERVER = "tenant-resolver.dns-controlplane"


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime.datetime:
        return self.now


@pytest.fixture(scope="module")
def ca() -> tuple[bytes, bytes]:
    return make_ca(common_name="test hop CA")


def test_a_client_certificate_carries_the_uri_alone_for_client_auth(ca: tuple[bytes, bytes]
                                                                     ) -> None:
    cert_pem, key_pem = issue_client_cert(*ca, uri=hop_client_uri("acme"),
                                          lifetime=datetime.timedelta(hours=12), now=T0)
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://dns-controlplane/tenant/acme/"]
    assert san.value.get_values_for_type(x509.DNSName) == []
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.not_valid_before_utc == T0 - datetime.timedelta(minutes=5)
    assert cert.not_valid_after_utc == T0 + datetime.timedelta(hours=12)
    assert cert.issuer == x509.load_pem_x509_certificate(ca[0]).subject
    assert b"PRIVATE KEY" in key_pem


def test_hop_uris_encode_every_segment_and_the_prefix_ends_with_a_slash() -> None:
    assert hop_tenant_prefix("a") == "spiffe://dns-controlplane/tenant/a/"
    assert not hop_client_uri("ab").startswith(hop_tenant_prefix("a"))
    assert hop_client_uri("a/b") == "spiffe://dns-controlplane/tenant/a%2Fb/"
    assert not hop_client_uri("a/b").startswith(hop_tenant_prefix("a"))
    assert hop_client_uri("a", "team a", pod="web-1") == (
        "spiffe://dns-controlplane/tenant/a/ns/team%20a/pod/web-1")
    assert hop_client_uri("a", "ns", node="vm/1").endswith("/ns/ns/node/vm%2F1")
    assert hop_client_uri("a", "ns", pod="p").startswith(hop_tenant_prefix("a"))
    with pytest.raises(ValueError):
        hop_client_uri("a", pod="p")
    with pytest.raises(ValueError):
        hop_client_uri("a", "ns")


def test_the_sni_names_the_tenant_when_it_is_a_label_else_a_stable_hash() -> None:
    assert hop_sni("acme", SERVER) == f"acme.{SERVER}"
    odd = hop_sni("Team_A", SERVER)
    assert odd.startswith("t-") and odd.endswith(f".{SERVER}") and odd == hop_sni("Team_A", SERVER)
    assert hop_sni("t-x", SERVER) != f"t-x.{SERVER}"  # never mistaken for a hashed name


def test_tenant_certificates_are_reused_then_renewed_at_half_life(ca: tuple[bytes, bytes]
                                                                  ) -> None:
    clock = FakeClock()
    certs = TenantCerts(*ca, lifetime=datetime.timedelta(hours=12), clock=clock)
    first = certs.get("a")
    assert certs.get("a") is first and certs.issued == 1
    assert first.renew_at == T0 + datetime.timedelta(hours=6)
    assert "PRIVATE KEY" not in repr(first) and "PRIVATE KEY" not in repr(certs)
    other = certs.get("b")
    clock.now = T0 + datetime.timedelta(hours=5, minutes=59)
    assert certs.due() == []
    clock.now = T0 + datetime.timedelta(hours=6)
    assert certs.due() == ["a", "b"]
    renewed = certs.get("a")
    assert renewed is not first and renewed.cert_pem != first.cert_pem
    assert renewed.not_after == clock.now + datetime.timedelta(hours=12)
    assert certs.get("b") is not other and certs.issued == 4
    certs.keep(["a"])
    assert certs.due() == [] and certs.get("a") is renewed


def test_lifetimes_under_ten_minutes_are_refused(ca: tuple[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        TenantCerts(*ca, lifetime=datetime.timedelta(minutes=9))


def test_server_tls_keeps_the_ca_key_to_sign_and_asks_for_it_when_signing(tmp_path: Path
                                                                         ) -> None:
    made = server_tls(tmp_path / "made", SERVER, signing=True)
    assert made.ca_key_file is not None and made.ca_key_file.stat().st_mode & 0o077 == 0
    operator = tmp_path / "operator"
    operator.mkdir()
    for name in ("ca.crt", "tls.crt", "tls.key"):
        (operator / name).write_bytes((tmp_path / "made" / name).read_bytes())
    assert server_tls(operator, SERVER).ca_key_file is None  # tls: not needed
    with pytest.raises(ValueError, match="ca.key"):
        server_tls(operator, SERVER, signing=True)
