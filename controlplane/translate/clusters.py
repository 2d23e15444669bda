"""STRICT_DNS clusters for names Envoy answers from a cluster (ExternalName, DNS ServiceEntries).

Envoy's DNS filter answers a ``cluster_name`` entry with the addresses of the
cluster's hosts, so the answer follows the external name's real records. The
cluster resolves through the tenant's upstream when the view forwards (so a
tenant's own DNS server decides), else through Envoy's default resolver.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.cluster.v3 import cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import address_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from google.protobuf.duration_pb2 import Duration

from controlplane.dns.hop_peers import peer_order
from controlplane.dns.records import NameRecord
from controlplane.dns.views import ResolverHop, TenantView, Upstream
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


# How a sidecar leaves a dead terminator when the mutual hop lists several
# (docs/resolver-isolation.md, "Every replica in the hop cluster", has the figures): a
# connection whose connect fails tries the next host (the hop listener's tcp_proxy,
# ``HOP_CONNECT_ATTEMPTS``), and that one failure ejects the host for
# ``HOP_EJECTION_SECONDS`` (doubling while it keeps failing), so the connections after it
# never try it. No active health check: it would cost every terminator a TLS handshake
# per sidecar per interval.
HOP_CONNECT_ATTEMPTS = 3
# How a connection waits out a tenant resolver that died: the control plane restarts it on
# its own port within about 0.3 s (supervision every 0.25 s), so a connect that fails is
# tried again after 50, 100, 200, 400, 400... ms, about 2.4 s in all, instead of the query
# failing at once (SERVFAIL from the front). The sidecar's hop does this when it reaches
# the resolver itself; with the mutual hop the terminator does it (translate/terminator.py).
RESTART_CONNECT_ATTEMPTS = 8
RESTART_BACKOFF_MS = (50, 400)
HOP_EJECTION_SECONDS = 5
HOP_MAX_EJECTION_SECONDS = 60


def resolver_hop_cluster(endpoints: Sequence[Upstream], hop: ResolverHop | None
                         ) -> cluster_pb2.Cluster:
    """The tenant resolver's DNS-over-TLS port, its certificate verified (CA and name);
    with a mutual ``hop``, the terminators in front of the resolvers (every replica's,
    ``endpoints`` in ``peer_order``), which the sidecar tells its tenant by SNI and proves
    it with the tenant's client certificate, a dead one ejected on its first failed
    connect; with ``hop`` None, plain DNS over TCP to the resolver (a fronted pod without
    the TLS hop: unbound answers TCP on its DNS port)."""
    cluster = cluster_pb2.Cluster(
        name=RESOLVER_HOP_CLUSTER, type=cluster_pb2.Cluster.STATIC,
        connect_timeout=Duration(seconds=1))
    assignment = cluster.load_assignment
    assignment.cluster_name = RESOLVER_HOP_CLUSTER
    locality = assignment.endpoints.add()
    for peer in sorted(set(endpoints), key=peer_order):
        locality.lb_endpoints.append(endpoint_components_pb2.LbEndpoint(
            endpoint=endpoint_components_pb2.Endpoint(address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=peer.host,
                                                          port_value=peer.port)))))
    if hop is not None and hop.mutual:
        eject_on_connect_failure(cluster.outlier_detection)
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



def eject_on_connect_failure(od: outlier_detection_pb2.OutlierDetection) -> None:
    """Outlier detection on local-origin errors only (a connect or TLS handshake that
    failed): one ejects the host. Every host may be ejected; with fewer than half left,
    Envoy's panic mode tries them all again, so one terminator alone is never shunned."""
    od.split_external_local_origin_errors = True
    od.consecutive_local_origin_failure.value = 1
    od.enforcing_consecutive_local_origin_failure.value = 100
    od.enforcing_local_origin_success_rate.value = 0
    od.enforcing_success_rate.value = 0
    od.enforcing_consecutive_gateway_failure.value = 0
    od.enforcing_consecutive_5xx.value = 0
    od.interval.seconds = 1
    od.base_ejection_time.seconds = HOP_EJECTION_SECONDS
    od.max_ejection_time.seconds = HOP_MAX_EJECTION_SECONDS
    od.max_ejection_percent.value = 100


def hop_endpoints(view: TenantView, peers: Sequence[Upstream]) -> tuple[Upstream, ...]:
    """The hop cluster's hosts: every peer for a mutual hop when peers are known, else the
    resolver the view forwards to (the replica's own terminator)."""
    if view.hop is not None and view.hop.mutual and peers:
        return tuple(peers)
    return view.upstreams[:1]


def hop_cluster(view: TenantView, peers: Sequence[Upstream]) -> cluster_pb2.Cluster | None:
    """The mutual hop's cluster of ``view`` with ``peers`` (None: the view has none), as
    ``translate_view`` renders it: what a change of peers alone re-renders."""
    if not view.upstreams or view.hop is None or not view.hop.mutual:
        return None
    return resolver_hop_cluster(hop_endpoints(view, peers), view.hop)
