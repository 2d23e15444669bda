"""Two control-plane replicas against the fake API server, real Envoys under DNS load.

Each Envoy's xds_cluster lists both replicas (round robin), as a sidecar
reaching them through a Service would. Replica ``a`` starts first, so it
leads (it writes DnsPolicy status) and both sidecars are connected to it;
then ``b`` starts as a follower. One test stops ``a`` with SIGTERM (it
releases the lease and tells its sidecars to reconnect), the other kills it
with SIGKILL (the lease expires). Either way: no DNS query lost, the sidecars
move to ``b``, and ``b`` takes over status writing. The fake API server
tells the replicas apart by their bearer tokens and logs who wrote what.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2

from controlplane._kit.localrun import ControlPlane, DnsLoad, Envoy, http_text, wait_for
from controlplane.translate.types import LISTENER_TYPE
from e2e.harness.ads_client import Client
from e2e.harness.examples import demo_objects
from tests.fakes.kube import FakeKube

ACME = {"httpbin.acme.com": "100.66.185.144"}
FOO = {"httpbin.foo.com": "100.68.169.65"}
LEASE_DURATION, LEASE_RETRY = 15, 2.0  # the defaults of serve


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    return demo_objects()


@dataclass
class Cluster:
    kube: FakeKube
    a: ControlPlane
    b: ControlPlane
    acme: Envoy
    foo: Envoy

    @property
    def envoys(self) -> list[Envoy]:
        return [self.acme, self.foo]


def replica(kube: FakeKube, tmp_path: Path, name: str) -> ControlPlane:
    workdir = tmp_path / name
    workdir.mkdir()
    return ControlPlane(Path("kubernetes"), workdir, extra_args=[
        "--kubeconfig", str(kube.kubeconfig(workdir, token=name)), "--leader-identity", name,
        "--debounce", "0.02", "--status-interval", "0.2", "--watch-timeout", "5",
        "--drain-seconds", "1"])


def election(cp: ControlPlane) -> dict[str, Any]:
    return dict(cp.get("/readyz")["source"]["leaderElection"])


def acked(cp: ControlPlane, node_id: str) -> str | None:
    for n in cp.get("/api/v1/nodes"):
        if n["node_id"] == node_id:
            return n["types"].get("lds", {}).get("acked_version")  # type: ignore[no-any-return]
    return None


def leader_gauge(cp: ControlPlane) -> float:
    for line in http_text(f"{cp.admin_url}/metrics").splitlines():
        if line.startswith("dnscp_leader{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no dnscp_leader metric")


@pytest.fixture
def cluster(kube: FakeKube, tmp_path: Path, processes: list[object]) -> Cluster:
    a, b = replica(kube, tmp_path, "a"), replica(kube, tmp_path, "b")
    processes.append(a)
    a.start()
    wait_for(lambda: election(a)["leader"], timeout=10, what="a to lead")
    envoys = []
    for node, ns in (("sleep.acme", "acme"), ("sleep.foo", "foo")):
        # b is not running yet: whichever endpoint Envoy tries first, it ends up on a.
        envoy = Envoy(node_id=node, namespace=ns, labels={"app": "sleep"},
                      xds_address=a.xds_address, more_xds_addresses=(b.xds_address,),
                      workdir=tmp_path, concurrency=1)
        processes.append(envoy)
        envoys.append(envoy.start())
    processes.append(b)
    b.start()
    wait_for(lambda: election(b)["holder"] == "a", timeout=10, what="b to see a's lease")
    for envoy in envoys:
        assert acked(a, envoy.node_id) and acked(b, envoy.node_id) is None
    wait_for(lambda: (kube.get("DnsPolicy", "acme") or {}).get("status", {}).get(
        "connectedProxies") == 1, timeout=20, what="a's status of acme")
    assert election(b)["leader"] is False and leader_gauge(a) == 1 and leader_gauge(b) == 0
    assert kube.status_writes_by("b") == []
    return Cluster(kube, a, b, envoys[0], envoys[1])


def dns_counts(envoy: Envoy) -> tuple[int, int]:
    """(queries received, responses sent) by the Envoy's DNS filter."""
    stats = envoy.stats()
    return (sum(v for k, v in stats.items() if k.endswith(".downstream_rx_queries")),
            sum(v for k, v in stats.items() if k.endswith(".downstream_tx_responses")))


