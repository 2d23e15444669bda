"""TenantView + listen address -> the UDP listener carrying the DNS filter."""

from __future__ import annotations

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import address_pb2, grpc_service_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.access_loggers.open_telemetry.v3 import logs_service_pb2 as otel_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.extensions.filters.udp.dns_filter.v3 import dns_filter_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration

from controlplane.dns.views import TenantView, Upstream
from controlplane.translate import wire
from controlplane.translate.dns_table import DomainCache, dns_table_bytes, dns_table_parts

DNS_FILTER = "envoy.filters.udp.dns_filter"
CARES = "envoy.network.dns_resolver.cares"


def listener_name(host: str, port: int) -> str:
    return f"dns:{host}:{port}"


def stat_prefix(tenant: str) -> str:
    """``tenant.<name>``: the bootstrap's stats tag turns <name> into a ``tenant`` label."""
    return f"tenant.{tenant}"


def cares_resolver(servers: tuple[Upstream, ...], *, tcp: bool = False
                   ) -> cares_dns_resolver_pb2.CaresDnsResolverConfig:
    """c-ares asking ``servers`` (over TCP when ``tcp``: the local hop to a TLS resolver)."""
    cares = cares_dns_resolver_pb2.CaresDnsResolverConfig(use_resolvers_as_fallback=False)
    for u in servers:
        cares.resolvers.add().socket_address.CopyFrom(address_pb2.SocketAddress(
            address=u.host, port_value=u.port,
            protocol=address_pb2.SocketAddress.TCP if tcp else address_pb2.SocketAddress.UDP))
    cares.dns_resolver_options.no_default_search_domain = True
    cares.dns_resolver_options.use_tcp_for_dns_lookups = tcp
    return cares


def _filter_config(view: TenantView, *, servers: tuple[Upstream, ...] | None,
                   tcp: bool, resolver_timeout_ms: int) -> dns_filter_pb2.DnsFilterConfig:
    """The DNS filter without its table (``server_config``)."""
    config = dns_filter_pb2.DnsFilterConfig(stat_prefix=stat_prefix(view.tenant))
    if servers is None:
        servers = view.upstreams if view.forwarding else ()
    if servers:
        cares = cares_resolver(servers, tcp=tcp)
        client = config.client_config
        client.resolver_timeout.CopyFrom(Duration(seconds=resolver_timeout_ms // 1000,
                                                  nanos=(resolver_timeout_ms % 1000) * 1_000_000))
        client.typed_dns_resolver_config.name = CARES
        client.typed_dns_resolver_config.typed_config.Pack(cares)
        client.max_pending_lookups = 1024
    if view.log_queries:
        config.access_log.append(query_access_log(view.tenant))
    return config


def dns_filter_config(view: TenantView, *, servers: tuple[Upstream, ...] | None = None,
                      tcp: bool = False, resolver_timeout_ms: int = 2000,
                      domains: DomainCache | None = None) -> dns_filter_pb2.DnsFilterConfig:
    """The DNS filter; names outside the table go to ``servers`` (default the view's
    upstreams: its tenant resolver, when it forwards: ``TenantView.forwarding``).
    ``domains``: a cache to reuse (dns_table.py)."""
    config = _filter_config(view, servers=servers, tcp=tcp,
                            resolver_timeout_ms=resolver_timeout_ms)
    config.server_config.inline_dns_table.MergeFromString(dns_table_bytes(view, domains))
    return config


DNS_FILTER_CONFIG_TYPE = ("type.googleapis.com/"
                          + dns_filter_pb2.DnsFilterConfig.DESCRIPTOR.full_name)
_SERVER_CONFIG = dns_filter_pb2.DnsFilterConfig.DESCRIPTOR.fields_by_name["server_config"].number
_INLINE_TABLE = (dns_filter_pb2.DnsFilterConfig.ServerContextConfig.DESCRIPTOR
                 .fields_by_name["inline_dns_table"].number)


def dns_filter_config_bytes(view: TenantView, *, servers: tuple[Upstream, ...] | None = None,
                            tcp: bool = False, resolver_timeout_ms: int = 2000,
                            domains: DomainCache | None = None) -> bytes:
    """``dns_filter_config(...)`` serialised (deterministically), without parsing the table
    into the message and writing it out again: the table's bytes go in as they are. The
    fields are written in number order as the serialisation writes them: ``stat_prefix``
    (1), ``server_config`` (2) holding only the table, then the rest (3, 4)."""
    config = _filter_config(view, servers=servers, tcp=tcp,
                            resolver_timeout_ms=resolver_timeout_ms)
    head = dns_filter_pb2.DnsFilterConfig(stat_prefix=config.stat_prefix)
    config.ClearField("stat_prefix")
    table = dns_table_parts(view, domains)
    size = sum(map(len, table))
    table_head = wire.field_head(_INLINE_TABLE, size)
    # One join: the table (tens of MB for a wide view) is copied once, from its pieces.
    return b"".join([head.SerializeToString(deterministic=True),
                     wire.field_head(_SERVER_CONFIG, len(table_head) + size),
                     table_head, *table, config.SerializeToString(deterministic=True)])


