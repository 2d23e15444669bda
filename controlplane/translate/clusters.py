"""STRICT_DNS clusters for names Envoy answers from a cluster (ExternalName, DNS ServiceEntries).

Envoy's DNS filter answers a ``cluster_name`` entry with the addresses of the
cluster's hosts, so the answer follows the external name's real records. The
cluster resolves through the tenant's upstream when the view forwards (so a
tenant's own DNS server decides), else through Envoy's default resolver.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.network.dns_resolver.cares.v3 import cares_dns_resolver_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.records import NameRecord
from controlplane.views import Upstream

CARES = "envoy.network.dns_resolver.cares"


def dns_cluster(record: NameRecord, upstreams: tuple[Upstream, ...]) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=record.cluster_name,
        type=cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=Duration(seconds=1),
        dns_lookup_family=cluster_pb2.Cluster.ALL,
        respect_dns_ttl=True,
        dns_refresh_rate=Duration(seconds=max(5, record.ttl)),
    )
    endpoints = cluster.load_assignment
    endpoints.cluster_name = record.cluster_name
    locality = endpoints.endpoints.add()
    for target in record.cluster:
        locality.lb_endpoints.append(endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=target.host,
                                                          port_value=target.port)))))
    if upstreams:
        cares = cares_dns_resolver_pb2.CaresDnsResolverConfig(use_resolvers_as_fallback=False)
        for u in upstreams:
            cares.resolvers.add().socket_address.CopyFrom(
                address_pb2.SocketAddress(address=u.host, port_value=u.port))
        cares.dns_resolver_options.no_default_search_domain = True
        cluster.typed_dns_resolver_config.name = CARES
        cluster.typed_dns_resolver_config.typed_config.Pack(cares)
    return cluster