@dataclass
class Failover:
    load: list[DnsLoad]
    envoy_side: list[tuple[int, int]]  # per sidecar: queries received, answered meanwhile
    reconnect: dict[str, float]  # node -> seconds from the signal to its ACK on b
    takeover: float  # seconds from the signal to b's first status write
    writes_a: int
    writes_b: int

    @property
    def sent(self) -> int:
        return sum(x.sent for x in self.load)

    @property
    def lost(self) -> int:
        return sum(x.lost + x.wrong for x in self.load)


def stop_a_under_load(c: Cluster, sig: signal.Signals) -> Failover:
    versions = {e.node_id: acked(c.a, e.node_id) for e in c.envoys}
    counts = [dns_counts(e) for e in c.envoys]
    loads = [DnsLoad(c.acme.dns_port, ACME, qps=250).start(),
             DnsLoad(c.foo.dns_port, FOO, qps=250).start()]
    wait_for(lambda: all(x.answered > 100 for x in loads), timeout=10, what="load running")
    assert c.a.process is not None
    signalled = time.monotonic()
    os.kill(c.a.process.pid, sig)
    reconnect: dict[str, float] = {}

    def moved() -> bool:
        for e in c.envoys:
            if e.node_id not in reconnect and acked(c.b, e.node_id) == versions[e.node_id]:
                reconnect[e.node_id] = time.monotonic() - signalled
        return len(reconnect) == len(c.envoys)

    wait_for(moved, timeout=30, interval=0.01, what="the sidecars to move to b")
    wait_for(lambda: c.kube.status_writes_by("b"), timeout=LEASE_DURATION + 10,
             interval=0.01, what="b to write status")
    takeover = c.kube.status_writes_by("b")[0][0] - signalled
    answered = [x.answered for x in loads]
    wait_for(lambda: all(x.answered > n + 250 for x, n in zip(loads, answered, strict=True)),
             timeout=20, what="answers after the failover")
    for x in loads:
        x.stop()
    envoy_side = [(rx - rx0, tx - tx0) for (rx, tx), (rx0, tx0)
                  in zip((dns_counts(e) for e in c.envoys), counts, strict=True)]
    writes_a = c.kube.status_writes_by("a")
    # Exactly one writer at a time: every write of a came before the first of b.
    assert max(t for t, _ in writes_a) < c.kube.status_writes_by("b")[0][0]
    return Failover(loads, envoy_side, reconnect, takeover, writes_a=len(writes_a),
                    writes_b=len(c.kube.status_writes_by("b")))


def report(what: str, f: Failover) -> None:
    moves = ", ".join(f"{n} {s:.2f}s" for n, s in sorted(f.reconnect.items()))
    print(f"\n{what}: queries sent {f.sent}, lost {f.lost} "
          f"({'; '.join(x.summary() for x in f.load)}; Envoy side, received/answered: "
          f"{', '.join(f'{rx}/{tx}' for rx, tx in f.envoy_side)}); sidecar reconnect (signal to ACK "
          f"on the other replica): {moves}; failover (signal to the other's first status "
          f"write): {f.takeover:.2f}s; status writes a={f.writes_a} b={f.writes_b}")


def check_survivor(c: Cluster, f: Failover) -> None:
    assert f.lost == 0, [x.wrong_samples for x in f.load]
    assert election(c.b)["leader"] is True and leader_gauge(c.b) == 1
    for e in c.envoys:
        stats = e.stats()
        assert stats["listener_manager.lds.update_rejected"] == 0
        assert stats.get("control_plane.connected_state") == 1
    wait_for(lambda: (c.kube.get("DnsPolicy", "acme") or {}).get("status", {}).get(
        "connectedProxies") == 1, timeout=20, what="b's status of acme (its own sidecar)")


