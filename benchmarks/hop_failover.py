"""How a sidecar's mutual hop leaves a dead terminator: the Envoy mechanisms compared.

    .venv/bin/python benchmarks/hop_failover.py [--seconds 8] [--rate 100]

The sidecar's hop as the product renders it (``resolver_hop_listener`` +
``resolver_hop_cluster``, plain TCP: the failover is the same with TLS, which only adds a
handshake to each connect) with two terminators, stand-ins that answer DNS over TCP
(A 192.0.2.1 for any name). Two clients, each at ``--rate`` queries/s:

- ``front``: the real kresd front (UDP in, everything over TCP to the hop, no cache), as
  ``controlplane sidecar`` runs it: one kept TCP connection to the hop;
- ``per-query``: a new TCP connection to the hop for every query (a client that keeps
  none), which shows the load balancer's every choice.

Two faults:

- ``killed``: after 2 s of load the terminator holding the front's connection is SIGKILLed
  (a pod deleted before its endpoint left the Service: connects are refused at once);
- ``blackholed``: one peer's address takes no connection at all from the start (a pod
  gone whose address still is listed: connects time out, ``connect_timeout`` 1 s).

Variants: no failover; ``max_connect_attempts`` 3 on the tcp_proxy; outlier detection
ejecting a host on its first local-origin (connect) failure; both (the product's
choice); retries with an active TCP health check every second instead of ejection
(``--variants`` picks some; a name with ``fast`` also sets the outlier detector's interval
to 0.1 s).
Printed: sent, failed (no answer in 2 s, or not NOERROR) and the slowest answers, and
the failed connects Envoy counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dns.exception  # noqa: E402
import dns.message  # noqa: E402
import dns.query  # noqa: E402
import dns.rcode  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402

from controlplane._kit.localrun import accepts_tcp, find_tool, wait_for  # noqa: E402
from controlplane.dns.views import Upstream  # noqa: E402
from controlplane.runtime.process import free_port  # noqa: E402
from controlplane.translate.clusters import (  # noqa: E402
    eject_on_connect_failure,
    resolver_hop_cluster,
)
from controlplane.translate.listeners import resolver_hop_listener  # noqa: E402

HOP = ("127.0.0.2", 0)
VARIANTS = ("none", "retries", "outlier", "retries+outlier", "retries+healthcheck")


# -- the stand-in terminators ---------------------------------------------------------------
async def _serve(host: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = dns.message.from_wire(await reader.readexactly(size))
                reply = dns.message.make_response(query)
                reply.answer.append(dns.rrset.from_text(query.question[0].name, 5, "IN", "A",
                                                        "192.0.2.1"))
                wire = reply.to_wire()
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, host, port)
    async with server:
        await server.serve_forever()


def _blackhole(host: str, port: int) -> None:
    """A listening socket whose accept queue is full: the kernel drops every new SYN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, port))
    sock.listen(0)
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            c.connect((host, port))
        fillers.append(c)
    time.sleep(3600)


def start_child(mode: str, host: str, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, __file__, mode, host, str(port)])
    if mode == "serve":
        wait_for(lambda: accepts_tcp(host, port), timeout=10, what=f"stand-in {host}:{port}")
    else:
        time.sleep(0.5)
    return proc


# -- the sidecar: Envoy (the hop) and kresd (the front) -------------------------------------
def envoy_config(variant: str, peers: list[Upstream], hop_port: int, admin: int
                 ) -> dict[str, Any]:
    cluster = resolver_hop_cluster(peers, None)
    if "outlier" in variant:
        eject_on_connect_failure(cluster.outlier_detection)
        if "fast" in variant:  # the detector's interval: when ejections are looked at
            cluster.outlier_detection.interval.FromMilliseconds(100)
    if "healthcheck" in variant:
        check = cluster.health_checks.add()
        check.timeout.FromMilliseconds(500)
        check.interval.FromMilliseconds(1000)
        check.unhealthy_threshold.value = 1
        check.healthy_threshold.value = 1
        check.tcp_health_check.SetInParent()
    listener = resolver_hop_listener(host=HOP[0], port=hop_port,
                                     connect_attempts=3 if "retries" in variant else 0)
    return {"admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": admin}}},
            "static_resources": {"listeners": [MessageToDict(listener)],
                                 "clusters": [MessageToDict(cluster)]}}


KRESD = """\
net.listen('{host}', {port}, {{ kind = 'dns' }})
modules = {{ 'policy' }}
policy.add(policy.all(policy.FLAGS({{'NO_CACHE', 'TCP'}})))
policy.add(policy.all(policy.STUB({{'{hop}@{hop_port}'}})))
"""


