"""What a TLS client is served: the serial of the certificate a new connection gets."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509


def served_serial(port: int, ca: bytes, name: str) -> int:
    """The serial of the certificate a new TLS connection gets (ALPN h2, as Envoy asks)."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            context.wrap_socket(sock, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return int(x509.load_der_x509_certificate(der).serial_number)
