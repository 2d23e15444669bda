"""The mutual hop over xDS: a forwarding view with a mutual hop carries its tenant's client
certificate as an SDS Secret, asked for by name (before any cluster in ADS order), and its
hop cluster presents it by SDS over ADS with the tenant's SNI; fronted or not."""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from envoy.config.cluster.v3 import cluster_pb2
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace
from controlplane.core.settings import Settings
from controlplane.dns.views import Forwarding, ResolverHop, TenantView, Upstream, with_resolver
from controlplane.hub.hub import Hub
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
from tests.factories import node, tenant_policy
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


# -- the hub: a renewed certificate re-renders its tenant's views only --------------------

class MutualResolvers:
    """A resolver directory with the mutual hop: one certificate per tenant, renewable."""

    errors: dict[str, str] = {}

    def __init__(self) -> None:
        ca, ca_key = make_ca(common_name="test hop CA")
        self.now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self.certs = TenantCerts(ca, ca_key, lifetime=datetime.timedelta(hours=1),
                                 clock=lambda: self.now)
        self.ca = ca.decode()

    @property
    def hop(self) -> ResolverHop:
        return ResolverHop(SERVER, self.ca)

    def hop_for(self, tenant: str) -> ResolverHop:
        cert = self.certs.get(tenant)
        return ResolverHop(SERVER, self.ca, sni=hop_sni(tenant, SERVER),
                           client_cert_pem=cert.cert_pem, client_key_pem=cert.key_pem)

    def prepare(self, forwards: Mapping[str, Forwarding]) -> None:
        pass

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        return {t: TERMINATOR for t in forwards}


def test_a_renewed_certificate_reaches_its_tenants_views_only() -> None:
    resolvers = MutualResolvers()
    hub = Hub(Settings(), resolvers=resolvers)
    hub.set_inventory(Inventory.of([
        *(Namespace(t, (("tenant", t),)) for t in ("acme", "globex")),
        *(tenant_policy(t, default_action=DefaultAction.ALLOW, server_address="10.9.9.9")
          for t in ("acme", "globex"))]))
    conns = {}
    for tenant in ("acme", "globex"):
        conn = hub.open(peer=tenant)
        conn.stream.receive(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, node=node(f"{tenant}-1", tenant, LABELS={})))
        hub.attach(conn)
        conns[tenant] = conn

    def secret(tenant: str) -> tuple[str, str]:
        key = conns[tenant].view_key
        assert key is not None
        snap = hub.cache.get(key)
        assert snap is not None
        typed = snap.types[SECRET_TYPE]
        any_ = typed.anys[HOP_CLIENT_SECRET]
        return typed.version, secret_pb2.Secret.FromString(
            any_.value).tls_certificate.certificate_chain.inline_string

    before = {t: secret(t) for t in conns}
    assert before["acme"][1] != before["globex"][1]  # one certificate per tenant
    hub.recompute()
    assert {t: secret(t) for t in conns} == before  # nothing due: nothing changes
    resolvers.now += datetime.timedelta(minutes=20)
    resolvers.certs.keep(["acme"])  # globex's forgotten: made again (now) when asked
    hub.recompute()
    middle = {t: secret(t) for t in conns}
    assert middle["acme"] == before["acme"] and middle["globex"] != before["globex"]
    resolvers.now += datetime.timedelta(minutes=10)  # acme's half-life, not globex's
    hub.recompute()
    after = {t: secret(t) for t in conns}
    assert after["acme"][0] != before["acme"][0] and after["acme"][1] != before["acme"][1]
    assert after["globex"] == middle["globex"]  # its views are not rendered again
