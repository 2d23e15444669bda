"""STRICT_DNS clusters for names Envoy answers from a cluster (ExternalName, DNS ServiceEntries).

Envoy's DNS filter answers a ``cluster_name`` entry with the addresses of the
cluster's hosts, so the answer follows the external name's real records. The
cluster resolves through the tenant's upstream when the view forwards (so a
tenant's own DNS server decides), else through Envoy's default resolver.
"""

from __future__ import annotations

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.dns.records import NameRecord
from controlplane.dns.views import ResolverHop, Upstream
from controlplane.translate.listeners import CARES, RESOLVER_HOP_CLUSTER, cares_resolver


def dns_cluster(record: NameRecord, upstreams: tuple[Upstream, ...], *, tcp: bool = False
                ) -> cluster_pb2.Cluster:
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
        cluster.typed_dns_resolver_config.name = CARES
        cluster.typed_dns_resolver_config.typed_config.Pack(cares_resolver(upstreams, tcp=tcp))
    return cluster


HOP_CLIENT_SECRET = "resolver-hop-client"


def hop_client_secret(hop: ResolverHop) -> secret_pb2.Secret:
    """The Secret the mutual hop's cluster asks for: the tenant's certificate and key."""
    secret = secret_pb2.Secret(name=HOP_CLIENT_SECRET)
    secret.tls_certificate.certificate_chain.inline_string = hop.client_cert_pem
    secret.tls_certificate.private_key.inline_string = hop.client_key_pem
    return secret


def resolver_hop_cluster(resolver: Upstream, hop: ResolverHop | None) -> cluster_pb2.Cluster:
    """The tenant resolver's DNS-over-TLS port, its certificate verified (CA and name);
    with a mutual ``hop``, the terminator in front of the resolvers, which the sidecar
    tells its tenant by SNI and proves it with the tenant's client certificate; with ``hop``
    None, plain DNS over TCP to ``resolver`` (a fronted pod without the TLS
    hop: unbound answers TCP on its DNS port)."""
    cluster = cluster_pb2.Cluster(
        name=RESOLVER_HOP_CLUSTER, type=cluster_pb2.Cluster.STATIC,
        connect_timeout=Duration(seconds=1))
    endpoints = cluster.load_assignment
    endpoints.cluster_name = RESOLVER_HOP_CLUSTER
    endpoints.endpoints.add().lb_endpoints.append(endpoint_components_pb2.LbEndpoint(
        endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
            socket_address=address_pb2.SocketAddress(address=resolver.host,
                                                      port_value=resolver.port)))))
    if hop is None:
        return cluster
    tls = tls_pb2.UpstreamTlsContext(sni=hop.sni or hop.server_name)
    common = tls.common_tls_context
    common.tls_params.tls_minimum_protocol_version = common_pb2.TlsParameters.TLSv1_3
    common.tls_params.tls_maximum_protocol_version = common_pb2.TlsParameters.TLSv1_3
    validation = common.validation_context
    validation.trusted_ca.inline_string = hop.ca_pem
    san = validation.match_typed_subject_alt_names.add()
    san.san_type = common_pb2.SubjectAltNameMatcher.DNS
    san.matcher.exact = hop.server_name
    if hop.mutual:  # the tenant's client certificate, by SDS over ADS (hop_client_secret)
        sds = common.tls_certificate_sds_secret_configs.add()
        sds.name = HOP_CLIENT_SECRET
        sds.sds_config.ads.SetInParent()
        sds.sds_config.resource_api_version = config_source_pb2.ApiVersion.V3
    cluster.transport_socket.name = "envoy.transport_sockets.tls"
    cluster.transport_socket.typed_config.Pack(tls)
    return cluster