@dataclass
class Sidecar:
    variant: str
    peers: list[Upstream]
    workdir: Path
    hop_port: int = field(default_factory=free_port)
    admin: int = field(default_factory=free_port)
    front: tuple[str, int] = ("127.0.0.1", 0)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> Sidecar:
        config = self.workdir / "envoy.json"
        config.write_text(json.dumps(envoy_config(self.variant, self.peers, self.hop_port,
                                                  self.admin)))
        envoy = find_tool("envoy")
        assert envoy is not None
        self.procs.append(subprocess.Popen(
            [envoy, "-c", str(config), "--concurrency", "1", "--log-level", "error",
             "--disable-hot-restart"],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "envoy.log", "w")))  # noqa: SIM115
        wait_for(lambda: accepts_tcp(HOP[0], self.hop_port), timeout=20, what="the hop listener")
        self.front = ("127.0.0.1", free_port())
        (self.workdir / "kresd.conf").write_text(KRESD.format(
            host=self.front[0], port=self.front[1], hop=HOP[0], hop_port=self.hop_port))
        rundir = self.workdir / "kresd"
        rundir.mkdir()
        self.procs.append(subprocess.Popen(
            ["kresd", "-n", "-q", "-c", str(self.workdir / "kresd.conf"), str(rundir)],
            stdout=subprocess.DEVNULL, stderr=open(self.workdir / "kresd.log", "w")))  # noqa: SIM115
        wait_for(lambda: ask_front(self.front, "warm.example.com")[0], timeout=20,
                 what="the front answering")
        return self

    def hosts(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/clusters",  # noqa: S310
                                    timeout=2) as resp:
            for line in resp.read().decode().splitlines():
                parts = line.split("::")
                if len(parts) == 4 and parts[1].rpartition(":")[2].isdigit():
                    out.setdefault(parts[1], {})[parts[2]] = parts[3]
        return out

    def stop(self) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)


def ask_front(front: tuple[str, int], name: str) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        reply = dns.query.udp(dns.message.make_query(name, "A"), front[0], port=front[1],
                              timeout=2.0)
    except (dns.exception.Timeout, OSError):
        return False, time.monotonic() - started
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer), time.monotonic() - started


def ask_per_query(hop: tuple[str, int], name: str) -> tuple[bool, float]:
    started = time.monotonic()
    try:
        reply = dns.query.tcp(dns.message.make_query(name, "A"), hop[0], port=hop[1],
                              timeout=2.0)
    except (dns.exception.DNSException, OSError, EOFError):
        return False, time.monotonic() - started
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer), time.monotonic() - started


@dataclass
class Run:
    sent: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def text(self) -> str:
        lat = sorted(self.latencies)
        p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
        return (f"sent {self.sent:4d} failed {self.failed:3d} p99 {p99:7.1f} ms "
                f"max {lat[-1] * 1000 if lat else 0:7.1f} ms")


def load(ask: Callable[[str], tuple[bool, float]], seconds: float, rate: float,
         at: Callable[[float], None]) -> Run:
    """``rate`` queries a second for ``seconds``, each on its own thread (a slow answer
    holds no other query back); ``at`` is called 2 s in (the fault)."""
    run = Run()
    lock = threading.Lock()

    def one(name: str) -> None:
        ok, took = ask(name)
        with lock:
            run.failed += not ok
            run.latencies.append(took)

    started = due = time.monotonic()
    fired = False
    with ThreadPoolExecutor(max_workers=int(rate * 3)) as pool:
        while time.monotonic() - started < seconds:
            if not fired and time.monotonic() - started >= 2.0:
                fired = True
                at(time.monotonic())
            run.sent += 1
            pool.submit(one, f"q{run.sent}-{time.time_ns()}.example.com")
            due += 1 / rate
            time.sleep(max(0.0, due - time.monotonic()))
    return run


def measure(variant: str, fault: str, client: str, seconds: float, rate: float,
            hosts: tuple[str, str]) -> str:
    port = free_port()
    a = start_child("serve", hosts[0], port)
    b = (start_child("blackhole", hosts[1], port) if fault == "blackholed"
         else start_child("serve", hosts[1], port))
    children = {hosts[0]: a, hosts[1]: b}
    with tempfile.TemporaryDirectory(prefix="hop-failover-") as tmp:
        sidecar = Sidecar(variant, [Upstream(h, port) for h in hosts], Path(tmp)).start()
        try:
            def fault_now(_: float) -> None:
                if fault != "killed":
                    return
                active = [h for h, v in sidecar.hosts().items() if v.get("cx_active") != "0"]
                victim = active[0].rpartition(":")[0] if active else hosts[0]
                children[victim].send_signal(signal.SIGKILL)

            if client == "front":
                run = load(lambda n: ask_front(sidecar.front, n), seconds, rate, fault_now)
            else:
                run = load(lambda n: ask_per_query((HOP[0], sidecar.hop_port), n), seconds,
                           rate, fault_now)
            fails = {h: v.get("cx_connect_fail") for h, v in sidecar.hosts().items()}
        finally:
            sidecar.stop()
            for child in children.values():
                child.kill()
                child.wait()
    return f"{variant:>20} {fault:>10} {client:>9}: {run.text()} connect fails {fails}"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] in ("serve", "blackhole"):
        host, port = sys.argv[2], int(sys.argv[3])
        if sys.argv[1] == "serve":
            import dns.rrset  # noqa: F401 - used by the handler
            asyncio.run(_serve(host, port))
        else:
            _blackhole(host, port)
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--hosts", default="127.0.0.61,127.0.0.62")
    args = parser.parse_args()
    hosts = tuple(args.hosts.split(","))
    assert len(hosts) == 2
    threading.excepthook = lambda _: None
    for variant in args.variants.split(","):
        for fault in ("killed", "blackholed"):
            for client in ("front", "per-query"):
                print(measure(variant, fault, client, args.seconds, args.rate,
                              (hosts[0], hosts[1])), flush=True)


if __name__ == "__main__":
    main()
