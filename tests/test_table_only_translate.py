"""What Envoy gets for a tenant whose resolver is table-only (``Forwarding.server`` None).

Such a resolver answers the table and NXDOMAIN for everything else, which is what
Envoy's DNS filter answers alone for A/AAAA. So Envoy is never pointed at it: a sidecar
without the DNS front gets exactly the resources of a view with no resolver (its
configuration does not change with the resolver's port: a control-plane restart with
process-lifetime resolvers, a move to another replica); a fronted sidecar gets the hop to
the resolver (for the front) and the pairs, and its listeners and route do not name the
resolver's port either: only the hop cluster does.
"""

from __future__ import annotations

import pytest
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2
from google.protobuf.json_format import MessageToDict

from controlplane.core.settings import Settings
from controlplane.dns.views import ResolverHop, TenantView, Upstream, with_resolver
from controlplane.identity.certs import make_ca
from controlplane.translate import translate_view
from controlplane.translate.front import ALL_TO_ENVOY
from controlplane.translate.listeners import RESOLVER_HOP_CLUSTER, listener_name
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE
from tests.golden_support import GOLDEN, load_inventory, tenant_views

FRONT = ("127.0.0.1", 15055)
PORTS = (Upstream("127.0.0.1", 5300), Upstream("127.0.0.1", 5411))


def views(case: str = "demo") -> dict[str, TenantView]:
    return tenant_views(load_inventory(GOLDEN / case), Settings())


def as_json(resources: dict[str, dict[str, object]]) -> dict[str, object]:
    return {t: {n: MessageToDict(m) for n, m in by_name.items()}  # type: ignore[arg-type]
            for t, by_name in resources.items()}


def dns_filter(resources: dict[str, dict[str, object]]) -> dns_filter_pb2.DnsFilterConfig:
    listener = resources[LISTENER_TYPE][listener_name("127.0.0.1", 15053)]
    config = dns_filter_pb2.DnsFilterConfig()
    listener.listener_filters[0].typed_config.Unpack(config)  # type: ignore[attr-defined]
    return config


def test_the_demos_deny_tenants_have_table_only_resolvers() -> None:
    got = {t: (v.forward is not None, v.forward.server is None if v.forward else None)
           for t, v in views().items()}
    assert got["acme"] == (True, True) and got["foo"] == (True, True)
    assert got["_default"] == (False, None)  # the default view keeps no resolver


@pytest.mark.parametrize("tenant", ["acme", "foo"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls-hop"])
def test_without_the_front_a_table_only_view_is_a_view_without_a_resolver(
        tenant: str, tls: bool) -> None:
    view = views()[tenant]
    hop = ResolverHop(server_name="r", ca_pem=make_ca()[0].decode()) if tls else None
    none = as_json(translate_view(with_resolver(view, None), host="127.0.0.1", port=15053))
    for address in PORTS:
        with_one = with_resolver(view, address, hop)
        assert with_one.upstreams == (address,) and not with_one.forwarding
        res = translate_view(with_one, host="127.0.0.1", port=15053)
        assert as_json(res) == none  # no upstream, no hop, no port: stable
        assert not dns_filter(res).HasField("client_config")


@pytest.mark.parametrize("tenant", ["acme", "foo"])
def test_a_fronted_table_only_view_names_the_resolver_only_in_the_hop_cluster(
        tenant: str) -> None:
    view = views()[tenant]
    got = [translate_view(with_resolver(view, a), host="127.0.0.1", port=15053, front=FRONT)
           for a in PORTS]
    for res, address in zip(got, PORTS, strict=True):
        assert not dns_filter(res).HasField("client_config")  # Envoy forwards nothing
        cluster = res[CLUSTER_TYPE][RESOLVER_HOP_CLUSTER]
        port = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint  # type: ignore[attr-defined]
        assert port.address.socket_address.port_value == address.port
        (route,) = res[ROUTE_TYPE].values()
        body = route.virtual_hosts[0].routes[-1].direct_response.body.inline_string  # type: ignore[attr-defined]
        assert body != ALL_TO_ENVOY and f"A httpbin.{tenant}.com.\n" in body
    first, second = (as_json(r) for r in got)
    assert first[LISTENER_TYPE] == second[LISTENER_TYPE]
    assert first[ROUTE_TYPE] == second[ROUTE_TYPE]
    assert first[CLUSTER_TYPE] != second[CLUSTER_TYPE]


def test_a_forwarding_view_still_points_envoy_at_its_resolver() -> None:
    view = with_resolver(views("globex")["globex"], PORTS[0])
    assert view.forward is not None and view.forward.server is not None and view.forwarding
    cares = cares_dns_resolver_pb2.CaresDnsResolverConfig()
    config = dns_filter(translate_view(view, host="127.0.0.1", port=15053))
    config.client_config.typed_dns_resolver_config.typed_config.Unpack(cares)
    assert [r.socket_address.port_value for r in cares.resolvers] == [PORTS[0].port]
