"""The certificates of the isolation lab (docs/resolver-isolation.md).

One hop CA (what the control plane's identity/certs.py already makes), the terminator's
server certificate (the name sidecars verify today, ``tenant-resolver.dns-controlplane``),
and client certificates whose only identity is a SPIFFE-like URI SAN carrying the tenant:

    spiffe://dns-controlplane/tenant/<tenant>/ns/<namespace>/pod/<pod>

Made here: a valid one for tenants a and b, an expired one for a, one for a signed by a
rogue CA, and a second valid one for a (rotation). ``issue_client_cert`` is the function
identity/certs.py would gain.
"""

from __future__ import annotations

import datetime
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "dns-controlplane"
SERVER_NAME = "tenant-resolver.dns-controlplane"


def spiffe_id(tenant: str, namespace: str, pod: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/tenant/{tenant}/ns/{namespace}/pod/{pod}"


def tenant_prefix(tenant: str) -> str:
    """What the terminator's filter chain of ``tenant`` matches (the trailing slash keeps
    tenant ``a`` from matching ``ab``)."""
    return f"spiffe://{TRUST_DOMAIN}/tenant/{tenant}/"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def _leaf(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *, common: str,
          san: x509.GeneralName, usage: x509.ObjectIdentifier,
          not_before: datetime.datetime, not_after: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_client_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, *,
                      tenant: str, namespace: str, pod: str, lifetime: datetime.timedelta,
                      now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A sidecar's hop client certificate: (cert PEM, key PEM). The subject is empty of
    meaning; the URI SAN is the identity the terminator checks."""
    now = now or datetime.datetime.now(datetime.UTC)
    uri = spiffe_id(tenant, namespace, pod)
    return _leaf(ca, ca_key, common=f"{tenant}/{namespace}/{pod}",
                 san=x509.UniformResourceIdentifier(uri), usage=ExtendedKeyUsageOID.CLIENT_AUTH,
                 not_before=now - datetime.timedelta(minutes=5), not_after=now + lifetime)


def write(directory: Path, name: str, cert: bytes, key: bytes) -> None:
    (directory / f"{name}.crt").write_bytes(cert)
    (directory / f"{name}.key").touch(mode=0o600)
    (directory / f"{name}.key").write_bytes(key)


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def main(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = make_ca("dns-controlplane hop CA")
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "ca.key").touch(mode=0o600)
    (directory / "ca.key").write_bytes(_pem_key(ca_key))
    write(directory, "server", *_leaf(
        ca, ca_key, common=SERVER_NAME, san=x509.DNSName(SERVER_NAME),
        usage=ExtendedKeyUsageOID.SERVER_AUTH, not_before=now - datetime.timedelta(minutes=5),
        not_after=now + datetime.timedelta(days=365)))
    hours4 = datetime.timedelta(hours=4)
    write(directory, "a", *issue_client_cert(ca, ca_key, tenant="a", namespace="team-a",
                                             pod="web-1", lifetime=hours4))
    write(directory, "a-next", *issue_client_cert(ca, ca_key, tenant="a", namespace="team-a",
                                                  pod="web-1", lifetime=hours4))
    write(directory, "b", *issue_client_cert(ca, ca_key, tenant="b", namespace="team-b",
                                             pod="api-1", lifetime=hours4))
    write(directory, "a-expired", *issue_client_cert(
        ca, ca_key, tenant="a", namespace="team-a", pod="web-1",
        lifetime=datetime.timedelta(hours=1), now=now - datetime.timedelta(hours=2)))
    rogue, rogue_key = make_ca("dns-controlplane hop CA")  # same name, another key
    write(directory, "a-rogue", *issue_client_cert(rogue, rogue_key, tenant="a",
                                                   namespace="team-a", pod="web-1",
                                                   lifetime=hours4))
    # tenant "ab": its prefix must not admit it to tenant "a"
    write(directory, "ab", *issue_client_cert(ca, ca_key, tenant="ab", namespace="team-ab",
                                              pod="x-1", lifetime=hours4))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
