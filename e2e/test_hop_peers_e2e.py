"""Every replica's terminator in the sidecars' hop cluster (issue 18 item 4, the layout of
deploy/: two control-plane replicas, each with its tenant resolvers behind its own mutual
hop terminator; docs/resolver-isolation.md, "Every replica in the hop cluster").

Real processes: two ``controlplane serve --resolver-hop mtls --resolver-lifetime
persistent`` replicas on the examples with one hop CA, each terminator on its own
loopback address (127.0.0.X, one port for both, as one port on every pod IP), the peers
given as ``--resolver-hop-peers`` (the fixed list, or ``service:NS/NAME`` read from an
EndpointSlice in the watched files, which the test edits as Kubernetes would on a pod's
deletion); two fronted sidecars of globex (``controlplane sidecar``: kresd + Envoy)
listing both replicas for ADS; globex's own server (dnsmasq, every ``*.example.com`` is
203.0.113.10, TTL 0). Load through both fronts over UDP: a table name (Envoy answers), a
fresh external name every time (front -> hop -> a terminator -> unbound -> dnsmasq), the
AAAA of a fresh external name (NODATA).

1. A rolling upgrade: replica a stopped as a pod deletion stops it (SIGTERM to the control
   plane, then its resolvers and terminator SIGKILLed, as the container's end does),
   started again fresh (new resolver directory), then b the same.
2. Every control-plane process SIGKILLed for 60 s (resolvers and terminators keep
   running), then both started again on their directories.
3. Without resolver pods, measured: every replica's pod gone at once (both stopped as
   in 1.): table names answered, forwarded names SERVFAIL (never NXDOMAIN) until fresh
   pods are back.
4. deploy/'s layout, with a resolver pod (``serve --role resolvers``, deploy/resolvers.yaml)
   as a third peer: every control-plane pod gone at once for 60 s, deleted or crashed,
   loses nothing, and a policy edited meanwhile applies at once.

Sent, lost, wrong and the rcodes for each class of name are printed (``-s``).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, accepts_tcp, http_json, wait_for
from controlplane.identity.certs import server_tls
from controlplane.resolvers.pool import RESOLVER_TLS_NAME
from controlplane.resolvers.terminator import DIRECTORY, STATE
from controlplane.runtime.process import Process, free_port
from e2e.harness.examples import point_globex_at
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.persistent import resolver_states, stop_persistent
from e2e.harness.realclients import reserve_loopback_dns_address
from tests.tools import require_file, require_tool

TABLE = ("api.globex.svc.cluster.local", "A", ("NOERROR", ("10.96.40.10",)))
RATE = 60.0  # queries per second, over both fronts
DOWN_SECONDS = 60.0
KINDS = ("table", "forwarded", "forwarded-AAAA")
SERVICE = ("globex", "dns-controlplane-resolvers")  # the peers' Service (in the files)
CONTROL_PLANES = ("a", "b")  # the dns-controlplane Deployment's replicas
RESOLVER_PODS = ("r",)  # a replica of the dns-resolvers Deployment (--role resolvers)
EDITED = "edited-while-down.example.com"  # denied by a policy edit while no control plane runs


@dataclass
class Tally:
    sent: int = 0
    lost: int = 0
    wrong: int = 0
    rcodes: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)


class Load:
    """Queries the fronts in turn from a thread, counting by phase and kind of name."""

    def __init__(self, hosts: list[str], phase: str) -> None:
        self.hosts = hosts
        self.phase = phase
        self.tallies: dict[tuple[str, str], Tally] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._serial = 0

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _next(self, kind: str) -> tuple[str, str, tuple[str, tuple[str, ...]]]:
        if kind == "table":
            return TABLE
        self._serial += 1
        name = f"p{self._serial}-{os.getpid()}-{int(time.time())}.example.com"
        if kind == "forwarded":
            return name, "A", ("NOERROR", ("203.0.113.10",))
        return name, "AAAA", ("NOERROR", ())

    def _run(self) -> None:
        due = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            kind = KINDS[turn % len(KINDS)]
            host = self.hosts[(turn // len(KINDS)) % len(self.hosts)]
            turn += 1
            name, rdtype, expected = self._next(kind)
            tally = self.tallies.setdefault((self.phase, kind), Tally())
            tally.sent += 1
            try:
                response = dns.query.udp(dns.message.make_query(name, rdtype), host,
                                         port=53, timeout=1.0)
            except (dns.exception.Timeout, OSError) as exc:
                tally.lost += 1
                tally.rcodes["(no answer)"] += 1
                tally.samples.append(f"{host} {name} {rdtype}: {exc!r}")
            else:
                rcode = dns.rcode.to_text(response.rcode())
                tally.rcodes[rcode] += 1
                got = (rcode, tuple(sorted(rd.to_text() for rrset in response.answer
                                           for rd in rrset)))
                if got != expected:
                    tally.wrong += 1
                    tally.samples.append(f"{host} {name} {rdtype}: {got}")
            due += 1 / RATE
            self._stop.wait(max(0.0, due - time.monotonic()))

    def sent(self, phase: str) -> int:
        return sum(t.sent for (p, _), t in self.tallies.items() if p == phase)

    def run_for(self, phase: str, seconds: float) -> None:
        """Switch to ``phase`` and wait until ``seconds`` of load were sent in it."""
        self.phase = phase
        wait_for(lambda: self.sent(phase) >= seconds * RATE, timeout=seconds * 3 + 10,
                 what=f"{seconds:.0f} s of load in {phase}")

    def report(self) -> str:
        return "\n".join(
            f"{phase:>10} {kind:>14}: sent {t.sent:5d} lost {t.lost} wrong {t.wrong} "
            f"rcodes {dict(sorted(t.rcodes.items()))}"
            for (phase, kind), t in self.tallies.items())

    def bad(self) -> list[tuple[str, str, Tally]]:
        return [(p, k, t) for (p, k), t in self.tallies.items() if t.lost or t.wrong]


def peers_file(manifests: Path, ready: dict[str, bool], port: int) -> None:
    """The peers' Service and its EndpointSlice, as Kubernetes keeps them for the headless
    Service dns-controlplane-resolvers (an endpoint turns not ready when its pod is being
    deleted)."""
    endpoints = "".join(
        f"- addresses: [\"{ip}\"]\n  conditions: {{ready: {str(ok).lower()}}}\n"
        for ip, ok in sorted(ready.items()))
    (manifests / "hop-peers.yaml").write_text(f"""\
