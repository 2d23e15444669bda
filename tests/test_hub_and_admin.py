"""The hub (views per connection, serialise once per view) and the read-only admin API."""

from __future__ import annotations

import asyncio

import httpx
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory
from controlplane.core.model import LabelSelector, Service
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.translate.types import LISTENER_TYPE
from tests.factories import connect, inventory, node, tenant_policy


def test_serialised_once_per_view_not_per_connection() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    before = hub.cache.serializations
    conns = [connect(hub, node(f"acme-{i}", "acme", LABELS={"app": "sleep"})) for i in range(50)]
    assert hub.cache.serializations - before == 1
    assert {c.view_key for c in conns} == {conns[0].view_key}
    # A change that touches acme's view: one more serialisation, for all 50 streams.
    before = hub.cache.serializations
    hub.set_inventory(inventory((Service("acme", "api", cluster_ips=("10.0.0.2",)),)))
    assert hub.cache.serializations - before == 1
    # A change acme cannot see does not re-serialise acme's view.
    before = hub.cache.serializations
    hub.set_inventory(inventory((Service("acme", "api", cluster_ips=("10.0.0.2",)),
                                 Service("foo", "api", cluster_ips=("10.0.1.2",)))))
    assert hub.cache.serializations - before == 0


def test_view_follows_policy_changes() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    conn = connect(hub, node("x", "acme"))
    assert conn.view_key is not None and conn.view_key.tenant == "acme"
    notified: list[bool] = []
    conn.notify = lambda: notified.append(True)
    inv = inventory()
    del inv.policies["acme"]
    hub.set_inventory(inv)
    assert conn.view_key.tenant == "_default" and notified


def test_a_stream_of_a_known_workload_gets_the_policy_in_force_when_it_attaches() -> None:
    """The hub keeps the policy selected per workload (namespace, labels) for the streams
    that follow: never past a change of which policy applies."""
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    first = connect(hub, node("x", "acme", LABELS={"app": "web"}))
    assert first.view_key is not None and first.view_key.tenant == "acme"
    inv = inventory((tenant_policy("web", "acme", selector=LabelSelector(
        match_labels=(("app", "web"),))),))
    hub.set_inventory(inv)
    second = connect(hub, node("y", "acme", LABELS={"app": "web"}))
    other = connect(hub, node("z", "acme", LABELS={"app": "db"}))
    assert [c.view_key.tenant for c in (first, second, other) if c.view_key] == [
        "web", "web", "acme"]
    hub.set_inventory(inventory())
    third = connect(hub, node("w", "acme", LABELS={"app": "web"}))
    assert [c.view_key.tenant for c in (first, second, third) if c.view_key] == [
        "acme", "acme", "acme"]


def test_node_without_metadata_gets_default_view_and_warning() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    conn = connect(hub, base_pb2.Node(id="bare"))
    assert conn.view_key is not None and conn.view_key.tenant == "_default"
    assert conn.workload is not None
    assert any("NAMESPACE" in w for w in conn.workload.warnings)


def test_dns_listen_address_and_labels_from_metadata() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory((tenant_policy("gw", "acme", selector=LabelSelector(
        match_labels=(("app", "gw"),))),)))
    conn = connect(hub, node("g", "acme", LABELS="app=gw,tier=1",
                             DNS_LISTEN_ADDRESS="127.0.0.2:5300"))
    assert conn.view_key is not None
    assert (conn.view_key.tenant, conn.view_key.host, conn.view_key.port) == ("gw", "127.0.0.2",
                                                                             5300)


def _client(hub: Hub) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(AdminReads.of_hub(hub))),
                             base_url="http://admin")


