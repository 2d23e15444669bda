"""The Envoy side of the DNS front: the (name, type) set served on a loopback HTTP listener.

The set is the body of a ``direct_response`` in its own RouteConfiguration, sent by RDS
(``set_route``): an LDS update would keep the old filter chain, body included, for the
drain time (``docs/dns-front.md``). Two routes on ``GET /envoy-set``: 304 when the
client's ``If-None-Match`` is the current ETag, else 200 with the body and the ETag. The
listener (``set_listener``) names the route and finds it over ADS; with ``inline`` it
carries the route itself (a static bootstrap, ``envoy --mode validate``).

``front_resources`` is what ``translate_view`` adds for a fronted node; the hub decides
which pairs the body lists, so that a pair reaches the table before the set
(``hub/front_sets.py``).
"""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2, base_pb2, config_source_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import UInt32Value

from controlplane.dns.views import TenantView
from controlplane.translate.front import ENVOY_MAX_ANSWERS, envoy_pairs, set_body, set_etag
from controlplane.translate.types import LISTENER_TYPE, ROUTE_TYPE

SET_PATH = "/envoy-set"
ENVOY_DEFAULT_BODY_LIMIT = 4096  # Envoy's max_direct_response_body_size_bytes default
HCM = "envoy.filters.network.http_connection_manager"


def set_route_name(tenant: str) -> str:
    return f"dns-front-set:{tenant}"


def set_listener_name(host: str, port: int) -> str:
    return f"dns-front-set:{host}:{port}"


def set_url(host: str, port: int) -> str:
    """Where the front fetches the set (``front.kresd_front_config``'s ``set_url``)."""
    return f"http://{host}:{port}{SET_PATH}"


def _etag_header(etag: str) -> list[base_pb2.HeaderValueOption]:
    option = base_pb2.HeaderValueOption()
    option.header.key = "etag"
    option.header.value = etag
    return [option]


def route_for_body(name: str, body: str) -> route_pb2.RouteConfiguration:
    """The set's RouteConfiguration for ``body`` (``front.set_body``), named ``name``."""
    etag = set_etag(body)
    unchanged = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path=SET_PATH),
        direct_response=route_components_pb2.DirectResponseAction(status=304),
        response_headers_to_add=_etag_header(etag))
    unchanged.match.headers.add(name="if-none-match", string_match={"exact": etag})
    full = route_components_pb2.Route(
        match=route_components_pb2.RouteMatch(path=SET_PATH),
        direct_response=route_components_pb2.DirectResponseAction(status=200),
        response_headers_to_add=_etag_header(etag))
    full.direct_response.body.inline_string = body
    vhost = route_components_pb2.VirtualHost(name="set", domains=["*"],
                                             routes=[unchanged, full])
    size = max(len(body.encode()), ENVOY_DEFAULT_BODY_LIMIT)
    return route_pb2.RouteConfiguration(name=name, virtual_hosts=[vhost],
                                        max_direct_response_body_size_bytes=UInt32Value(
                                            value=size))


def set_route(view: TenantView, *, max_answers: int = ENVOY_MAX_ANSWERS
              ) -> route_pb2.RouteConfiguration:
    """The RouteConfiguration serving ``view``'s (name, type) set."""
    return route_for_body(set_route_name(view.tenant),
                          set_body(envoy_pairs(view, max_answers=max_answers)))


def set_listener(*, host: str, port: int, route_name: str,
                 inline: route_pb2.RouteConfiguration | None = None) -> listener_pb2.Listener:
    """The loopback HTTP listener serving the set: its route by RDS over ADS, or ``inline``."""
    router = Any()
    router.Pack(router_pb2.Router())
    hcm = hcm_pb2.HttpConnectionManager(
        stat_prefix="dns_front_set",
        http_filters=[hcm_pb2.HttpFilter(name="envoy.filters.http.router", typed_config=router)])
    if inline is not None:
        hcm.route_config.CopyFrom(inline)
    else:
        hcm.rds.route_config_name = route_name
        hcm.rds.config_source.ads.SetInParent()
        hcm.rds.config_source.resource_api_version = config_source_pb2.ApiVersion.V3
    hcm_any = Any()
    hcm_any.Pack(hcm)
    return listener_pb2.Listener(
        name=set_listener_name(host, port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port, protocol=address_pb2.SocketAddress.TCP)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name=HCM, typed_config=hcm_any)])])


def front_resources(view: TenantView, *, host: str, port: int,
                    max_answers: int = ENVOY_MAX_ANSWERS, body: str | None = None
                    ) -> dict[str, dict[str, Message]]:
    """The set listener (LDS) and its route (RDS) for ``view``, by type URL then name;
    ``body``: the set to serve (default: every pair of ``view``, ``set_route``)."""
    route = (set_route(view, max_answers=max_answers) if body is None
             else route_for_body(set_route_name(view.tenant), body))
    listener = set_listener(host=host, port=port, route_name=route.name)
    return {LISTENER_TYPE: {listener.name: listener}, ROUTE_TYPE: {route.name: route}}


__all__ = ["SET_PATH", "front_resources", "route_for_body", "set_listener",
           "set_listener_name", "set_route", "set_route_name", "set_url"]
