"""One sidecar with its DNS front, started the way a VM starts it: ``controlplane sidecar``.

The front (kresd) listens on a pod's nameserver address (``127.0.0.X:53``, UDP and TCP,
from ``realclients.reserve_loopback_dns_address``), so real clients reach it through a
pod's resolv.conf; Envoy's DNS listener, set listener, resolver hop and admin get free
loopback ports. ``start`` waits until the front answers and the set Envoy serves holds
``expect_pair`` (a ``"TYPE name."`` line), so a test starts from a sidecar whose front
routes by the control plane's set. Stopped by its process id; the command stops its
children (and they die with it: ``setpriv --pdeathsig``).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import dns.message
import dns.query

from controlplane._kit.localrun import Process, free_port, http_text, wait_for
from e2e.harness.realclients import LoopbackDnsAddress

PORT_ATTEMPTS = 3  # starts of the sidecar when a port it was given was taken meanwhile


@dataclass(kw_only=True)
class FrontSidecar:
    xds_address: str
    node_id: str
    namespace: str
    labels: dict[str, str]
    address: LoopbackDnsAddress  # the front's address (the pod's nameserver)
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    more_xds_addresses: tuple[str, ...] = ()  # other replicas (further ADS endpoints)
    envoy_dns_port: int = field(default_factory=free_port)
    set_port: int = field(default_factory=free_port)
    hop_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def host(self) -> str:
        return self.address.host

    @property
    def set_url(self) -> str:
        return f"http://127.0.0.1:{self.set_port}/envoy-set"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def argv(self) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return [sys.executable, "-m", "controlplane", "sidecar", "--node-id", self.node_id,
                "--namespace", self.namespace, "--labels", labels,
                "--xds-address", ",".join((self.xds_address, *self.more_xds_addresses)),
                "--dns-address", f"{self.host}:{self.address.port}",
                "--envoy-dns-address", f"127.0.0.1:{self.envoy_dns_port}",
                "--set-address", f"127.0.0.1:{self.set_port}",
                "--hop-address", f"127.0.0.2:{self.hop_port}",
                "--admin-address", f"127.0.0.1:{self.admin_port}",
                "--stats-address", "off", "--workdir", str(self.workdir / "sidecar"),
                *self.extra_args]

    def start(self, *, expect_pair: str = "", timeout: float = 30.0) -> FrontSidecar:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.address.close()  # the reservation ends: kresd binds UDP and TCP itself
        for attempt in range(PORT_ATTEMPTS):
            self.process = Process(f"sidecar-{self.node_id}", self.argv(),
                                   self.workdir / "sidecar.log").start()
            state = wait_for(self._up_or_exited, timeout=timeout,
                             what=f"the DNS front of {self.node_id}")
            if state == "up":
                break
            # A free port picked earlier can be taken meanwhile (a resolver the control
            # plane started binds an ephemeral port too): the sidecar checks its ports
            # before it starts anything and names the holder; pick new ones, start again.
            if "is taken by" not in self.log() or attempt == PORT_ATTEMPTS - 1:
                raise RuntimeError(f"controlplane sidecar exited:\n{self.log()}")
            self.envoy_dns_port, self.set_port = free_port(), free_port()
            self.hop_port, self.admin_port = free_port(), free_port()
        if expect_pair:
            wait_for(lambda: expect_pair in self.set_body(), timeout=timeout,
                     what=f"{expect_pair.strip()!r} in the set of {self.node_id}")
            wait_for(self.front_has_set, timeout=timeout,
                     what=f"the front of {self.node_id} routing by that set")
        return self

    def front_has_set(self) -> bool:
        """The front logged taking a set with as many pairs as Envoy serves now (it polls
        every second: until then it sends table names to the resolver)."""
        pairs = sum(1 for line in self.set_body().splitlines() if line != "* .")
        log = self.workdir / "sidecar" / "front.log"
        return log.exists() and f": {pairs} pairs," in log.read_text(errors="replace")

    def _up_or_exited(self) -> str | None:
        assert self.process is not None
        if not self.process.alive():
            return "exited"
        return "up" if self.answers() else None

    def answers(self) -> bool:
        """The front answers over TCP (any rcode: it is up and has its config)."""
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"controlplane sidecar exited:\n{self.log()}")
        try:
            dns.query.tcp(dns.message.make_query("dns-version.cluster.local", "TXT"),
                          self.host, port=self.address.port, timeout=1.0)
        except (OSError, dns.exception.DNSException):
            return False
        return True

    def set_body(self) -> str:
        try:
            return http_text(self.set_url)
        except (OSError, urllib.error.URLError):
            return ""

    def envoy_stats(self) -> dict[str, int]:
        """Envoy's counters and gauges (name -> value)."""
        out: dict[str, int] = {}
        with urllib.request.urlopen(f"{self.admin_url}/stats", timeout=2.0) as resp:  # noqa: S310
            for line in resp.read().decode().splitlines():
                name, sep, value = line.partition(": ")
                if sep and value.strip().lstrip("-").isdigit():
                    out[name] = int(value)
        return out

    def table_queries(self, tenant: str) -> int:
        """Queries Envoy's DNS filter received for ``tenant`` (its per-tenant counter)."""
        return self.envoy_stats().get(f"dns_filter.tenant.{tenant}.downstream_rx_queries", 0)

    def log(self) -> str:
        parts = [self.process.log()[-3000:] if self.process else ""]
        for name in ("front.log", "envoy.log"):
            path = self.workdir / "sidecar" / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text()[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


__all__ = ["FrontSidecar"]