apiVersion: v1
kind: Service
metadata: {{name: {SERVICE[1]}, namespace: {SERVICE[0]}}}
spec:
  clusterIP: None
  ports: [{{name: dns-hop, port: {port}, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {SERVICE[1]}-x
  namespace: {SERVICE[0]}
  labels: {{kubernetes.io/service-name: {SERVICE[1]}}}
addressType: IPv4
ports: [{{name: dns-hop, port: {port}, protocol: TCP}}]
endpoints:
{endpoints}""")


@dataclass
class Replicas:
    manifests: Path
    tmp: Path
    processes: list[object]
    hop_port: int
    hosts: dict[str, str]  # replica -> its terminator's loopback address
    peers: str  # "static" or "service"
    ca_dir: Path
    cps: dict[str, ControlPlane] = field(default_factory=dict)
    dirs: dict[str, Path] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)

    def args(self, name: str) -> list[str]:
        peers = (",".join(f"{h}:{self.hop_port}" for h in self.hosts.values())
                 if self.peers == "static" else f"service:{SERVICE[0]}/{SERVICE[1]}")
        role = ["--role", "resolvers"] if name in RESOLVER_PODS else []
        return [*role, "--debounce", "0.02", "--drain-seconds", "1",
                "--resolver-dir", str(self.dirs[name]), "--resolver-lifetime", "persistent",
                "--resolver-hop", "mtls", "--resolver-hop-port", str(self.hop_port),
                "--resolver-tls-dir", str(self.ca_dir),
                "--resolver-advertise", self.hosts[name], "--resolver-hop-peers", peers]

    def start(self, name: str, *, fresh: bool = False) -> ControlPlane:
        """Replica ``name`` (``fresh``: a new pod: new resolver directory)."""
        self.starts[name] += 1
        if fresh or name not in self.dirs:
            self.dirs[name] = self.tmp / f"resolvers-{name}{self.starts[name]}"
            self.processes.append(_Persistent(self.dirs[name]))
        old = self.cps.get(name)
        workdir = self.tmp / f"cp-{name}{self.starts[name]}"
        workdir.mkdir()
        cp = ControlPlane(self.manifests, workdir, extra_args=self.args(name),
                          **({"xds_port": old.xds_port, "admin_port": old.admin_port}
                             if old is not None else {}))
        self.processes.append(cp)
        self.cps[name] = cp
        cp.start()
        wait_for(lambda: accepts_tcp(self.hosts[name], self.hop_port), timeout=20,
                 what=f"replica {name}'s terminator listening")
        return cp

    def stop_as_pod_deletion(self, name: str) -> None:
        """SIGTERM to the control plane (it drains ADS and exits), then every process of
        the pod SIGKILLed, as the container's end does: its resolvers and terminator."""
        cp = self.cps[name]
        assert cp.process is not None
        cp.process.stop(timeout=15)
        kill_persistent(self.dirs[name])

    def kill9(self, name: str) -> None:
        cp = self.cps[name]
        assert cp.process is not None
        os.kill(cp.process.pid, signal.SIGKILL)
        cp.process.stop()


@dataclass
class _Persistent:
    """Stops a resolver directory's processes at the end of the test."""

    directory: Path

    def stop(self) -> None:
        stop_persistent(self.directory)


def kill_persistent(directory: Path) -> None:
    """SIGKILL every resolver and the terminator the directory's state files name."""
    procs = []
    for state in resolver_states(directory):
        for key in ("unbound", "dnsdist"):
            if state.get(f"{key}_pid"):
                procs.append(Process.adopt(key, list(state[f"{key}_argv"]), directory / "x.log",
                                           pid=int(state[f"{key}_pid"])))
    terminator = directory / DIRECTORY / STATE
    if terminator.exists():
        body = json.loads(terminator.read_text())
        procs.append(Process.adopt("envoy", list(body["argv"]), directory / "x.log",
                                   pid=int(body["pid"])))
    for proc in procs:
        if proc.alive():
            os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: not any(p.alive() for p in procs), timeout=10,
             what="the pod's resolvers and terminator gone")


def hop_hosts(sidecar: FrontSidecar) -> dict[str, dict[str, str]]:
    """The sidecar Envoy's hop cluster, by host: its stats and health flags (admin
    ``/clusters``)."""
    out: dict[str, dict[str, str]] = {}
    with urllib.request.urlopen(f"{sidecar.admin_url}/clusters", timeout=2.0) as resp:
        for line in resp.read().decode().splitlines():
            parts = line.split("::")
            if (len(parts) == 4 and parts[0] == "tenant_resolver"
                    and parts[1].rpartition(":")[2].isdigit()):  # a host, not a setting
                out.setdefault(parts[1], {})[parts[2]] = parts[3]
    return out


def cds_version(sidecar: FrontSidecar) -> str:
    dump = http_json(f"{sidecar.admin_url}/config_dump?resource=dynamic_active_clusters")
    [hop] = [c for c in dump["configs"] if c["cluster"]["name"] == "tenant_resolver"]
    return str(hop["version_info"])


def _replicas(peers: str, names: tuple[str, ...], manifests: Path, tmp_path: Path,
              processes: list[object], start_dnsmasq: Callable[..., Dnsmasq]
              ) -> tuple[Replicas, list[FrontSidecar]]:
    """The replicas ``names`` (``CONTROL_PLANES`` and any of ``RESOLVER_PODS``), each
    terminator on its own loopback address, and two fronted sidecars of globex streaming
    ADS from the control planes."""
    require_tool("kresd", "apt-get install knot-resolver")
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    point_globex_at(manifests, start_dnsmasq({"example.com": "203.0.113.10"}))
    hop_port = free_port()
    reservations = {name: reserve_loopback_dns_address(port=hop_port, first=20, last=250)
                    for name in names}  # all held at once: different addresses
    hosts = {name: r.host for name, r in reservations.items()}
    for reservation in reservations.values():
        reservation.close()
    if peers == "service":
        peers_file(manifests, {h: True for h in hosts.values()}, hop_port)
    ca_dir = tmp_path / "hop-ca"
    server_tls(ca_dir, RESOLVER_TLS_NAME, signing=True)  # one CA for all (the Secret)
    r = Replicas(manifests, tmp_path, processes, hop_port, hosts, peers, ca_dir)
    started = {name: r.start(name) for name in names}
    a, b = (started[name] for name in CONTROL_PLANES)
    sidecars = []
    for i, (first, other) in enumerate(((a, b), (b, a))):
        sidecar = FrontSidecar(
            xds_address=first.xds_address, more_xds_addresses=(other.xds_address,),
            node_id=f"sleep{i}.globex", namespace="globex", labels={"app": "sleep"},
            address=reserve_loopback_dns_address(), workdir=tmp_path / f"sidecar{i}")
        processes.append(sidecar)
        sidecars.append(sidecar.start(expect_pair=f"A {TABLE[0]}.\n"))
    expected = sorted(f"{h}:{hop_port}" for h in hosts.values())
    for cp in started.values():  # what each replica lists, as its admin API says
        assert sorted(cp.get("/api/v1/resolvers")["hop_peers"]["listed"]) == expected
    for sidecar in sidecars:
        wait_for(lambda s=sidecar: sorted(hop_hosts(s)) == expected, timeout=20,
                 what="every terminator in the sidecar's hop cluster")
    return r, sidecars


@pytest.fixture(params=["static", "service"])
def replicas(request: pytest.FixtureRequest, manifests: Path, tmp_path: Path,
             processes: list[object], start_dnsmasq: Callable[..., Dnsmasq]
             ) -> tuple[Replicas, list[FrontSidecar]]:
    """The two control-plane replicas, each with its resolvers (no resolver pods)."""
    return _replicas(request.param, CONTROL_PLANES, manifests, tmp_path, processes,
                     start_dnsmasq)


@pytest.fixture(params=["static", "service"])
def with_resolver_pods(request: pytest.FixtureRequest, manifests: Path, tmp_path: Path,
                       processes: list[object], start_dnsmasq: Callable[..., Dnsmasq]
                       ) -> tuple[Replicas, list[FrontSidecar]]:
    """deploy/'s layout: the two control-plane replicas and a resolver pod of their own."""
    return _replicas(request.param, CONTROL_PLANES + RESOLVER_PODS, manifests, tmp_path,
                     processes, start_dnsmasq)


def answer(host: str, name: str, rdtype: str = "A") -> tuple[str, tuple[str, ...]]:
    response = dns.query.udp(dns.message.make_query(name, rdtype), host, port=53, timeout=2.0)
    return (dns.rcode.to_text(response.rcode()),
            tuple(sorted(rd.to_text() for rrset in response.answer for rd in rrset)))


def test_a_rolling_upgrade_of_the_replicas_loses_no_query(
        replicas: tuple[Replicas, list[FrontSidecar]]) -> None:
    r, sidecars = replicas
    versions = {"steady": {cds_version(s) for s in sidecars}}
    for s in sidecars:
        assert answer(s.host, "first.example.com") == ("NOERROR", ("203.0.113.10",))
    events = []
    with Load([s.host for s in sidecars], "steady") as load:
        load.run_for("steady", 4)
        for name in ("a", "b"):
            connections = {s.node_id: {h: v.get("cx_active") for h, v in hop_hosts(s).items()}
                           for s in sidecars}
            events.append(f"before {name} stops, hop connections: {connections}")
            if r.peers == "service":  # Kubernetes: the endpoint of a pod being deleted
                ready = {h: h != r.hosts[name] for h in r.hosts.values()}
                peers_file(r.manifests, ready, r.hop_port)
                gone = r.hosts[name]
                for s in sidecars:
                    wait_for(lambda s=s, gone=gone: gone not in " ".join(hop_hosts(s)),
                             timeout=10, what=f"{gone} out of {s.node_id}'s hop cluster")
            load.phase = f"{name}-down"
            started = time.monotonic()
            r.stop_as_pod_deletion(name)
            events.append(f"{name} stopped in {time.monotonic() - started:.2f} s")
            load.run_for(f"{name}-down", 5)
            for s in sidecars:  # by now on the other replica (it drained their streams)
                wait_for(lambda s=s: s.envoy_stats().get("control_plane.connected_state")
                         == 1, timeout=30, what=f"{s.node_id} on the other replica")
            versions[f"{name}-down"] = {cds_version(s) for s in sidecars}
            load.phase = f"{name}-back"
            started = time.monotonic()
            r.start(name, fresh=True)
            events.append(f"{name} back (fresh) in {time.monotonic() - started:.2f} s")
            if r.peers == "service":
                peers_file(r.manifests, dict.fromkeys(r.hosts.values(), True), r.hop_port)
            for s in sidecars:
                wait_for(lambda s=s: len(hop_hosts(s)) == 2 and s.envoy_stats().get(
                    "control_plane.connected_state") == 1, timeout=30,
                    what=f"{s.node_id} connected, both terminators listed")
            load.run_for(f"{name}-back", 5)
        versions["end"] = {cds_version(s) for s in sidecars}
        hosts = {s.node_id: {h: {k: v.get(k) for k in ("cx_total", "cx_connect_fail",
                                                        "health_flags")}
                             for h, v in hop_hosts(s).items()} for s in sidecars}
    print(f"\npeers: {r.peers}; terminators {r.hosts}\n" + "\n".join(events) + "\n"
          + load.report() + f"\nhop hosts at the end: {hosts}")
    print(f"CDS versions: {versions}")
    # Every replica sends the same clusters for the same peers: with a's sidecars all on
    # b, then all on a, the same version; with both listed, the same before and after.
    assert all(len(v) == 1 for v in versions.values()), versions
    assert versions["steady"] == versions["end"]
    if r.peers == "static":
        assert versions["a-down"] == versions["b-down"] == versions["steady"], versions
    for phase, kind, tally in load.bad():
        assert not any("NXDOMAIN" in x for x in tally.samples), (phase, kind, tally.samples)
    assert load.bad() == [], [(p, k, t.lost, t.wrong, t.samples[:5]) for p, k, t in load.bad()]


@pytest.mark.parametrize("replicas", ["static"], indirect=True)
def test_every_control_plane_process_killed_for_60_seconds(
        replicas: tuple[Replicas, list[FrontSidecar]]) -> None:
    r, sidecars = replicas
    before = {n: [s["unbound_pid"] for s in resolver_states(d)] for n, d in r.dirs.items()}
    connected = "control_plane.connected_state"
    with Load([s.host for s in sidecars], "before") as load:
        load.run_for("before", 4)
        load.phase = "down"
        killed = time.monotonic()
        for name in ("a", "b"):
            r.kill9(name)
        for s in sidecars:
            wait_for(lambda s=s: s.envoy_stats().get(connected) == 0, timeout=10,
                     what="Envoy notices the control planes are gone")
        wait_for(lambda: time.monotonic() - killed >= DOWN_SECONDS, timeout=DOWN_SECONDS + 5,
                 interval=0.5, what=f"{DOWN_SECONDS:.0f} s with no control plane")
        load.phase = "after"
        for name in ("a", "b"):
            r.start(name)
        for s in sidecars:
            wait_for(lambda s=s: s.envoy_stats().get(connected) == 1, timeout=60,
                     what="the sidecar back on a control plane")
        load.run_for("after", 5)
    print("\n" + load.report())
    after = {n: [s["unbound_pid"] for s in resolver_states(d)] for n, d in r.dirs.items()}
    assert after == before  # adopted, not replaced
    assert load.sent("down") >= DOWN_SECONDS * RATE * 0.9
    assert load.bad() == [], [(p, k, t.lost, t.wrong, t.samples[:5]) for p, k, t in load.bad()]


@pytest.mark.parametrize("replicas", ["static"], indirect=True)
def test_every_replica_pod_gone_costs_forwarded_names_never_nxdomain(
        replicas: tuple[Replicas, list[FrontSidecar]]) -> None:
    """The layout without resolver pods (the resolvers live only in the control-plane
    pods): every replica's pod gone at once. Measured, not hidden: table names keep answering while the
    pods are gone, forwarded names fail, never as NXDOMAIN, and everything answers again
    once fresh pods are back (in between, table names may fail too: the restart gap)."""
    r, sidecars = replicas
    with Load([s.host for s in sidecars], "before") as load:
        load.run_for("before", 3)
        load.phase = "stopping"  # a goes (b answers meanwhile), then b
        for name in ("a", "b"):
            r.stop_as_pod_deletion(name)
        load.run_for("all-pods-gone", 5)
        load.phase = "restarting"
        started = time.monotonic()
        for name in ("a", "b"):
            r.start(name, fresh=True)
        for s in sidecars:
            wait_for(lambda s=s: answer(s.host, f"probe-{time.time_ns()}.example.com")
                     == ("NOERROR", ("203.0.113.10",)), timeout=30,
                     what=f"forwarded names through {s.node_id} again")
        recovered = time.monotonic() - started
        load.run_for("back", 5)
    print(f"\nforwarded names answered again {recovered:.2f} s after the restarts began\n"
          + load.report())
    for (phase, kind), tally in load.tallies.items():
        assert not any("NXDOMAIN" in x for x in tally.samples), (phase, kind, tally.samples)
        # While the fresh pods start, a sidecar that reconnects after the first load gets
        # an empty set for the settle time (docs/dns-front.md, the restart gap): its front
        # sends table names to the resolvers, which are only coming back: SERVFAIL then.
        if phase in ("before", "back") or (kind == "table" and phase != "restarting"):
            assert (tally.lost, tally.wrong) == (0, 0), (phase, kind, tally.samples[:5])
    gone = [load.tallies[("all-pods-gone", k)] for k in ("forwarded", "forwarded-AAAA")]
    assert all(t.lost + t.wrong > 0 for t in gone)  # the limit is real: docs say so


def test_every_control_plane_pod_gone_for_60_seconds_with_resolver_pods(
        with_resolver_pods: tuple[Replicas, list[FrontSidecar]]) -> None:
    """deploy/'s layout (docs/kubernetes.md, "Resolvers in pods of their own"): every pod
    of the control-plane Deployment gone at once for 60 s (its resolvers and terminators
    with it), the resolver pod (``--role resolvers``) left: 0 queries lost or wrong before,
    during and after, table and forwarded names.

    ``service``: as ``kubectl delete pod -l ...`` goes: the endpoints turn not ready
    first, the replicas take their terminators out of the sidecars' hop clusters during
    their preStop, then every process of both pods ends. ``static``: as a crash of every
    node they run on: every process SIGKILLed, no endpoint change; the sidecars' Envoys
    fail over on the refused connects."""
    r, sidecars = with_resolver_pods
    [pod] = RESOLVER_PODS
    kept = [s["unbound_pid"] for s in resolver_states(r.dirs[pod])]
    survivor = f"{r.hosts[pod]}:{r.hop_port}"
    connected = "control_plane.connected_state"
    events = []
    with Load([s.host for s in sidecars], "before") as load:
        load.run_for("before", 4)
        load.phase = "down"
        if r.peers == "service":
            peers_file(r.manifests, {h: n in RESOLVER_PODS for n, h in r.hosts.items()},
                       r.hop_port)
            for s in sidecars:
                wait_for(lambda s=s: sorted(hop_hosts(s)) == [survivor], timeout=10,
                         what=f"only the resolver pod in {s.node_id}'s hop cluster")
            for name in CONTROL_PLANES:
                r.stop_as_pod_deletion(name)
        else:
            for name in CONTROL_PLANES:
                r.kill9(name)
                kill_persistent(r.dirs[name])
        gone = time.monotonic()
        events.append("every control-plane pod gone")
        for s in sidecars:
            wait_for(lambda s=s: s.envoy_stats().get(connected) == 0, timeout=10,
                     what="Envoy notices the control planes are gone")
        # A policy edit while no control plane runs: the resolver pod watches the same
        # source and denies the name at once (its RPZ), for every sidecar of the tenant.
        policy = r.manifests / "globex.yaml"
        policy.write_text(policy.read_text().replace(
            '"*.tracker.example"]', f'"*.tracker.example", "{EDITED}"]'))
        for s in sidecars:
            wait_for(lambda s=s: answer(s.host, EDITED)[0] == "NXDOMAIN", timeout=20,
                     what=f"{EDITED} denied through {s.node_id} while the pods are gone")
        events.append(f"{EDITED} denied after "
                      f"{time.monotonic() - gone:.1f} s without a control plane")
        wait_for(lambda: time.monotonic() - gone >= DOWN_SECONDS, timeout=DOWN_SECONDS + 5,
                 interval=0.5, what=f"{DOWN_SECONDS:.0f} s with no control-plane pod")
        hosts_down = {s.node_id: {h: {k: v.get(k) for k in ("cx_total", "cx_connect_fail",
                                                            "health_flags")}
                                  for h, v in hop_hosts(s).items()} for s in sidecars}
        load.phase = "after"
        for name in CONTROL_PLANES:
            r.start(name, fresh=True)  # new pods: new resolver directories
        if r.peers == "service":
            peers_file(r.manifests, dict.fromkeys(r.hosts.values(), True), r.hop_port)
        for s in sidecars:
            wait_for(lambda s=s: s.envoy_stats().get(connected) == 1
                     and len(hop_hosts(s)) == len(r.hosts), timeout=60,
                     what=f"{s.node_id} back on a control plane, every terminator listed")
        load.run_for("after", 5)
        for s in sidecars:  # the fresh control planes' resolvers deny it too
            assert answer(s.host, EDITED)[0] == "NXDOMAIN"
    print(f"\npeers: {r.peers}; terminators {r.hosts}\n" + "\n".join(events) + "\n"
          + load.report() + f"\nhop hosts while the pods were gone: {hosts_down}")
    assert [s["unbound_pid"] for s in resolver_states(r.dirs[pod])] == kept
    assert load.sent("down") >= DOWN_SECONDS * RATE * 0.9
    assert load.bad() == [], [(p, k, t.lost, t.wrong, t.samples[:5]) for p, k, t in load.bad()]
