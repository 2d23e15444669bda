"""Certificates the control plane makes itself: a private CA and server certificates it signs.

Used for the hop from the sidecars to the tenant resolvers (the resolvers serve DNS over
TLS with a certificate for ``RESOLVER_TLS_NAME``; Envoy verifies it with the CA). Files
given by an operator (a Kubernetes Secret, cert-manager) are used as they are; these are
made only when the directory holds none.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"
CA_KEY_FILE = "ca.key"  # kept to sign the hop's client certificates (--resolver-hop mtls)
HOP_TRUST_DOMAIN = "dns-controlplane"


@dataclass(frozen=True, slots=True)
class ServerTls:
    ca_pem: str
    cert_file: Path
    key_file: Path
    server_name: str
    ca_key_file: Path | None = None  # present when this CA may sign (mtls)


def _segment(value: str) -> str:
    """One path segment of a hop URI: every byte but unreserved ones percent-encoded, so
    a ``/`` in a tenant name can never end its segment early."""
    return quote(value, safe="")


def hop_tenant_prefix(tenant: str) -> str:
    """What the terminator's chain of ``tenant`` admits: the URI SANs starting with this.
    The trailing ``/`` keeps tenant ``a`` from admitting tenant ``ab``."""
    return f"spiffe://{HOP_TRUST_DOMAIN}/tenant/{_segment(tenant)}/"


def hop_sni(tenant: str, server_name: str) -> str:
    """The SNI a tenant's sidecars send to the terminator, which picks the tenant's chain by
    it: ``<tenant>.<server_name>`` when the tenant is a DNS label, else ``t-`` and 16 hex
    digits of its SHA-256 (the same on every replica)."""
    if re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", tenant) and not tenant.startswith("t-"):
        return f"{tenant}.{server_name}"
    return f"t-{hashlib.sha256(tenant.encode()).hexdigest()[:16]}.{server_name}"


def hop_client_uri(tenant: str, namespace: str = "", *, pod: str = "", node: str = "") -> str:
    """The URI SAN of a hop client certificate. The tenant form (no namespace; one
    certificate per tenant, what the product issues today) is the tenant prefix itself;
    per-workload forms add ``ns/<namespace>/pod/<pod>`` or ``ns/<namespace>/node/<node>``."""
    uri = hop_tenant_prefix(tenant)
    if not namespace:
        if pod or node:
            raise ValueError("a pod or node in a hop URI needs its namespace")
        return uri
    if bool(pod) == bool(node):
        raise ValueError("a workload hop URI names a pod or a node (exactly one)")
    kind, name = ("pod", pod) if pod else ("node", node)
    return f"{uri}ns/{_segment(namespace)}/{kind}/{_segment(name)}"


def issue_client_cert(ca_cert_pem: bytes, ca_key_pem: bytes, *, uri: str,
                      lifetime: datetime.timedelta, now: datetime.datetime
                      ) -> tuple[bytes, bytes]:
    """A hop client certificate whose only identity is the URI SAN ``uri`` (critical, the
    subject carries no meaning), EKU clientAuth, EC P-256, valid from 5 minutes before
    ``now`` for ``lifetime``: (certificate PEM, key PEM)."""
    if lifetime <= datetime.timedelta(0):
        raise ValueError("a client certificate's lifetime must be positive")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key (made by the control plane)")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name("dns-controlplane hop client")).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]),
                           critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(*, common_name: str = "dns-controlplane xDS CA", days: int = 3650
            ) -> tuple[bytes, bytes]:
    """A self-signed CA: (certificate PEM, key PEM)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def issue_server_cert(ca_cert_pem: bytes, ca_key_pem: bytes, names: Sequence[str], *,
                      days: int = 90) -> tuple[bytes, bytes]:
    """A server certificate for ``names`` (DNS names or IPs) signed by the CA: (cert, key)."""
    if not names:
        raise ValueError("a server certificate needs at least one name")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key must be an EC key (made by controlplane xds-certs)")
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(names[0])).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def make_ca_and_server(server_name: str, *, days: int = 365
                       ) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) in PEM, for ``server_name``."""
    ca_pem, _, cert_pem, key_pem = _ca_and_server(server_name, days=days)
    return ca_pem, cert_pem, key_pem


def _ca_and_server(server_name: str, *, days: int) -> tuple[bytes, bytes, bytes, bytes]:
    ca_pem, ca_key_pem = make_ca(common_name="dns-controlplane CA", days=days)
    cert_pem, key_pem = issue_server_cert(ca_pem, ca_key_pem, [server_name], days=days)
    return ca_pem, ca_key_pem, cert_pem, key_pem


def _write_key(path: Path, pem: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(pem)


def server_tls(directory: Path, server_name: str, *, signing: bool = False) -> ServerTls:
    """The CA and server certificate in ``directory`` (ca.crt, tls.crt, tls.key), made
    there when absent. ``signing``: the CA's key (ca.key) is needed too, to sign the hop's
    client certificates; it is kept when this makes the CA, and must be in an operator's
    directory."""
    ca, cert, key = directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE
    ca_key = directory / CA_KEY_FILE
    if not (ca.exists() and cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        ca_pem, ca_key_pem, cert_pem, key_pem = _ca_and_server(server_name, days=365)
        ca.write_bytes(ca_pem)
        cert.write_bytes(cert_pem)
        _write_key(key, key_pem)
        _write_key(ca_key, ca_key_pem)
    if signing and not ca_key.exists():
        raise ValueError(f"{directory} has no {CA_KEY_FILE}: the mutual hop signs client "
                         "certificates with the CA's key")
    return ServerTls(ca.read_text(), cert, key, server_name,
                     ca_key_file=ca_key if ca_key.exists() else None)
