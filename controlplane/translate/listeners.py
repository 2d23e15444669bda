"""TenantView + listen address -> the UDP listener carrying the DNS filter."""

from __future__ import annotations

from envoy.config.core.v3 import address_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration

from controlplane.translate.dns_table import dns_table
from controlplane.views import TenantView

DNS_FILTER = "envoy.filters.udp.dns_filter"
CARES = "envoy.network.dns_resolver.cares"


def listener_name(host: str, port: int) -> str:
    return f"dns:{host}:{port}"


def stat_prefix(tenant: str) -> str:
    """``tenant.<name>``: the bootstrap's stats tag turns <name> into a ``tenant`` label."""
    return f"tenant.{tenant}"


def dns_filter_config(view: TenantView, *, resolver_timeout_ms: int = 2000
                      ) -> dns_filter_pb2.DnsFilterConfig:
    config = dns_filter_pb2.DnsFilterConfig(stat_prefix=stat_prefix(view.tenant))
    config.server_config.inline_dns_table.CopyFrom(dns_table(view))
    if view.upstreams:
        cares = cares_dns_resolver_pb2.CaresDnsResolverConfig(use_resolvers_as_fallback=False)
        for u in view.upstreams:
            cares.resolvers.add().socket_address.CopyFrom(
                address_pb2.SocketAddress(address=u.host, port_value=u.port,
                                          protocol=address_pb2.SocketAddress.UDP))
        cares.dns_resolver_options.no_default_search_domain = True
        client = config.client_config
        client.resolver_timeout.CopyFrom(Duration(seconds=resolver_timeout_ms // 1000,
                                                  nanos=(resolver_timeout_ms % 1000) * 1_000_000))
        client.typed_dns_resolver_config.name = CARES
        client.typed_dns_resolver_config.typed_config.Pack(cares)
        client.max_pending_lookups = 1024
    return config


def dns_listener(view: TenantView, *, host: str, port: int,
                 resolver_timeout_ms: int = 2000) -> listener_pb2.Listener:
    filter_any = Any()
    filter_any.Pack(dns_filter_config(view, resolver_timeout_ms=resolver_timeout_ms))
    return listener_pb2.Listener(
        name=listener_name(host, port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port, protocol=address_pb2.SocketAddress.UDP)),
        listener_filters=[listener_components_pb2.ListenerFilter(name=DNS_FILTER,
                                                                 typed_config=filter_any)],
    )
