"""``--resolver-hop-peers``: every replica's terminator in the mutual hop's cluster.

The flag (parsing and the flags it needs), the cluster (every endpoint, sorted, the same
bytes for the same peers in any order, a dead one ejected, only for the mutual hop), the
peers from a Service's EndpointSlices (through the fake API server), and the hub: a
change of peers re-renders the hop cluster of the installed snapshots and nothing else.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane._kit.localrun import wait_for
from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.cli.flags import build_parser
from controlplane.cli.serve_settings import serve_settings
from controlplane.core.errors import ConfigError
from controlplane.core.hop_peers import HopPeers, parse_hop_peers
from controlplane.core.inventory import Inventory
from controlplane.core.manifests import parse_object
from controlplane.core.model import DefaultAction, Namespace
from controlplane.core.settings import ResolverHop as HopMode
from controlplane.core.settings import ResolverSettings, Settings
from controlplane.dns.hop_peers import hop_peers, peers_may_change
from controlplane.dns.views import ResolverHop, Upstream
from controlplane.hub.hub import Hub
from controlplane.sources.kubernetes import KubernetesSource
from controlplane.store.store import Store
from controlplane.translate import translate_view
from controlplane.translate.clusters import RESTART_BACKOFF_MS, RESTART_CONNECT_ATTEMPTS
from controlplane.translate.listeners import RESOLVER_HOP_CLUSTER
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE, SECRET_TYPE
from tests.factories import node, tenant_policy
from tests.fakes.kube import CORE, OURS, FakeKube, Resource
from tests.test_hop_mtls_xds import TERMINATOR, MutualResolvers, mutual_hop, view

SERVICE = "service:dns-system/dns-controlplane-resolvers"


# -- the flag ----------------------------------------------------------------------------
def test_a_list_of_addresses_is_sorted_deduplicated_and_takes_the_hop_port() -> None:
    got = parse_hop_peers(" 10.0.0.9, 10.0.0.10:7000,[fd00::1]:53, 10.0.0.9:10853 ",
                          default_port=10853)
    assert got.addresses == (("10.0.0.10", 7000), ("10.0.0.9", 10853), ("fd00::1", 53))
    assert got.service is None and got.given
    assert str(got) == "10.0.0.10:7000,10.0.0.9:10853,[fd00::1]:53"
    assert not parse_hop_peers("", default_port=1).given


def test_a_service_reference() -> None:
    got = parse_hop_peers(SERVICE, default_port=10853)
    assert got.service == ("dns-system", "dns-controlplane-resolvers")
    assert got.port_name == "dns-hop" and not got.addresses
    named = parse_hop_peers("service:ns/svc:hop", default_port=10853)
    assert (named.namespace, named.name, named.port_name) == ("ns", "svc", "hop")


@pytest.mark.parametrize("text", [
    "resolvers.dns-system.svc:10853",  # a name: the peers are IPs (or a Service)
    "10.0.0.1:0", "10.0.0.1:99999", "10.0.0.1,", "[fd00::1",
    "service:dns-system", "service:/svc", "service:Dns/svc", "service:ns/svc:",
])
def test_what_is_refused(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_hop_peers(text, default_port=10853)
    assert info.value.flag == "--resolver-hop-peers"


def serve(*flags: str) -> Settings:
    return serve_settings(build_parser().parse_args(
        ["serve", "--source", "examples", "--insecure", *flags]))


@pytest.mark.parametrize("hop", ["udp", "tls"])
def test_peers_need_the_mutual_hop(hop: str) -> None:
    with pytest.raises(ConfigError) as info:
        serve("--resolver-hop", hop, "--resolver-hop-peers", "10.0.0.1")
    assert info.value.flag == "--resolver-hop-peers"
    assert "--resolver-hop mtls" in info.value.reason and hop in info.value.reason
    with pytest.raises(ConfigError):
        ResolverSettings(hop=HopMode(hop), hop_peers=HopPeers(addresses=(("10.0.0.1", 1),)))


def test_the_flag_reaches_the_settings() -> None:
    got = serve("--resolver-hop", "mtls", "--resolver-hop-port", "7000",
                "--resolver-hop-peers", "10.0.0.2,10.0.0.1")
    assert got.resolvers.hop_peers.addresses == (("10.0.0.1", 7000), ("10.0.0.2", 7000))
    assert serve("--resolver-hop", "mtls", "--resolver-hop-peers", SERVICE
                 ).resolvers.hop_peers.service == ("dns-system", "dns-controlplane-resolvers")
    assert not serve().resolvers.hop_peers.given


# -- the cluster ---------------------------------------------------------------------------
def hop_resources(hop: ResolverHop | None, peers: tuple[Upstream, ...]
                  ) -> tuple[cluster_pb2.Cluster, tcp_proxy_pb2.TcpProxy]:
    res = translate_view(view(hop), host="127.0.0.1", port=15053, front=("127.0.0.1", 15055),
                         hop=("127.0.0.2", 15054), hop_peers=peers)
    cluster = res[CLUSTER_TYPE][RESOLVER_HOP_CLUSTER]
    listener = res[LISTENER_TYPE]["resolver-hop:127.0.0.2:15054"]
    assert isinstance(cluster, cluster_pb2.Cluster)
    assert isinstance(listener, listener_pb2.Listener)
    proxy = tcp_proxy_pb2.TcpProxy()
    listener.filter_chains[0].filters[0].typed_config.Unpack(proxy)
    return cluster, proxy


def endpoints(cluster: cluster_pb2.Cluster) -> list[str]:
    return [f"{e.endpoint.address.socket_address.address}:"
            f"{e.endpoint.address.socket_address.port_value}"
            for locality in cluster.load_assignment.endpoints for e in locality.lb_endpoints]


PEERS = (Upstream("10.0.0.10", 10853), Upstream("fd00::1", 10853), Upstream("10.0.0.9", 10853))


def test_the_mutual_hop_lists_every_peer_sorted_and_identically() -> None:
    hop = mutual_hop("acme")
    cluster, proxy = hop_resources(hop, PEERS)
    assert endpoints(cluster) == ["10.0.0.9:10853", "10.0.0.10:10853", "fd00::1:10853"]
    same = [hop_resources(hop, order)[0].SerializeToString(deterministic=True)
            for order in (PEERS, PEERS[::-1], PEERS + PEERS[:1])]
    assert len(set(same)) == 1  # any order, duplicates: the same bytes on every replica
    # A dead terminator: the next host is tried, and the failed one ejected at once.
    assert proxy.max_connect_attempts.value == 3
    od = cluster.outlier_detection
    assert od.split_external_local_origin_errors and od.consecutive_local_origin_failure.value == 1
    assert od.enforcing_consecutive_local_origin_failure.value == 100
    assert od.max_ejection_percent.value == 100
    # No peer known yet: the replica's own terminator, as before.
    alone, _ = hop_resources(hop, ())
    assert endpoints(alone) == [str(TERMINATOR)]


def test_other_hops_keep_their_one_resolver_and_no_failover() -> None:
    for hop in (None, ResolverHop("tenant-resolver.dns-controlplane", mutual_hop("a").ca_pem)):
        cluster, proxy = hop_resources(hop, PEERS)  # peers are the mutual hop's only
        assert endpoints(cluster) == [str(TERMINATOR)]
        assert not cluster.HasField("outlier_detection")
        # Their one resolver, waited for while it is restarted on its own port, with a
        # backoff between tries (the mutual hop's terminator does that on its side).
        assert proxy.max_connect_attempts.value == RESTART_CONNECT_ATTEMPTS
        assert (proxy.backoff_options.base_interval.ToMilliseconds(),
                proxy.backoff_options.max_interval.ToMilliseconds()) == RESTART_BACKOFF_MS


# -- the peers from a Service's EndpointSlices (the fake API server) -------------------------
def endpoint_slice(name: str, endpoints: list[tuple[str, bool]], *, service: str,
                   port_name: str = "dns-hop", namespace: str = "dns-system"
                   ) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "ports": [{"name": port_name, "port": 10853, "protocol": "TCP"},
                      {"name": "grpc-xds", "port": 18000, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}
                          for ip, ready in endpoints]}


@pytest.fixture
def kube_resources() -> list[Resource]:
    return CORE + OURS


@pytest.fixture
def source(kube: FakeKube, tmp_path: Path) -> Iterator[tuple[Store, KubernetesSource]]:
    store = Store()
    api = kubernetes.config.new_client_from_config(str(kube.kubeconfig(tmp_path)))
    src = KubernetesSource(api, store, lambda: None, watch_timeout=5, backoff_base=0.05)
    src.start()
    yield store, src
    src.stop()


def test_the_peers_are_the_ready_endpoints_of_the_services_port(
        kube: FakeKube, source: tuple[Store, KubernetesSource]) -> None:
    store, _ = source
    spec = parse_hop_peers(SERVICE, default_port=10853)
    kube.apply(endpoint_slice("hop-1", [("10.1.0.9", True), ("10.1.0.7", False)],
                              service="dns-controlplane-resolvers"))
    kube.apply(endpoint_slice("hop-2", [("10.1.0.10", True)],
                              service="dns-controlplane-resolvers"))
    kube.apply(endpoint_slice("other", [("10.1.0.11", True)], service="something-else"))
    kube.apply(endpoint_slice("elsewhere", [("10.1.0.12", True)],
                              service="dns-controlplane-resolvers", namespace="default"))
    kube.apply(endpoint_slice("no-hop-port", [("10.1.0.13", True)],
                              service="dns-controlplane-resolvers", port_name="metrics"))
    want = (Upstream("10.1.0.9", 10853), Upstream("10.1.0.10", 10853))
    wait_for(lambda: hop_peers(spec, store.inventory()) == want, timeout=15,
             what="the two ready endpoints on dns-hop")
    # A pod being deleted: its endpoint turns not ready; the other pod's is the one left.
    kube.apply(endpoint_slice("hop-1", [("10.1.0.9", False), ("10.1.0.7", False)],
                              service="dns-controlplane-resolvers"))
    wait_for(lambda: hop_peers(spec, store.inventory()) == (Upstream("10.1.0.10", 10853),),
             timeout=15, what="the not-ready endpoint gone")
    kube.delete("EndpointSlice", "hop-2", "dns-system")
    wait_for(lambda: hop_peers(spec, store.inventory()) == (), timeout=15,
             what="no peer left (the replica's own terminator then)")


def test_only_slices_of_the_services_namespace_are_read_again() -> None:
    spec = parse_hop_peers(SERVICE, default_port=10853)
    assert peers_may_change(spec, None)
    assert peers_may_change(spec, [("EndpointSlice", "dns-system", "x")])
    assert not peers_may_change(spec, [("EndpointSlice", "default", "x"),
                                       ("Service", "dns-system", "dns-controlplane-resolvers")])
    fixed = parse_hop_peers("10.0.0.1", default_port=10853)
    assert hop_peers(fixed, Inventory()) == (Upstream("10.0.0.1", 10853),)


# -- the hub: a change of peers re-renders the hop cluster only -------------------------------
def test_a_change_of_peers_re_renders_only_the_hop_cluster() -> None:
    settings = Settings(resolvers=ResolverSettings(
        hop=HopMode.MTLS, hop_peers=parse_hop_peers(SERVICE, default_port=10853)))
    hub = Hub(settings, resolvers=MutualResolvers())
    base = [Namespace("acme", (("tenant", "acme"),)), Namespace("dns-system", ()),
            tenant_policy("acme", default_action=DefaultAction.ALLOW,
                          server_address="10.9.9.9")]

    def slices(*ready: str) -> list[Any]:
        out = parse_object(endpoint_slice("hop", [(ip, True) for ip in ready],
                                          service="dns-controlplane-resolvers"), origin="t")
        return [out]

    hub.set_inventory(Inventory.of(base))
    conn = hub.open(peer="acme")
    conn.stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=LISTENER_TYPE, node=node("acme-1", "acme", LABELS={})))
    hub.attach(conn)
    assert conn.view_key is not None
    key = conn.view_key

    def hop_hosts() -> list[str]:
        snap = hub.cache.get(key)
        assert snap is not None
        return endpoints(cluster_pb2.Cluster.FromString(
            snap.types[CLUSTER_TYPE].anys[RESOLVER_HOP_CLUSTER].value))

    assert hop_hosts() == [str(TERMINATOR)]  # none known yet: its own
    before = hub.cache.get(key)
    assert before is not None
    views_before = dict(hub.tenant_views)
    hub.set_inventory(Inventory.of([*base, *slices("10.1.0.2", "10.1.0.1")]))
    after = hub.cache.get(key)
    assert after is not None and hop_hosts() == ["10.1.0.1:10853", "10.1.0.2:10853"]
    assert hub.tenant_views["acme"] is views_before["acme"]  # the view was not rebuilt
    for type_url, typed in before.types.items():  # only the clusters changed
        changed = after.types[type_url].version != typed.version
        assert changed == (type_url == CLUSTER_TYPE), type_url
    assert after.types[SECRET_TYPE].version == before.types[SECRET_TYPE].version
    # A replica gone from the Service: the cluster follows; none left: its own again.
    hub.set_inventory(Inventory.of([*base, *slices("10.1.0.2")]))
    assert hop_hosts() == ["10.1.0.2:10853"]
    hub.set_inventory(Inventory.of(base))
    assert hop_hosts() == [str(TERMINATOR)]


def test_the_admin_api_shows_the_peers() -> None:
    settings = Settings(resolvers=ResolverSettings(
        hop=HopMode.MTLS, hop_peers=parse_hop_peers("10.0.0.2,10.0.0.1", default_port=7)))
    hub = Hub(settings, resolvers=MutualResolvers())

    body = asyncio.run(_get_resolvers(hub))
    assert body["hop_peers"] == {"from": "10.0.0.1:7,10.0.0.2:7",
                                 "listed": ["10.0.0.1:7", "10.0.0.2:7"], "note": None}
    plain = Hub(Settings())
    assert "hop_peers" not in asyncio.run(_get_resolvers(plain))


async def _get_resolvers(hub: Hub) -> Any:
    app = create_app(AdminReads.of_hub(hub))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://admin") as client:
        return (await client.get("/api/v1/resolvers")).json()
