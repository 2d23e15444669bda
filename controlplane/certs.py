"""Certificates the control plane makes itself: a private CA and server certificates it signs.

Used for the hop from the sidecars to the tenant resolvers (the resolvers serve DNS over
TLS with a certificate for ``RESOLVER_TLS_NAME``; Envoy verifies it with the CA). Files
given by an operator (a Kubernetes Secret, cert-manager) are used as they are; these are
made only when the directory holds none.
"""

from __future__ import annotations

import datetime
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


def make_ca_and_server(server_name: str, *, days: int = 365
                       ) -> tuple[bytes, bytes, bytes]:
    """(CA certificate, server certificate, server key) in PEM, for ``server_name``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (x509.CertificateBuilder()
               .subject_name(_name("dns-controlplane resolver CA"))
               .issuer_name(_name("dns-controlplane resolver CA"))
               .public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                            crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False,
                                            key_agreement=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(_name(server_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca_cert.public_bytes(pem), cert.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))


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
