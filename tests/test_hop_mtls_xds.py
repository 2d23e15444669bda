"""The mutual hop over xDS: a forwarding view with a mutual hop carries its tenant's client
certificate as an SDS Secret, asked for by name (before any cluster in ADS order), and its
hop cluster presents it by SDS over ADS with the tenant's SNI; fronted or not."""

from __future__ import annotations

import datetime

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace
from controlplane.core.settings import Settings
from controlplane.dns.views import Forwarding, ResolverHop, TenantView, Upstream, with_resolver
from controlplane.identity.certs import hop_sni, make_ca
from controlplane.identity.hop_issuer import TenantCerts
from controlplane.translate import translate_view
from controlplane.translate.clusters import HOP_CLIENT_SECRET
from controlplane.translate.listeners import RESOLVER_HOP_CLUSTER
from controlplane.translate.types import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    NAMED_ONLY_TYPES,
    ORDERED_TYPES,
    SECRET_TYPE,
)
from controlplane.xds.delta import DeltaStream
from controlplane.xds.protocol import SotwStream
from controlplane.xds.snapshot import build_snapshot
from tests.factories import tenant_policy
from tests.golden_support import tenant_views

SERVER = "tenant-resolver.dns-controlplane"
TERMINATOR = Upstream("10.0.0.7", 10853)


def mutual_hop(tenant: str) -> ResolverHop:
    ca, ca_key = make_ca(common_name="test hop CA")
    cert = TenantCerts(ca, ca_key, lifetime=datetime.timedelta(hours=1)).get(tenant)
    return ResolverHop(server_name=SERVER, ca_pem=ca.decode(), sni=hop_sni(tenant, SERVER),
                       client_cert_pem=cert.cert_pem, client_key_pem=cert.key_pem)


def view(hop: ResolverHop | None) -> TenantView:
    inv = Inventory.of([Namespace("acme", (("tenant", "acme"),)),
                        tenant_policy("acme", default_action=DefaultAction.ALLOW,
                                      server_address="10.9.9.9")])
    built = tenant_views(inv, Settings())["acme"]
    assert isinstance(built.forward, Forwarding)
    return with_resolver(built, TERMINATOR, hop)


def test_secrets_come_first_and_by_name() -> None:
    assert ORDERED_TYPES[0] == SECRET_TYPE and ORDERED_TYPES.index(CLUSTER_TYPE) == 1
    assert SECRET_TYPE in NAMED_ONLY_TYPES


def test_a_mutual_view_carries_the_secret_and_a_cluster_that_asks_for_it() -> None:
    hop = mutual_hop("acme")
    assert "PRIVATE KEY" not in repr(hop)
    for front in (None, ("127.0.0.1", 15055)):  # fronted or not
        res = translate_view(view(hop), host="127.0.0.1", port=15053, front=front)
        (secret,) = res[SECRET_TYPE].values()
        assert isinstance(secret, secret_pb2.Secret) and secret.name == HOP_CLIENT_SECRET
        assert secret.tls_certificate.private_key.inline_string == hop.client_key_pem
        cluster = res[CLUSTER_TYPE][RESOLVER_HOP_CLUSTER]
        assert isinstance(cluster, cluster_pb2.Cluster)
        tls = tls_pb2.UpstreamTlsContext()
        cluster.transport_socket.typed_config.Unpack(tls)
        assert tls.sni == f"acme.{SERVER}"
        (sds,) = tls.common_tls_context.tls_certificate_sds_secret_configs
        assert sds.name == HOP_CLIENT_SECRET and sds.sds_config.HasField("ads")
        (san,) = tls.common_tls_context.validation_context.match_typed_subject_alt_names
        assert san.matcher.exact == SERVER  # the terminator is still verified
        assert any(name.startswith("resolver-hop:") for name in res[LISTENER_TYPE])
    plain_tls = translate_view(view(ResolverHop(SERVER, hop.ca_pem)), host="127.0.0.1",
                               port=15053)
    assert SECRET_TYPE not in plain_tls  # --resolver-hop tls: no client certificate
    assert SECRET_TYPE not in translate_view(view(None), host="127.0.0.1", port=15053)


def test_the_secret_is_served_by_name_in_sotw_and_delta() -> None:
    res = translate_view(view(mutual_hop("acme")), host="127.0.0.1", port=15053)
    snap = build_snapshot("v", res)
    stream = SotwStream("s")
    req = discovery_pb2.DiscoveryRequest(type_url=SECRET_TYPE)
    req.node.id = "n"
    stream.receive(req)
    (first,) = stream.responses(snap)
    assert first.names == frozenset()  # an empty list is none, never all
    stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=SECRET_TYPE, resource_names=[HOP_CLIENT_SECRET], response_nonce=first.nonce,
        version_info=first.version))
    (named,) = stream.responses(snap)
    assert named.names == {HOP_CLIENT_SECRET}
    delta = DeltaStream("d")
    dreq = discovery_pb2.DeltaDiscoveryRequest(type_url=SECRET_TYPE,
                                               resource_names_subscribe=[HOP_CLIENT_SECRET])
    dreq.node.id = "n"
    delta.receive(dreq)
    (got,) = delta.responses(snap)
    assert got.names == {HOP_CLIENT_SECRET}
