"""The hub's surface: the ADS driver serves any ``AdsBackend`` (xds/watcher.py), the admin
API reads only the ``AdminReads`` it is handed, and the inline and worker rebuilds are
one path."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.inventory import Inventory
from controlplane.core.model import (
    DefaultAction,
    DnsPolicy,
    LabelSelector,
    Namespace,
    Service,
    object_key,
)
from controlplane.core.settings import Settings
from controlplane.dns.views import DEFAULT_TENANT
from controlplane.hub.hub import Hub
from controlplane.store.store import Store
from controlplane.translate.types import LISTENER_TYPE
from controlplane.xds.delta import DeltaOutgoing, DeltaStream
from controlplane.xds.protocol import Event, Outgoing, SotwStream
from controlplane.xds.server import add_ads_service
from controlplane.xds.snapshot import ViewSnapshot, build_snapshot
from tests.factories import inventory, node

ROOT = Path(__file__).resolve().parents[1]


# -- the ADS driver and its protocol -------------------------------------------------
@dataclass
class FakeWatch:
    conn_id: str
    peer: str
    stream: SotwStream | DeltaStream


@dataclass
class FakeBackend:
    """A configuration side that is not the hub: one fixed snapshot for everybody."""

    snapshot: ViewSnapshot
    calls: list[str] = field(default_factory=list)
    wakes: list[Callable[[], None]] = field(default_factory=list)

    def open(self, peer: str, *, delta: bool = False,
             notify: Callable[[], None] | None = None) -> FakeWatch:
        self.calls.append("open")
        if notify is not None:
            self.wakes.append(notify)
        return FakeWatch("s1", peer, DeltaStream("s1") if delta else SotwStream("s1"))

    def attach(self, watch: FakeWatch) -> None:
        assert watch.stream.node is not None
        self.calls.append(f"attach {watch.stream.node.id}")

    def snapshot_for(self, watch: FakeWatch) -> ViewSnapshot | None:
        return self.snapshot

    def close(self, watch: FakeWatch) -> None:
        self.calls.append("close")

    def record(self, watch: FakeWatch, event: Event) -> None:
        self.calls.append(f"{type(event).__name__.lower()} {event.version}")

    def record_sent(self, watch: FakeWatch, out: Outgoing | DeltaOutgoing) -> None:
        self.calls.append(f"sent {out.version}")


async def _requests(queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None]
                    ) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
    while (item := await queue.get()) is not None:
        yield item


def test_the_ads_driver_serves_any_backend_that_implements_the_protocol() -> None:
    backend = FakeBackend(build_snapshot("fixed", {LISTENER_TYPE: {}}))
    closed = asyncio.run(_one_stream(backend))
    version = backend.snapshot.types[LISTENER_TYPE].version
    assert closed
    assert backend.calls == ["open", "attach sleep.acme", f"sent {version}",
                             f"ack {version}", "close"]
    assert len(backend.wakes) == 1


async def _one_stream(backend: FakeBackend) -> bool:
    server = grpc.aio.server()
    add_ads_service(server, backend)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        queue.put_nowait(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, node=base_pb2.Node(id="sleep.acme")))
        call = stub.StreamAggregatedResources(_requests(queue))
        first = await asyncio.wait_for(call.read(), 10)
        assert first.type_url == LISTENER_TYPE
        await queue.put(discovery_pb2.DiscoveryRequest(
            type_url=LISTENER_TYPE, version_info=first.version_info,
            response_nonce=first.nonce))
        await queue.put(None)  # the client ends the stream
        assert await asyncio.wait_for(call.read(), 10) is grpc.aio.EOF
    finally:
        await channel.close()
        await server.stop(None)
    return "close" in backend.calls


def test_the_ads_driver_and_the_query_log_service_do_not_import_the_hub() -> None:
    for path in (ROOT / "controlplane/xds/server.py",
                 ROOT / "controlplane/telemetry/querylog_service.py"):
        tree = ast.parse(path.read_text())
        imported = {n.module for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and n.module}
        assert not {m for m in imported if m.startswith("controlplane.hub")}, path


# -- the admin API's collaborators -----------------------------------------------------
class FakeResolvers:
    def describe(self) -> list[dict[str, object]]:
        return [{"tenant": "acme", "listen": "127.0.0.1:5300"}]


def test_the_admin_api_reads_what_it_is_handed() -> None:
    hub = Hub(Settings())
    reads = AdminReads.of_hub(
        hub, readiness=lambda: (False, "handed-in reason"), resolvers=FakeResolvers(),
        resolver_stats=lambda: {"acme": {"total.num.queries": 7.0}},
        source_status=lambda: {"kind": "handed"})

    async def main() -> dict[str, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(reads)),
                                     base_url="http://admin") as c:
            return {p: await c.get(p) for p in ("/readyz", "/api/v1/resolvers")}

    got = asyncio.run(main())
    assert got["/readyz"].status_code == 503
    assert got["/readyz"].json() == {"ready": False, "source": {"kind": "handed"},
                                     "reason": "handed-in reason"}
    assert got["/api/v1/resolvers"].json() == {"mode": "local", "resolvers": [
        {"tenant": "acme", "listen": "127.0.0.1:5300", "stats": {"total.num.queries": 7.0}}]}


def test_readiness_belongs_to_the_hub_and_is_told_by_a_method() -> None:
    hub = Hub(Settings())
    assert hub.readiness.state() == (False, "the first full load of the source has not finished")
    hub.readiness.loaded()
    assert hub.readiness.state() == (True, "")
    assert not hasattr(hub, "ready") and not hasattr(hub, "not_ready_reason")


# -- one build path --------------------------------------------------------------------
OBJECTS = (
    Namespace("acme", (("tenant", "acme"),)),
    DnsPolicy(name="acme", namespace_selector=LabelSelector(
        match_labels=(("tenant", "acme"),)), whitelist=("*.acme.svc.cluster.local",),
        default_action=DefaultAction.DENY),
    Service("acme", "web", cluster_ips=("10.0.0.1",)),
)


def test_inline_and_worker_rebuilds_take_the_same_steps_to_the_same_views() -> None:
    inline = Hub(Settings())
    inline.set_inventory(Inventory.of(OBJECTS))
    store = Store()
    for obj in OBJECTS:
        store.apply_object("test", object_key(obj), obj)
    worker = ThreadPoolExecutor(max_workers=1)
    offloaded = Hub(Settings(), worker=worker)
    try:
        asyncio.run(offloaded.apply(store.take))  # taken on the worker, as app.py does
    finally:
        worker.shutdown()
    steps = ["build", "adopt", "render", "install"]
    for hub in (inline, offloaded):
        assert [p for p in hub.metrics.traces[-1].phases if p in steps] == steps
    assert inline.tenant_views.keys() == offloaded.tenant_views.keys() == {DEFAULT_TENANT, "acme"}
    assert inline.tenant_views["acme"] == offloaded.tenant_views["acme"]
    assert [str(e) for e in inline.input_errors()] == [str(e) for e in offloaded.input_errors()]


def test_a_stream_gets_nothing_until_the_first_full_build() -> None:
    """A restarted control plane serves ADS before its first load; a sidecar that connects
    then must keep what it has, not get the ``_default`` view of an empty inventory
    (every name NXDOMAIN), and must get its own view as soon as the build is done."""
    woken: list[str] = []
    hub = Hub(Settings())
    conn = hub.open(peer="test", notify=lambda: woken.append("acme-1"))
    conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE,
                                                       node=node("acme-1", "acme")))
    hub.attach(conn)
    assert hub.snapshot_for(conn) is None  # nothing to send yet, whatever the view
    hub.set_inventory(inventory())
    snapshot = hub.snapshot_for(conn)
    assert snapshot is not None and conn.view_key is not None
    assert conn.view_key.tenant == "acme"
    assert woken, "the waiting stream was not woken after the first build"
