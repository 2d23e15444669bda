"""The DNS front's control-plane side with the real ``controlplane serve`` and real Envoys.

A sidecar whose node metadata carries ``DNS_FRONT_SET_ADDRESS`` gets over ADS the set
listener, its RouteConfiguration (RDS) and the hop listener to its tenant resolver; the
set is its tenant's (name, type) pairs with an ETag (304 on a match); the hop carries
DNS-over-TCP to the tenant resolver, which forwards to the tenant's server; a new Service
reaches Envoy's table before the set lists it, and a deleted one leaves the set before
the table; a sidecar beside it without the key gets none of it. Then the real kresd with the pod's front config (``kresd_front_config``,
resolvers over TCP through the hop) in front of that Envoy: a table name reaches Envoy
(its ``dns_filter`` counter rises), an external TXT reaches the resolver over TCP
(the hop's TCP proxy counts the connection).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
import yaml

from controlplane._kit.localrun import (
    ControlPlane,
    Envoy,
    Process,
    free_port,
    http_json,
    wait_for,
)
from controlplane.dns.views import Upstream
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.translate.front import kresd_front_config
from controlplane.translate.front_routes import set_url
from e2e.harness.dnsquery import query
from e2e.harness.dnsservers import UnboundServer
from tests.tools import require_file, require_tool

WORLD = ["www.example.com. 30 A 203.0.113.10",
         "txt.example.com. 30 TXT hello-from-upstream"]
LUA_HTTP = Path("/usr/share/lua/5.1/http/request.lua")
API = "api.globex.svc.cluster.local"
NEW = "fresh.globex.svc.cluster.local"


@dataclass
class FrontedEnvoy(Envoy):
    """An Envoy whose node says it is fronted (``DNS_FRONT_SET_ADDRESS``), with every
    stat kept (no stats sink: its matcher would drop the hop's TCP proxy counters)."""

    front_port: int = 0  # 0: not fronted

    def write_bootstrap(self) -> Path:
        config = bootstrap_config(
            node_id=self.node_id, namespace=self.namespace, labels=self.labels,
            xds_address=self.xds_address, dns_address=f"{self.dns_host}:{self.dns_port}",
            admin_address=f"127.0.0.1:{self.admin_port}",
            stats_address=f"127.0.0.1:{self.stats_port}",
            resolver_hop_address=f"127.0.0.1:{self.hop_port}", delta=self.delta,
            stats_sink=False)
        if self.front_port:
            config["node"]["metadata"]["DNS_FRONT_SET_ADDRESS"] = f"127.0.0.1:{self.front_port}"
        path = self.bootstrap_path()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    @property
    def set_url(self) -> str:
        return set_url("127.0.0.1", self.front_port)

    def listeners(self) -> dict[str, bool]:
        """Dynamic listener name -> active."""
        dump = http_json(f"{self.admin_url}/config_dump?resource=dynamic_listeners")
        return {c["name"]: "active_state" in c for c in dump.get("configs", [])}


def get_set(url: str, etag: str = "") -> tuple[int, str, str]:
    """(status, body, ETag) of the set; ``etag``: sent as If-None-Match."""
    request = urllib.request.Request(url, headers={"If-None-Match": etag} if etag else {})
    try:
        with urllib.request.urlopen(request, timeout=2) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read().decode(), resp.headers.get("etag", "")
    except urllib.error.HTTPError as err:  # urllib raises on 304
        return err.code, "", err.headers.get("etag", "")


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def answers(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


@pytest.fixture
def procs() -> Iterator[list[ControlPlane | Envoy | Process | UnboundServer]]:
    started: list[ControlPlane | Envoy | Process | UnboundServer] = []
    yield started
    for proc in reversed(started):
        proc.stop()


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_a_fronted_sidecar_gets_its_set_and_hop_over_ads(
        delta: bool, manifests: Path, tmp_path: Path,
        procs: list[ControlPlane | Envoy | Process | UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    require_tool("unbound", "apt-get install unbound")
    world = UnboundServer(WORLD, tmp_path)
    procs.append(world)
    world.start()
    globex = manifests / "globex.yaml"
    globex.write_text(globex.read_text().replace("127.0.0.1:15353", f"127.0.0.1:{world.port}"))
    cp = start_control_plane(manifests)

    fronted = FrontedEnvoy(node_id="front.globex", namespace="globex", labels={"app": "x"},
                           xds_address=cp.xds_address, workdir=tmp_path,
                           front_port=free_port(), delta=delta)
    plain = FrontedEnvoy(node_id="plain.globex", namespace="globex", labels={"app": "x"},
                         xds_address=cp.xds_address, workdir=tmp_path, delta=delta)
    procs += [fronted, plain]
    fronted.start()
    plain.start()

    # -- the set: the tenant's pairs, with an ETag; 304 when unchanged --------------------
    # (a tenant's first fronted sidecar gets its pairs after the settle time, 2.5 s)
    wait_for(lambda: f"A {API}.\n" in get_set(fronted.set_url)[1], timeout=20,
             what="the set lists the tenant's pairs")
    status, body, etag = get_set(fronted.set_url)
    assert status == 200 and etag.startswith('"')
    assert f"SRV _grpc._tcp.{API}.\n" in body and "AAAA db.globex.svc.cluster.local.\n" in body
    assert "pay.partner.example" in body  # a ServiceEntry host with its own addresses
    assert ".acme.svc." not in body  # another tenant's Services are not in globex's table
    assert get_set(fronted.set_url, etag) == (304, "", etag)
    assert get_set(fronted.set_url, '"other"')[0] == 200
    listeners = fronted.listeners()
    assert listeners[f"dns-front-set:127.0.0.1:{fronted.front_port}"]
    assert listeners[f"resolver-hop:127.0.0.1:{fronted.hop_port}"]

    # -- the hop: DNS over TCP to the tenant resolver, which forwards to the world ---------
    r = ask(fronted.hop_port, "www.example.com", tcp=True)
    assert (dns.rcode.to_text(r.rcode()), answers(r)) == ("NOERROR", ["203.0.113.10"])
    r = ask(fronted.hop_port, "txt.example.com", "TXT", tcp=True)
    assert answers(r) == ['"hello-from-upstream"']
    # the resolver holds the table too
    assert answers(ask(fronted.hop_port, API, tcp=True)) == ["10.96.40.10"]

    # -- the sidecar beside it, not fronted: no set listener, no route, no hop -------------
    assert not any(n.startswith(("dns-front-set:", "resolver-hop:")) for n in plain.listeners())
    routes = http_json(f"{plain.admin_url}/config_dump?resource=dynamic_route_configs")
    assert routes.get("configs", []) == []
    nodes = {n["node_id"]: n for n in cp.get("/api/v1/nodes")}
    assert "+front:" in nodes["front.globex"]["view"]
    assert "+front:" not in nodes["plain.globex"]["view"]
    assert {n["protocol"] for n in nodes.values()} == {"delta" if delta else "sotw"}
    assert "rds" in nodes["front.globex"]["types"] and "rds" not in nodes["plain.globex"]["types"]
    assert nodes["front.globex"]["types"]["rds"]["nacks"] == 0

    # -- a new Service: Envoy's table answers it before the set lists it ------------------
    (manifests / "fresh.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: fresh, namespace: globex}\n"
        "spec: {clusterIP: 10.96.40.99}\n")
    start = time.monotonic()
    seen: dict[str, float] = {}
    order: list[str] = []

    def both() -> bool:
        if "table" not in seen and query(fronted.dns_port, NEW, timeout=0.5) == (
                "NOERROR", ["10.96.40.99"]):
            seen["table"] = time.monotonic() - start
            order.append("table")
        if "set" not in seen and f"A {NEW}.\n" in get_set(fronted.set_url)[1]:
            seen["set"] = time.monotonic() - start
            order.append("set")
        return len(seen) == 2

    wait_for(both, timeout=20, interval=0.01, what="the new name in the table and the set")
    print(f"\nnew Service: Envoy's table answers it at {seen['table']:.3f} s, the set lists it"
          f" at {seen['set']:.3f} s (order {order})")
    assert order == ["table", "set"]
    assert seen["set"] - seen["table"] >= 1.0  # at least one poll of the front between

    # -- the Service deleted: the set drops it first, Envoy's table after ---------------
    (manifests / "fresh.yaml").unlink()
    start = time.monotonic()
    gone: dict[str, float] = {}
    order = []

    def both_gone() -> bool:
        if "set" not in gone and f"A {NEW}.\n" not in get_set(fronted.set_url)[1]:
            gone["set"] = time.monotonic() - start
            order.append("set")
        if "table" not in gone and query(fronted.dns_port, NEW, timeout=0.5)[1] == []:
            gone["table"] = time.monotonic() - start
            order.append("table")
        if "plain" not in gone and query(plain.dns_port, NEW, timeout=0.5)[1] == []:
            gone["plain"] = time.monotonic() - start
        return len(gone) == 3

    wait_for(both_gone, timeout=20, interval=0.01, what="the name out of the set and table")
    print(f"Service deleted: the set drops it at {gone['set']:.3f} s, Envoy's table at "
          f"{gone['table']:.3f} s (order {order}); the plain sidecar's table at "
          f"{gone['plain']:.3f} s")
    assert order == ["set", "table"]
    assert gone["table"] - gone["set"] >= 1.0
    assert gone["plain"] < gone["table"]  # a sidecar without a front is not held back

    for e in (fronted, plain):
        stats = e.stats()
        assert stats["listener_manager.lds.update_rejected"] == 0
        assert stats["listener_manager.lds.init_fetch_timeout"] == 0
        assert stats["cluster_manager.cds.init_fetch_timeout"] == 0
    rds = {k: v for k, v in fronted.stats().items() if ".rds." in k}
    assert any(k.endswith(".update_success") and v > 0 for k, v in rds.items()), rds
    assert not any(k.endswith((".update_rejected", ".init_fetch_timeout")) and v
                   for k, v in rds.items()), rds

    # -- the real kresd with the pod's front config in front of that Envoy ---------------
    kresd = require_tool("kresd", "apt-get install knot-resolver")
    require_file(LUA_HTTP, "apt-get install lua-http")
    front_port = free_port()
    config = tmp_path / "front.lua"
    config.write_text(kresd_front_config(
        listen=(Upstream("127.0.0.1", front_port),),
        envoy=Upstream("127.0.0.1", fronted.dns_port), set_url=fronted.set_url,
        resolvers=(Upstream("127.0.0.1", fronted.hop_port),), resolver_tcp=True,
        cache_dir=str(tmp_path / "kresd-cache")))
    (tmp_path / "kresd").mkdir()
    front = Process("kresd-front", [kresd, "-n", "-c", str(config), str(tmp_path / "kresd")],
                    tmp_path / "kresd.log").start()
    procs.append(front)
    wait_for(lambda: "[dns-front] set" in front.log(), timeout=10, what="the front's first set")

    def table_queries() -> int:
        return fronted.stats().get("dns_filter.tenant.globex.downstream_rx_queries", 0)

    def hop_connections() -> int:
        return fronted.stats().get("tcp.tenant_resolver.downstream_cx_total", 0)

    before, hops = table_queries(), hop_connections()
    r = ask(front_port, API)
    assert (dns.rcode.to_text(r.rcode()), answers(r)) == ("NOERROR", ["10.96.40.10"])
    r = ask(front_port, "db.globex.svc.cluster.local", tcp=True)  # the client's TCP: Envoy's
    assert answers(r) == ["10.96.40.20"]
    wait_for(lambda: table_queries() >= before + 2, timeout=5, what="Envoy's dns_filter counter")
    assert hop_connections() == hops  # table names never went to the resolver
    r = ask(front_port, "txt.example.com", "TXT")
    assert answers(r) == ['"hello-from-upstream"']
    assert hop_connections() > hops  # the front reached the resolver over TCP, via the hop
    r = ask(front_port, API, "AAAA")  # not in the set: the resolver answers NODATA
    assert (dns.rcode.to_text(r.rcode()), answers(r)) == ("NOERROR", [])
    print(f"through kresd: Envoy's table counted {table_queries() - before} queries, the hop"
          f" {hop_connections() - hops} TCP connection(s)")
    assert front.alive()
    assert fronted.process is not None and fronted.process.alive()
    assert plain.process is not None and plain.process.alive()
