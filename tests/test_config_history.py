"""Per-sidecar config history (hub/config_history.py): every push, ACK and NACK with
Envoy's reason, bounded whatever the fleet; served by GET /api/v1/nodes/{node}/history."""

from __future__ import annotations

import asyncio

import httpx
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.settings import Settings
from controlplane.hub.config_history import ConfigEvent, ConfigHistory
from controlplane.hub.hub import Hub
from controlplane.translate.types import LISTENER_TYPE
from tests.factories import connect, inventory, node


def event(t: float, node: str, kind: str, error: str = "") -> ConfigEvent:
    return ConfigEvent(t, node, "s1", kind, "lds", f"v{t:g}", error)


def test_rings_are_bounded_and_nacks_outlive_the_pushes_after_them() -> None:
    history = ConfigHistory(keep=3, keep_nacks=2)
    history.add(event(1, "a", "nack", "bad listener"))
    for t in range(2, 10):
        history.add(event(t, "b" if t % 2 else "a", "sent"))
    assert len(history.events) == 3 and len(history.nacks) == 1
    a = history.of("a")
    assert [e["time"] for e in a] == [8, 1]  # 6 left the ring; the NACK stayed, once
    assert a[-1]["error"] == "bad listener"
    assert history.of("a", limit=1)[0]["time"] == 8
    assert history.of("nobody") == []


def test_the_admin_route_lists_pushes_acks_and_nacks() -> None:
    clock = [1000.0]
    hub = Hub(Settings(), clock=lambda: clock[0])
    hub.set_inventory(inventory())
    conn = connect(hub, node("acme-1", "acme"))
    (out,) = conn.stream.responses(hub.snapshot_for(conn))
    hub.record_sent(conn, out)
    clock[0] = 1001.0
    nack = discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, response_nonce=out.nonce)
    nack.error_detail.message = "Invalid listener"
    for e in conn.stream.receive(nack):
        hub.record(conn, e)

    async def get(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(
                app=create_app(AdminReads.of_hub(hub))), base_url="http://admin") as c:
            return await c.get(path)

    body = asyncio.run(get("/api/v1/nodes/acme-1/history")).json()
    assert body["connected"] is True
    assert [(e["time"], e["event"], e["type"], e["version"], e["error"])
            for e in body["events"]] == [
        (1001.0, "nack", "lds", out.version, "Invalid listener"),
        (1000.0, "sent", "lds", out.version, "")]
    other = asyncio.run(get("/api/v1/nodes/gone/history")).json()
    assert other == {"node_id": "gone", "connected": False, "events": []}
