"""The xDS serving certificate: read from files, reloaded when they change, made for a start.

``serve --xds-tls-dir DIR`` serves ADS over TLS with ``DIR/tls.crt`` (the leaf,
then any intermediates) and ``DIR/tls.key``. In Kubernetes ``DIR`` is a mounted
Secret (cert-manager's, or one made with ``controlplane xds-certs``); the
kubelet replaces its files atomically (a ``..data`` symlink swap) when the
Secret changes.

Reload: gRPC calls :meth:`CertificateFiles.fetch` before every new TLS
handshake (``grpc.dynamic_ssl_server_credentials``). It ``stat``s both files
(a few microseconds) and re-reads them only when their identity (inode,
size, mtime, ctime) changed, so a rotated certificate is served to the next
connection. Established connections keep the session they negotiated: their
ADS streams go on. A pair that does not parse or whose key does not match
the certificate (a rotation caught half-way, when the files are not replaced
atomically) is not served: the previous pair stays, the problem is logged
once and counted, and the next change is tried again.

``controlplane xds-certs`` makes a private CA (``ca.crt``, ``ca.key``) when the
directory has none, and a new leaf signed by it at each run: the CA stays, so
sidecars that trust ``ca.crt`` accept the new leaf (rotation without touching
the sidecars).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controlplane.core.errors import ConfigError
from controlplane.identity.certs import issue_server_cert, make_ca

log = logging.getLogger("controlplane.tls")

CERT_FILE, KEY_FILE, CA_FILE, CA_KEY_FILE = "tls.crt", "tls.key", "ca.crt", "ca.key"


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What a served certificate is, for logs and metrics."""

    serial: int
    not_after: float  # Unix time
    names: tuple[str, ...]  # DNS and IP SANs
    sha256: str  # of the leaf, DER

    def describe(self) -> str:
        expires = datetime.datetime.fromtimestamp(self.not_after, datetime.UTC)
        return (f"serial {self.serial:x}, SANs {', '.join(self.names) or '-'}, "
                f"expires {expires:%Y-%m-%dT%H:%M:%SZ}, sha256 {self.sha256[:16]}")


def parse_pair(cert_pem: bytes, key_pem: bytes) -> CertInfo:
    """Check a certificate chain and its key belong together; raise ValueError otherwise."""
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise ValueError(f"{CERT_FILE} is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{KEY_FILE} is not an unencrypted PEM private key: {exc}") from exc
    leaf = chain[0]
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ValueError(f"{KEY_FILE} is not the key of the first certificate in {CERT_FILE}")
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertInfo(serial=leaf.serial_number, not_after=leaf.not_valid_after_utc.timestamp(),
                    names=tuple(names),
                    sha256=hashlib.sha256(leaf.public_bytes(der)).hexdigest())