def test_admin_api() -> None:
    hub = Hub(Settings())
    inv = inventory()
    hub.set_inventory(Inventory.of(
        [*inv.namespaces.values(), *inv.services.values(), *inv.policies.values()],
        [InputError("File", "", "examples/bad.yaml", "not valid YAML at line 13",
                    "examples/bad.yaml:13")]))
    conn = connect(hub, node("acme-1", "acme"))
    out = conn.stream.responses(hub.snapshot_for(conn))
    conn.stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=LISTENER_TYPE, version_info=out[0].version, response_nonce=out[0].nonce))

    async def calls() -> dict[str, httpx.Response]:
        async with _client(hub) as c:
            paths = ["/healthz", "/readyz", "/api/v1/nodes", "/api/v1/views",
                     "/api/v1/views/acme/dns-table", "/api/v1/views/nope/dns-table",
                     "/api/v1/errors", "/openapi.json"]
            return {p: await c.get(p) for p in paths}

    r = asyncio.run(calls())
    assert r["/healthz"].json() == {"status": "ok"}
    assert r["/readyz"].status_code == 503  # not ready before the first full load
    (n,) = r["/api/v1/nodes"].json()
    assert n["node_id"] == "acme-1" and n["tenant"] == "acme"
    assert n["types"]["lds"]["acked_version"] == out[0].version
    table = r["/api/v1/views/acme/dns-table"].json()
    assert [e["name"] for e in table["names"]] == ["web.acme.svc.cluster.local"]
    assert table["names"][0]["A"] == ["10.0.0.1"]
    assert table["names"][0]["rule"] == "whitelist *.acme.svc.cluster.local"
    assert r["/api/v1/views/nope/dns-table"].status_code == 404
    errors = r["/api/v1/errors"].json()
    assert errors["count"] == 1 and errors["errors"][0]["origin"] == "examples/bad.yaml:13"
    assert "/api/v1/nodes" in r["/openapi.json"].json()["paths"]
    hub.readiness.loaded()
    assert asyncio.run(_get(hub, "/readyz")).status_code == 200


def test_admin_api_has_no_write_operations() -> None:
    app = create_app(AdminReads.of_hub(Hub(Settings())))
    methods = {m for route in app.routes for m in getattr(route, "methods", set())}
    assert methods <= {"GET", "HEAD"}


async def _get(hub: Hub, path: str) -> httpx.Response:
    async with _client(hub) as c:
        return await c.get(path)


def test_nack_is_kept_for_the_admin_api() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    conn = connect(hub, node("acme-1", "acme"))
    (out,) = conn.stream.responses(hub.snapshot_for(conn))
    req = discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, response_nonce=out.nonce)
    req.error_detail.message = "Invalid listener"
    for event in conn.stream.receive(req):
        hub.record(conn, event)
    (n,) = hub.streams.nodes()
    assert n["types"]["lds"]["last_nack_error"] == "Invalid listener"
    assert n["types"]["lds"]["nacked_version"] == out.version
    assert hub.metrics.nacks_total == 1


def test_metrics_push_latency_pushes_and_nacks() -> None:
    clock = [1000.0]
    hub = Hub(Settings(), clock=lambda: clock[0])
    hub.set_inventory(inventory(), changed_at=999.0)
    conn = connect(hub, node("acme-1", "acme"))
    (out,) = conn.stream.responses(hub.snapshot_for(conn))
    hub.record_sent(conn, out)
    clock[0] = 1000.5
    for event in conn.stream.receive(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, version_info=out.version, response_nonce=out.nonce)):
        hub.record(conn, event)
    push_latency = hub.metrics.push_latency
    assert push_latency.count == 1 and abs(push_latency.sum - 1.5) < 1e-9
    view = str(conn.view_key)
    assert hub.metrics.pushes[(view, "lds")] == 1

    async def scrape() -> str:
        async with _client(hub) as c:
            return (await c.get("/metrics")).text

    text = asyncio.run(scrape())
    assert 'dnscp_push_latency_seconds_bucket{le="2.5"} 1.0' in text
    assert 'dnscp_push_latency_seconds_bucket{le="1.0"} 0.0' in text
    assert f'dnscp_pushes_total{{type="lds",view="{view}"}} 1.0' in text
    assert f'dnscp_connected_proxies{{tenant="acme",view="{view}"}} 1.0' in text
    assert "dnscp_snapshot_bytes{" in text
