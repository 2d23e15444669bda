"""The stats-only HTTP listener: ``/stats/prometheus`` and nothing else.

It routes that one path to Envoy's own admin through the bootstrap's static
cluster ``envoy_admin``, so Prometheus can scrape per-tenant DNS stats while
the full admin interface (which can change Envoy's state) stays on loopback.
Every other path gets 404.
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.any_pb2 import Any

ADMIN_CLUSTER = "envoy_admin"
STATS_PATH = "/stats/prometheus"


def stats_listener_name(host: str, port: int) -> str:
    return f"stats:{host}:{port}"


def stats_listener(*, host: str, port: int) -> listener_pb2.Listener:
    route = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path=STATS_PATH),
        route=route_components_pb2.RouteAction(cluster=ADMIN_CLUSTER))
    route.match.headers.add(name=":method", string_match={"exact": "GET"})
    not_found = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(prefix="/"),
        direct_response=route_components_pb2.DirectResponseAction(status=404))
    vhost = route_components_pb2.VirtualHost(name="stats", domains=["*"],
                                             routes=[route, not_found])
    router = Any()
    router.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="stats_listener",
        route_config=route_pb2.RouteConfiguration(name="stats", virtual_hosts=[vhost]),
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)],
    )
    hcm_any = Any()
    hcm_any.Pack(hcm)
    return listener_pb2.Listener(
        name=stats_listener_name(host, port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port, protocol=address_pb2.SocketAddress.TCP)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name="envoy.filters.network.http_connection_manager",
                                           typed_config=hcm_any)])],
    )