def test_sigterm_moves_sidecars_and_status_writing_at_once(cluster: Cluster) -> None:
    c = cluster
    f = stop_a_under_load(c, signal.SIGTERM)
    assert c.a.process is not None and c.a.process.proc is not None
    assert c.a.process.proc.wait(timeout=10) == 0
    report("SIGTERM of the leader (a)", f)
    check_survivor(c, f)
    # a released the lease: b did not wait for it to expire.
    assert f.takeover < LEASE_RETRY * 1.2 + 3, f.takeover
    assert "ADS drained: 2 streams" in c.a.process.log()
    lease = c.kube.lease("dns-controlplane-status", "dns-system") or {}
    assert [w.holder for w in c.kube.lease_writes if w.client == "a"][-1] == ""  # released
    assert lease["spec"]["holderIdentity"] == "b" and lease["spec"]["leaseTransitions"] == 1
    # a comes back as a follower: it serves ADS but writes nothing while b leads.
    writes_a = len(c.kube.status_writes_by("a"))
    c.a.start()
    wait_for(lambda: election(c.a)["holder"] == "b", timeout=10, what="a to see b's lease")
    before = len(c.kube.status_writes_by("b"))
    c.kube.apply({"apiVersion": "v1", "kind": "Namespace",  # acme's selectedNamespaces: 2
                  "metadata": {"name": "acme-two", "labels": {"tenant": "acme"}}})
    wait_for(lambda: (c.kube.get("DnsPolicy", "acme") or {}).get("status", {}).get(
        "selectedNamespaces") == 2, timeout=20, what="the change in acme's status")
    assert len(c.kube.status_writes_by("b")) > before
    time.sleep(1.0)
    assert len(c.kube.status_writes_by("a")) == writes_a and leader_gauge(c.a) == 0


def test_sigkill_moves_sidecars_and_the_lease_expires_to_the_other(cluster: Cluster) -> None:
    c = cluster
    f = stop_a_under_load(c, signal.SIGKILL)
    report("SIGKILL of the leader (a)", f)
    check_survivor(c, f)
    last_renewal = max(w.at for w in c.kube.lease_writes if w.client == "a")
    acquired = next(w.at for w in c.kube.lease_writes if w.client == "b")
    silence = acquired - last_renewal
    print(f"lease: a's last renewal to b's acquisition {silence:.2f}s "
          f"(lease duration {LEASE_DURATION}s, follower retry {LEASE_RETRY}s + jitter)")
    # b notices a's last renewal up to one look (retry with jitter) late, and then
    # looks again right when the lease expires by its own clock; plus request times
    # on this loaded machine (two control planes, two Envoys, the API, the load).
    bound = LEASE_DURATION + LEASE_RETRY * 1.2 + 2.0
    assert LEASE_DURATION <= silence < bound and f.takeover < bound


def test_sigterm_ends_ads_streams_with_unavailable_spread_over_the_drain(
        manifests: Path, start_control_plane: Callable[..., ControlPlane]) -> None:
    """The drain at the gRPC level, with scripted clients: GOAWAY and no new streams, then
    every open stream ended with UNAVAILABLE within --drain-seconds, at random moments."""
    cp = start_control_plane(manifests, "--drain-seconds", "1.5")
    clients = []
    for i in range(6):
        c = Client(cp.xds_address)
        node = base_pb2.Node(id=f"sleep-{i}.acme")
        node.metadata.update({"NAMESPACE": "acme", "LABELS": {"app": "sleep"}})
        c.send(type_url=LISTENER_TYPE, node=node)
        assert c.recv().type_url == LISTENER_TYPE
        clients.append(c)
    assert cp.process is not None and cp.process.proc is not None
    ended: list[float] = []
    errors: list[grpc.RpcError] = []

    def read_to_the_end(c: Client) -> None:  # one thread per stream: each end timed alone
        try:
            while True:
                c.recv()
        except grpc.RpcError as exc:
            ended.append(time.monotonic() - signalled)
            errors.append(exc)

    readers = [threading.Thread(target=read_to_the_end, args=(c,)) for c in clients]
    signalled = time.monotonic()
    os.kill(cp.process.pid, signal.SIGTERM)
    for t in readers:
        t.start()
    for t in readers:
        t.join(timeout=10)
    assert len(errors) == len(clients)
    for exc in errors:
        assert exc.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
        assert "shutting down" in exc.details()  # type: ignore[attr-defined]
    for c in clients:
        c.close()
    late = grpc.insecure_channel(cp.xds_address)  # no new connection is accepted
    with pytest.raises(grpc.FutureTimeoutError):
        grpc.channel_ready_future(late).result(timeout=0.5)
    late.close()
    assert cp.process.proc.wait(timeout=10) == 0
    print(f"\nSIGTERM with 6 ADS streams, --drain-seconds 1.5: streams ended after "
          f"{', '.join(f'{t:.2f}' for t in sorted(ended))} s")
    assert max(ended) < 1.5 + 0.5 and max(ended) - min(ended) > 0.1  # spread, not a burst
    assert "ADS drained: 6 streams" in cp.process.log()
