"""A reference DNS server on a pod's nameserver address: what a correct server answers.

unbound (Debian's 1.17) serves fixed ``local-data`` on ``127.0.0.X:53`` over UDP and TCP,
never recursing: NXDOMAIN (with the zone's SOA) for names it lacks, NODATA for types a
name lacks. ``max_udp_size`` caps UDP answers (512 makes every answer over 512 bytes TC
over UDP, also for clients that send EDNS0), so a client's TCP retry can be proven.
Its counters tell which transport each batch of lookups used (``transport_counts``).

The address comes from ``realclients.reserve_loopback_dns_address``; the reservation is
released just before unbound binds it (unbound binds both UDP and TCP there).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from controlplane._kit.localrun import Process, find_tool, wait_for
from controlplane.resolvers.pool import parse_stats
from e2e.harness.realclients import LoopbackDnsAddress


@dataclass(frozen=True)
class TransportCounts:
    """Queries the server received so far, by transport."""

    udp: int
    tcp: int

    def __sub__(self, other: TransportCounts) -> TransportCounts:
        return TransportCounts(self.udp - other.udp, self.tcp - other.tcp)


@dataclass(kw_only=True)
class ReferenceDns:
    """unbound with ``local_zones`` (static, each with an SOA) and ``records`` (local-data)."""

    records: Sequence[str]  # local-data lines, e.g. 'web.ns.svc.cluster.local. A 10.96.0.10'
    local_zones: Sequence[str]
    address: LoopbackDnsAddress
    workdir: Path
    max_udp_size: int = 512
    log_queries: bool = False  # log every query, for ``queried_names``
    process: Process | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / "reference-unbound.conf"

    def _config(self) -> str:
        host, port = self.address.host, self.address.port
        lines = [
            "server:", "  do-daemonize: no", '  username: ""', '  chroot: ""',
            f'  directory: "{self.workdir}"', '  pidfile: ""', "  use-syslog: no",
            '  logfile: ""', "  verbosity: 1", "  num-threads: 1", "  so-reuseport: no",
            "  extended-statistics: yes", "  do-ip6: no", "  do-udp: yes", "  do-tcp: yes",
            f"  interface: {host}@{port}", f"  port: {port}",
            f"  max-udp-size: {self.max_udp_size}",
            "  minimal-responses: yes",  # no additional section: sizes are the answers'
            f"  log-queries: {'yes' if self.log_queries else 'no'}",
            '  local-zone: "." static',
        ]
        for zone in self.local_zones:
            lines += [f'  local-zone: "{zone}." static',
                      f"  local-data: '{zone}. 300 IN SOA ns.{zone}. hostmaster.{zone}. "
                      "1 3600 600 86400 30'"]
        # Single quotes around each line: TXT data carries double quotes.
        lines += [f"  local-data: '{record}'" for record in self.records]
        lines += ["remote-control:", "  control-enable: yes",
                  f'  control-interface: "{self.workdir / "reference-unbound.sock"}"',
                  "  control-use-cert: no", ""]
        return "\n".join(lines)

    def start(self, timeout: float = 10.0) -> ReferenceDns:
        unbound = find_tool("unbound")
        if unbound is None:
            raise FileNotFoundError("unbound not found (apt-get install unbound)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self._config())
        self.address.close()  # the reservation ends here: unbound binds UDP and TCP itself
        self.process = Process("reference-unbound", [unbound, "-d", "-c", str(self.conf)],
                               self.workdir / "reference-unbound.log").start()
        wait_for(lambda: self._control("status") is not None, timeout=timeout,
                 what="reference DNS server (unbound)")
        return self

    def _control(self, command: str) -> str | None:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"reference unbound exited:\n{self.process.log()[-2000:]}")
        control = find_tool("unbound-control")
        if control is None:
            raise FileNotFoundError("unbound-control not found (apt-get install unbound)")
        done = subprocess.run([control, "-c", str(self.conf), command], capture_output=True,
                              text=True, timeout=10, check=False)
        return done.stdout if done.returncode == 0 else None

    def transport_counts(self) -> TransportCounts:
        """Queries received so far over UDP and over TCP."""
        stats = parse_stats(self._control("stats_noreset") or "")
        total = int(stats.get("total.num.queries", 0))
        tcp = int(stats.get("num.query.tcp", 0))
        return TransportCounts(udp=total - tcp, tcp=tcp)

    def queried_names(self) -> list[str]:
        """The names asked so far, lower case, without the final dot (``log_queries``)."""
        assert self.process is not None and self.log_queries
        out = []
        for line in self.process.log().splitlines():
            parts = line.split(" info: ", 1)[-1].split()
            if len(parts) >= 4 and parts[-1] == "IN" and parts[1].endswith("."):
                out.append(parts[1].rstrip(".").lower())
        return out

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


__all__ = ["ReferenceDns", "TransportCounts"]
