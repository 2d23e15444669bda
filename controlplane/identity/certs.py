"""Certificates the control plane makes itself: a private CA and server certificates it signs.

Used for the hop from the sidecars to the tenant resolvers (the resolvers serve DNS over
TLS with a certificate for ``RESOLVER_TLS_NAME``; Envoy verifies it with the CA). Files
given by an operator (a Kubernetes Secret, cert-manager) are used as they are; these are
made only when the directory holds none.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE, CERT_FILE, KEY_FILE = "ca.crt", "tls.crt", "tls.key"


@dataclass(frozen=True, slots=True)
class ServerTls:
    ca_pem: str
    cert_file: Path
    key_file: Path
    server_name: str


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
    ca_pem, ca_key_pem = make_ca(common_name="dns-controlplane CA", days=days)
    cert_pem, key_pem = issue_server_cert(ca_pem, ca_key_pem, [server_name], days=days)
    return ca_pem, cert_pem, key_pem


def server_tls(directory: Path, server_name: str) -> ServerTls:
    """The CA and server certificate in ``directory`` (ca.crt, tls.crt, tls.key), made
    there when absent."""
    ca, cert, key = directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE
    if not (ca.exists() and cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        ca_pem, cert_pem, key_pem = make_ca_and_server(server_name)
        ca.write_bytes(ca_pem)
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
    return ServerTls(ca.read_text(), cert, key, server_name)
