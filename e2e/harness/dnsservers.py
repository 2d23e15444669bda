"""Real DNS servers for the end-to-end tests: a tenant's own server speaking plain DNS,
DNS over TLS and DNS over HTTPS (Debian's unbound), and a private CA for its certificate.

Each server answers a fixed set of records from ``local-data`` (no recursion, no
network) and counts what it was asked per transport, so a test can prove which
port a query used: ``num.query.tls`` and ``num.query.https`` against the total.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from controlplane._kit.localrun import Process, find_tool, free_port
from controlplane.resolvers.pool import parse_stats


@dataclass(frozen=True)
class PrivateCA:
    """A private CA and one server certificate it signed."""

    ca_pem: Path
    cert_pem: Path
    key_pem: Path
    server_name: str


def make_ca(directory: Path, server_name: str, *, label: str = "ca",
            usage: str = "serverAuth") -> PrivateCA:
    """A CA and a certificate for ``server_name`` (SAN), made with openssl; ``usage`` is its
    extended key usage (``clientAuth`` for a client certificate)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / f"{label}.key", directory / f"{label}.pem"
    key, csr, cert = (directory / f"{label}-server.key", directory / f"{label}-server.csr",
                      directory / f"{label}-server.pem")
    ext = directory / f"{label}-ext.cnf"
    ext.write_text(f"subjectAltName=DNS:{server_name}\nextendedKeyUsage={usage}\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_pem), "-days", "2", "-subj", f"/CN=test {label}")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={server_name}")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return PrivateCA(ca_pem, cert, key, server_name)


@dataclass
class UnboundServer:
    """A tenant's own DNS server: fixed records over plain DNS, DoT and DoH."""

    records: list[str]  # local-data lines, e.g. "www.example.com. A 203.0.113.10"
    workdir: Path
    tls: PrivateCA | None = None
    port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / f"server-{self.port}.conf"

    def start(self, timeout: float = 10.0) -> UnboundServer:
        unbound = find_tool("unbound")
        if unbound is None:
            raise FileNotFoundError("unbound not found (apt-get install unbound)")
        lines = [
            "server:", "  do-daemonize: no", '  username: ""', '  chroot: ""',
            f'  directory: "{self.workdir}"', '  pidfile: ""', "  use-syslog: no",
            '  logfile: ""', "  verbosity: 1", "  num-threads: 1", "  so-reuseport: no",
            "  extended-statistics: yes", "  log-queries: yes",
            f"  interface: 127.0.0.1@{self.port}",
            f"  port: {self.port}",
            '  local-zone: "." static',  # answers only its own records, never recurses
            *(f'  local-data: "{r}"' for r in self.records),
        ]
        if self.tls is not None:
            lines += [
                f"  interface: 127.0.0.1@{self.tls_port}",
                f"  interface: 127.0.0.1@{self.https_port}",
                f"  tls-port: {self.tls_port}",
                f"  https-port: {self.https_port}",
                f'  tls-service-key: "{self.tls.key_pem}"',
                f'  tls-service-pem: "{self.tls.cert_pem}"',
                '  http-endpoint: "/dns-query"',
            ]
        lines += ["remote-control:", "  control-enable: yes",
                  f'  control-interface: "{self.workdir / f"server-{self.port}.sock"}"',
                  "  control-use-cert: no", ""]
        self.conf.write_text("\n".join(lines))
        self.process = Process(f"unbound-server-{self.port}", [unbound, "-d", "-c",
                                                               str(self.conf)],
                               self.workdir / f"server-{self.port}.log").start()
        from controlplane._kit.localrun import wait_for

        wait_for(lambda: self._control("status") is not None, timeout=timeout,
                 what="tenant DNS server (unbound)")
        return self

    def _control(self, command: str) -> str | None:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"unbound server exited:\n{self.process.log()[-2000:]}")
        control = find_tool("unbound-control")
        assert control is not None
        done = subprocess.run([control, "-c", str(self.conf), command], capture_output=True,
                              text=True, timeout=10, check=False)
        return done.stdout if done.returncode == 0 else None

    def stats(self) -> dict[str, float]:
        """Counters so far: ``total.num.queries``, ``num.query.tls``, ``num.query.https``..."""
        text = self._control("stats_noreset")
        return parse_stats(text or "")

    def queries(self) -> tuple[int, int, int]:
        """(all, over TLS, over HTTPS) queries received so far."""
        s = self.stats()
        return (int(s.get("total.num.queries", 0)), int(s.get("num.query.tls", 0)),
                int(s.get("num.query.https", 0)))

    def asked(self) -> list[str]:
        """``NAME TYPE`` of every query received, in order (from ``log-queries``)."""
        assert self.process is not None
        out = []
        for line in self.process.log().splitlines():
            parts = line.split()
            if "info:" in parts and len(parts) >= 3 and parts[-1] == "IN":
                out.append(f"{parts[-3].rstrip('.').lower()} {parts[-2]}")
        return out

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None