QUERY_LOG_BODY = "%QUERY_NAME% %QUERY_TYPE% %RESPONSE_CODE%"
QUERY_LOG_NAME = "dns_queries"
XDS_CLUSTER = "xds_cluster"  # the bootstrap's cluster to the control plane


OTEL_CONFIG_TYPE = ("type.googleapis.com/"
                    "envoy.extensions.access_loggers.open_telemetry.v3.OpenTelemetryAccessLogConfig")
# Fields of OpenTelemetryAccessLogConfig that replace the deprecated common_config in
# Envoy 1.40 but are newer than the generated Python class (see wire.py).
OTEL_GRPC_SERVICE, OTEL_LOG_NAME, OTEL_BUFFER_FLUSH_INTERVAL = 9, 10, 11


def query_access_log(tenant: str) -> accesslog_pb2.AccessLog:
    """Per-query records to the control plane over OpenTelemetry logs (gRPC).

    The control plane classifies each name with the tenant's policy and keeps
    the WARN and denied ones; Envoy's DNS filter has no way to filter by rule.
    """
    otel = otel_pb2.OpenTelemetryAccessLogConfig()
    otel.body.string_value = QUERY_LOG_BODY
    otel.attributes.values.add(key="tenant").value.string_value = tenant
    grpc_service = grpc_service_pb2.GrpcService()
    grpc_service.envoy_grpc.cluster_name = XDS_CLUSTER
    value = (otel.SerializeToString(deterministic=True)
             + wire.message_field(OTEL_GRPC_SERVICE, grpc_service)
             + wire.string_field(OTEL_LOG_NAME, QUERY_LOG_NAME)
             + wire.message_field(OTEL_BUFFER_FLUSH_INTERVAL, Duration(nanos=200_000_000)))
    return accesslog_pb2.AccessLog(name="envoy.access_loggers.open_telemetry",
                                   typed_config=Any(type_url=OTEL_CONFIG_TYPE, value=value))


def dns_listener(view: TenantView, *, host: str, port: int,
                 servers: tuple[Upstream, ...] | None = None, tcp: bool = False,
                 resolver_timeout_ms: int = 2000,
                 domains: DomainCache | None = None) -> listener_pb2.Listener:
    listener = listener_pb2.Listener(
        name=listener_name(host, port),
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port, protocol=address_pb2.SocketAddress.UDP)))
    # What ``Any.Pack(dns_filter_config(...))`` holds, without the table parsed and written;
    # set in place: a filter or an Any passed in would be copied again (tens of MB).
    typed = listener.listener_filters.add(name=DNS_FILTER).typed_config
    typed.type_url = DNS_FILTER_CONFIG_TYPE
    typed.value = dns_filter_config_bytes(view, servers=servers, tcp=tcp,
                                          resolver_timeout_ms=resolver_timeout_ms,
                                          domains=domains)
    return listener


RESOLVER_HOP_CLUSTER = "tenant_resolver"
TCP_PROXY = "envoy.filters.network.tcp_proxy"


def resolver_hop_listener(*, host: str, port: int, connect_attempts: int = 0,
                          backoff_ms: tuple[int, int] | None = None
                          ) -> listener_pb2.Listener:
    """A loopback TCP listener that hands each DNS-over-TCP connection (of Envoy's
    resolver, or of the pod's DNS front) to the ``tenant_resolver`` cluster, which speaks
    TLS (or plain TCP) to the tenant resolver. ``connect_attempts`` (0: Envoy's default,
    1): how many times a connection tries to connect when connecting fails (the mutual hop
    lists every replica's terminator: ``clusters.resolver_hop_cluster``; a lone resolver
    being restarted comes back on its own port), ``backoff_ms`` the (base, max) wait
    between tries (None: none)."""
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix="tenant_resolver", cluster=RESOLVER_HOP_CLUSTER)
    if connect_attempts:
        proxy.max_connect_attempts.value = connect_attempts
    if backoff_ms is not None:
        proxy.backoff_options.base_interval.FromMilliseconds(backoff_ms[0])
        proxy.backoff_options.max_interval.FromMilliseconds(backoff_ms[1])
    proxy_any = Any()
    proxy_any.Pack(proxy)
    return listener_pb2.Listener(
        name=f"resolver-hop:{host}:{port}",
        address=address_pb2.Address(socket_address=address_pb2.SocketAddress(
            address=host, port_value=port, protocol=address_pb2.SocketAddress.TCP)),
        filter_chains=[listener_components_pb2.FilterChain(filters=[
            listener_components_pb2.Filter(name=TCP_PROXY, typed_config=proxy_any)])],
    )
