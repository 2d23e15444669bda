"""A wide tenant's fronted sidecar holds only part of the table (issue 21, item 1).

The rule (``translate/envoy_part.py``, ``docs/wide-tenants.md``): a view with a resolver
and more than ``limit`` entries gives a DNS-fronted Envoy the entries of the tenant's own
namespaces, at most ``limit``; the resolver answers the rest. Narrow views, views without
a resolver, ``limit`` 0 and sidecars without the front keep the whole table.
"""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.json_format import MessageToDict
from hypothesis import given
from hypothesis import strategies as st

from controlplane.cli.flags import build_parser
from controlplane.cli.serve_settings import xds_settings
from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service, ServicePort
from controlplane.core.settings import Settings, XdsSettings
from controlplane.dns.records import NameRecord
from controlplane.dns.views import TableEntry, TenantView, Upstream, with_resolver
from controlplane.hub.front_sets import FrontSets
from controlplane.hub.hub import Hub
from controlplane.policy.selection import Action
from controlplane.translate.envoy_part import envoy_part, is_wide, record_namespaces
from controlplane.translate.front import Pair, envoy_pairs
from controlplane.translate.front_routes import set_route_name
from controlplane.translate.types import LISTENER_TYPE, ROUTE_TYPE
from controlplane.xds.snapshot import ViewSnapshot
from tests.factories import node, tenant_policy
from tests.golden_support import tenant_views

RESOLVER = Upstream("127.0.0.1", 5300)
ZONE = "svc.cluster.local"


def objects(own: int, other: int, *, server: str | None = "10.9.9.9") -> list[Any]:
    """Tenant acme (ALLOW, sees everything) with ``own`` Services in its namespace and
    ``other`` in namespace ``far`` (not acme's)."""
    return [Namespace("acme", (("tenant", "acme"),)), Namespace("far"),
            tenant_policy("acme", default_action=DefaultAction.ALLOW,
                          **({"server_address": server} if server else {})),
            *(Service("acme", f"o{i}", cluster_ips=(f"10.0.1.{i + 1}",),
                      ports=(ServicePort("http", 80),)) for i in range(own)),
            *(Service("far", f"f{i}", cluster_ips=(f"10.0.2.{i + 1}",)) for i in range(other))]


def wide_view(own: int, other: int, *, resolver: bool = True) -> TenantView:
    view = tenant_views(Inventory.of(objects(own, other)), Settings())["acme"]
    return with_resolver(view, RESOLVER if resolver else None)


def names(view: TenantView) -> set[str]:
    return {e.record.name for e in view.entries}


def own(i: int) -> str:
    return f"o{i}.acme.{ZONE}"


def far(i: int) -> str:
    return f"f{i}.far.{ZONE}"


# -- the rule ----------------------------------------------------------------------------

def test_the_view_knows_the_tenants_namespaces() -> None:
    assert wide_view(1, 1).namespaces == {"acme"}


def test_a_wide_view_gives_envoy_its_own_namespaces() -> None:
    view = wide_view(3, 5)
    part = envoy_part(view, limit=4)
    assert names(part) == {own(0), own(1), own(2)}
    assert is_wide(view, limit=4)
    # the rest of the view is unchanged: same tenant, resolver, forwarding
    assert (part.tenant, part.upstreams, part.forward) == (view.tenant, view.upstreams,
                                                           view.forward)
    # SRV of own names stays with Envoy; no pair of another namespace is in the set
    got = set(envoy_pairs(part))
    assert Pair("SRV", f"_http._tcp.{own(0)}") in got
    assert all(".far." not in p.name for p in got)


def test_envoys_part_is_capped_in_view_order() -> None:
    view = wide_view(5, 5)
    part = envoy_part(view, limit=3)
    assert len(part.entries) == 3
    assert [e.record.name for e in part.entries] == [
        e.record.name for e in view.entries if e.record.name.endswith(f".acme.{ZONE}")][:3]


@pytest.mark.parametrize(("own_n", "other", "limit", "resolver"), [
    (2, 2, 4, True),  # at most the limit: a narrow view, the whole table
    (2, 2, 0, True),  # 0: the whole table always (the behaviour before issue 21)
    (2, 9, 4, False),  # no resolver: the front sends everything to Envoy
])
def test_the_whole_view_when_the_rule_does_not_apply(own_n: int, other: int, limit: int,
                                                     resolver: bool) -> None:
    view = wide_view(own_n, other, resolver=resolver)
    assert envoy_part(view, limit=limit) is view
    assert not is_wide(view, limit=limit)


def test_a_tenant_with_no_namespace_gives_envoy_nothing() -> None:
    view = TenantView(tenant="t", policy="t", ttl_seconds=30, upstreams=(RESOLVER,),
                      entries=wide_view(2, 2).entries)
    assert envoy_part(view, limit=1).entries == ()


@pytest.mark.parametrize(("sources", "expected"), [
    (("Service acme/web",), {"acme"}),
    (("ServiceEntry a/se", "ServiceEntry b/se"), {"a", "b"}),
    (("Pod acme/web-0",), {"acme"}),
    ((), set()),
    (("odd",), set()),
])
def test_record_namespaces(sources: tuple[str, ...], expected: set[str]) -> None:
    assert record_namespaces(NameRecord(name="x", sources=sources)) == expected