def _identity(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()  # follows the Secret volume's symlinks to the current file
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class CertificateFiles:
    """``tls.crt`` and ``tls.key`` in a directory, re-read when they change.

    Thread-safe: gRPC calls :meth:`fetch` from its own threads.
    """

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.cert_file = directory / CERT_FILE
        self.key_file = directory / KEY_FILE
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: tuple[tuple[int, int, int, int], ...] | None = None
        self._pair: tuple[bytes, bytes] | None = None
        self._pending: tuple[bytes, bytes] | None = None  # loaded, not yet handed to gRPC
        self.info: CertInfo | None = None
        self.loaded_at = 0.0  # wall time of the last successful (re)load
        self.reloads = 0  # successful loads after the first
        self.errors = 0
        self.problem = ""  # why the files on disk are not being served, if they are not

    def load(self) -> tuple[bytes, bytes]:
        """The first load: (key PEM, certificate PEM); ConfigError when unusable."""
        with self._lock:
            self._refresh()
            if self._pair is None:
                raise ConfigError(f"{self.directory}: {self.problem}")
            self._pending = None
            return self._pair

    def poll(self) -> bool:
        """Re-read the files if they changed; True when a new pair is now current."""
        with self._lock:
            return self._refresh()

    def fetch(self) -> tuple[bytes, bytes] | None:
        """For gRPC: the new (key, certificate) when the files changed since the last
        call, else None (keep serving the current pair)."""
        with self._lock:
            self._refresh()
            pending, self._pending = self._pending, None
            return pending

    def _refresh(self) -> bool:
        try:
            seen = (_identity(self.cert_file), _identity(self.key_file))
        except OSError as exc:
            return self._fail(None, f"cannot read the certificate files: {exc}")
        if seen == self._seen:
            return False
        try:
            cert_pem, key_pem = self.cert_file.read_bytes(), self.key_file.read_bytes()
            info = parse_pair(cert_pem, key_pem)
        except (OSError, ValueError) as exc:
            return self._fail(seen, str(exc))
        first = self._pair is None
        self._seen, self._pair, self._pending = seen, (key_pem, cert_pem), (key_pem, cert_pem)
        self.info, self.loaded_at, self.problem = info, self._clock(), ""
        if not first:
            self.reloads += 1
            log.info("xDS serving certificate reloaded from %s: %s (new connections get it)",
                     self.directory, info.describe())
        else:
            log.info("xDS serving certificate from %s: %s", self.directory, info.describe())
        if info.not_after < self._clock():
            log.warning("the xDS serving certificate in %s has expired: sidecars will refuse "
                        "it", self.directory)
        return True

    def _fail(self, seen: tuple[tuple[int, int, int, int], ...] | None, problem: str) -> bool:
        if seen is not None and seen == self._seen:
            return False
        if problem != self.problem or seen is not None:
            self.errors += 1
            if self._pair is not None:
                log.warning("xDS serving certificate in %s not reloaded, the previous one "
                            "stays: %s", self.directory, problem)
        self._seen = seen if seen is not None else self._seen
        self.problem = problem
        return False


def server_credentials(files: CertificateFiles) -> Any:
    """gRPC server credentials that serve the files' current pair, reloaded on change."""
    import grpc

    key, cert = files.load()

    def fetch() -> Any:
        pair = files.fetch()
        if pair is None:
            return None
        return grpc.ssl_server_certificate_configuration([pair])

    return grpc.dynamic_ssl_server_credentials(
        grpc.ssl_server_certificate_configuration([(key, cert)]), fetch,
        require_client_authentication=False)


def server_ssl_context(files: CertificateFiles) -> ssl.SSLContext:
    """An ``ssl`` server context (for the admin API's HTTPS) serving the files' current
    pair, reloaded when they change: OpenSSL calls the servername callback on every
    ClientHello, with or without SNI, and it switches the connection to a context
    built from the new files. A pair that does not load keeps the previous one."""
    files.load()

    def build() -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(files.cert_file, files.key_file)
        return context

    current = [build()]

    def on_hello(conn: ssl.SSLObject | ssl.SSLSocket, name: str | None,
                 ctx: ssl.SSLContext) -> None:
        if files.poll():
            try:
                current[0] = build()
            except (OSError, ssl.SSLError) as exc:
                log.warning("admin API certificate in %s not reloaded: %s", files.directory,
                            exc)
        conn.context = current[0]

    outer = build()
    outer.sni_callback = on_hello
    return outer


class TlsCollector:
    """Prometheus metrics of the serving certificate (read at scrape time)."""

    def __init__(self, files: CertificateFiles) -> None:
        self.files = files

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        self.files.poll()
        info = self.files.info
        yield GaugeMetricFamily(
            "dnscp_xds_tls_certificate_expiry_timestamp_seconds",
            "notAfter of the xDS serving certificate new connections get (Unix time)",
            value=info.not_after if info else 0.0)
        yield CounterMetricFamily("dnscp_xds_tls_certificate_reloads",
                                  "Times a changed xDS serving certificate was loaded",
                                  value=self.files.reloads)
        yield CounterMetricFamily(
            "dnscp_xds_tls_certificate_reload_errors",
            "Changed certificate files that could not be used (the previous pair stayed)",
            value=self.files.errors)


# -- making certificates (``controlplane xds-certs``, tests) --------------------------------


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _swap_in(directory: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Replace several files at once, the way the kubelet updates a Secret volume: write
    them to a new ``..<time>`` directory, then swap the ``..data`` symlink to it (one
    atomic rename); ``NAME`` is a symlink to ``..data/NAME``."""
    stamp = directory / f"..{time.time_ns()}"
    stamp.mkdir(mode=0o755)
    for name, (data, mode) in files.items():
        write_atomically(stamp / name, data, mode=mode)
    tmp_link = directory / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    os.symlink(stamp.name, tmp_link)
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.replace(tmp_link, directory / "..data")
    for name in files:
        link = directory / name
        if not (link.is_symlink() and os.readlink(link) == f"..data/{name}"):
            tmp = directory / f".{name}.link"
            tmp.unlink(missing_ok=True)
            os.symlink(f"..data/{name}", tmp)
            os.replace(tmp, link)
    if old and old != stamp.name and (directory / old).is_dir():
        for child in (directory / old).iterdir():
            child.unlink()
        (directory / old).rmdir()


def write_server_files(directory: Path, names: Sequence[str], *, days: int = 90
                       ) -> CertInfo:
    """Make (or keep) the CA in ``directory`` and write a new ``tls.crt``/``tls.key`` for
    ``names`` signed by it, both replaced in one atomic step (as the kubelet does)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / CA_FILE, directory / CA_KEY_FILE
    if not (ca.exists() and ca_key.exists()):
        ca_pem, ca_key_pem = make_ca()
        write_atomically(ca_key, ca_key_pem, mode=0o600)
        write_atomically(ca, ca_pem)
    cert_pem, key_pem = issue_server_cert(ca.read_bytes(), ca_key.read_bytes(), names,
                                          days=days)
    _swap_in(directory, {KEY_FILE: (key_pem, 0o600), CERT_FILE: (cert_pem, 0o644)})
    return parse_pair(cert_pem, key_pem)


def ca_bundle(directory: Path) -> str:
    """The CA bundle beside the serving pair (``ca.crt``: cert-manager and xds-certs write
    it), for bootstraps; "" when there is none."""
    path = directory / CA_FILE
    return path.read_text() if path.is_file() else ""