def test_the_limit_is_a_setting_and_a_flag() -> None:
    assert XdsSettings().front_table_limit == 2000
    with pytest.raises(Exception, match="front-table-limit"):
        XdsSettings(front_table_limit=-1)
    args = build_parser().parse_args(["serve", "--source", "x", "--xds-plaintext",
                                      "--front-table-limit", "0"])
    assert xds_settings(args).front_table_limit == 0


# -- the sets: a name leaving Envoy's part leaves the set first, the table after -------------

def test_front_sets_publish_envoys_part() -> None:
    sets = FrontSets(settle=2.5, table_limit=4)
    view = wide_view(3, 5)
    table, listed = sets.publish(view, 0.0, initial=True)
    assert names(table) == {own(0), own(1), own(2)}
    assert {p.name for p in listed} >= {own(0), own(1), own(2)}
    assert sets.publish(view, 0.0) == (table, listed)  # the same part for every key


def test_a_name_pushed_out_of_envoys_part_is_held_then_left_to_the_resolver() -> None:
    sets = FrontSets(settle=2.5, table_limit=3)
    three = wide_view(3, 5)
    table, _ = sets.publish(three, 0.0, initial=True)
    assert names(table) == {own(0), own(1), own(2)}
    # a fourth own Service sorts before o2 ("o10" < "o2"): o2 leaves Envoy's part
    four = tenant_views(Inventory.of([*objects(3, 5), Service(
        "acme", "o10", cluster_ips=("10.0.1.99",))]), Settings())["acme"]
    four = with_resolver(four, RESOLVER)
    part = envoy_part(four, limit=3)
    gone = names(table) - names(part)
    assert len(gone) == 1
    table, listed = sets.publish(four, 10.0)
    assert not {p.name for p in listed} & gone  # out of the set at once
    assert gone <= names(table)  # still answered by the table meanwhile
    assert sets.held_records("acme") == gone
    table, listed = sets.publish(four, 12.5)
    assert names(table) == names(part)


# -- the hub: fronted sidecars get the part, sidecars without the front the whole table ----

def listener_text(snap: ViewSnapshot) -> str:
    return str(MessageToDict(listener_pb2.Listener.FromString(
        snap.types[LISTENER_TYPE].anys["dns:127.0.0.1:15053"].value)))


class Resolvers:
    errors: dict[str, str] = {}
    hop = None

    def hop_for(self, tenant: str) -> None:
        return None

    def prepare(self, forwards: object) -> None:
        pass

    def apply(self, forwards: dict[str, object]) -> dict[str, Upstream]:
        return {t: RESOLVER for t in forwards}


def test_the_hub_gives_fronted_sidecars_the_part_and_the_others_the_whole_table() -> None:
    settings = Settings(xds=XdsSettings(front_table_limit=2))
    now = [1000.0]
    hub = Hub(settings, resolvers=Resolvers(), front_clock=lambda: now[0])
    hub.set_inventory(Inventory.of(objects(2, 3)))
    keys = {}
    for node_id, meta in (("front-1", {"DNS_FRONT_SET_ADDRESS": "127.0.0.1:15055"}),
                          ("plain-1", {})):
        conn = hub.open(peer=node_id)
        conn.stream.receive(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, node=node(node_id, "acme", LABELS={}, **meta)))
        hub.attach(conn)
        assert conn.view_key is not None
        keys[node_id] = conn.view_key
    now[0] += 2.5  # the pairs of a tenant first seen after loading settle
    assert hub.render_due_sets() == {keys["front-1"]}
    fronted, plain = hub.cache.get(keys["front-1"]), hub.cache.get(keys["plain-1"])
    assert fronted is not None and plain is not None
    assert own(0) in listener_text(fronted) and far(0) not in listener_text(fronted)
    assert own(0) in listener_text(plain) and far(0) in listener_text(plain)
    route = route_pb2.RouteConfiguration.FromString(
        fronted.types[ROUTE_TYPE].anys[set_route_name("acme")].value)
    body = route.virtual_hosts[0].routes[1].direct_response.body.inline_string
    assert f"A {own(0)}." in body and ".far." not in body


_SOURCES = ("Service acme/web", "Service far/web", "ServiceEntry b/se", "Pod acme/p",
            "odd", "Service acme", "Service /x", "Service  acme/x", "Service a/b/c")


@given(sources=st.lists(st.lists(st.sampled_from(_SOURCES), max_size=3).map(tuple),
                        max_size=12),
       namespaces=st.sets(st.sampled_from(("acme", "b", "", "far", "a"))),
       limit=st.integers(0, 6))
def test_envoys_part_is_the_rule_over_any_sources(sources: list[tuple[str, ...]],
                                                  namespaces: set[str], limit: int) -> None:
    """The entries kept: those whose ``record_namespaces`` meet the tenant's, in view
    order, at most ``limit`` (one source read without the sets: the same)."""
    entries = tuple(TableEntry(NameRecord(name=f"n{i}", ipv4=("10.0.0.1",), sources=s),
                               Action.ALLOW, "test") for i, s in enumerate(sources))
    view = TenantView(tenant="t", policy="t", ttl_seconds=30, upstreams=(RESOLVER,),
                      entries=entries, namespaces=frozenset(namespaces))
    if limit <= 0 or len(entries) <= limit:
        assert envoy_part(view, limit=limit) is view
        return
    expected = [e for e in entries
                if namespaces and not frozenset(namespaces).isdisjoint(
                    record_namespaces(e.record))][:limit]
    assert list(envoy_part(view, limit=limit).entries) == expected
