"""The hub redoes only what a change reaches, off the event loop, and says where time went."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import random
import sys
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import struct_pb2

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.model import (
    DefaultAction,
    Endpoint,
    EndpointSlice,
    Namespace,
    Service,
    ServiceEntry,
    ServicePort,
    object_key,
)
from controlplane.core.settings import DnsSettings, Settings
from controlplane.dns.incremental_records import IncrementalRecords
from controlplane.dns.record_index import RecordIndex
from controlplane.dns.records import RecordOptions, cluster_records
from controlplane.dns.views import Forwarding, ResolverHop, Upstream
from controlplane.hub.hub import Hub
from controlplane.hub.streams import Connection
from controlplane.runtime.heap import HeapGuard
from controlplane.store.store import Store
from controlplane.translate.types import LISTENER_TYPE
from tests.factories import tenant_policy

NAMESPACES = ("a", "b", "c")


def random_object(rng: random.Random) -> Any:
    ns = rng.choice(NAMESPACES)
    n = f"x{rng.randrange(8)}"
    ip = f"10.0.{rng.randrange(3)}.{rng.randrange(1, 5)}"
    what = rng.randrange(7)
    if what == 0:
        return Namespace(ns, (("tenant", rng.choice(NAMESPACES)),))
    if what == 1:
        return Service(ns, n, headless=True, ports=(ServicePort("pg", 5432),))
    if what == 2:
        return EndpointSlice(ns, f"{n}-{rng.randrange(2)}", f"x{rng.randrange(8)}", endpoints=(
            Endpoint((ip,), ready=True, hostname=f"h{rng.randrange(3)}"),))
    if what == 3:
        return ServiceEntry(ns, n, hosts=(f"{n}.partner.example",),
                            addresses=(ip,) if rng.random() < 0.5 else ())
    if what == 4:
        return tenant_policy(f"p{rng.randrange(3)}", rng.choice(NAMESPACES),
                             whitelist=(f"*.{rng.choice(NAMESPACES)}.svc.cluster.local",
                                        "*.partner.example"),
                             default_action=rng.choice(list(DefaultAction)),
                             # a server named by a Service: the view follows that Service too
                             server_address=rng.choice(["", "x1.a", "x2.b.svc:5353",
                                                        "10.9.9.8"]))
    return Service(ns, n, cluster_ips=(ip,), ports=(ServicePort("http", 80),))


def test_records_from_changed_keys_match_a_full_rebuild() -> None:
    rng = random.Random(5)
    store = Store()
    inc = IncrementalRecords()
    opts = RecordOptions()
    for _ in range(400):
        obj = random_object(rng)
        if rng.random() < 0.2:
            store.delete_object("k8s", object_key(obj))
        else:
            store.apply_object("k8s", object_key(obj), obj)
        batch = store.take()
        if rng.random() < 0.1:  # VIPs change now and then (allocation happens elsewhere)
            opts = dataclasses.replace(opts, vips={
                (se.namespace, se.name, h): f"240.0.0.{i + 1}" for i, se in enumerate(
                    batch.inventory.service_entries.values()) for h in se.hosts
                if not se.addresses})
        inc.apply(batch.inventory, batch.changed, opts)
        full = cluster_records(batch.inventory, options=opts)
        index = RecordIndex.of(full)
        assert inc.sorted_records() == full
        assert inc.records == index.by_name and inc.by_suffix == index.by_suffix


def _connect(hub: Hub, namespace: str, node_id: str) -> Connection:
    conn = hub.open(peer=node_id)
    n = base_pb2.Node(id=node_id)
    n.metadata.CopyFrom(struct_pb2.Struct())
    n.metadata.update({"NAMESPACE": namespace, "LABELS": {"app": "x"}})
    conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=n))
    hub.attach(conn)
    return conn


def _versions(hub: Hub) -> dict[str, dict[str, str]]:
    return {str(s.key): {t: ts.version for t, ts in s.types.items()}
            for s in hub.cache.snapshots()}


def test_views_from_changed_keys_match_views_rebuilt_every_time() -> None:
    rng = random.Random(9)
    store = Store()
    hub = Hub(Settings(dns=DnsSettings(vip_range="240.1.0.0/24", default_upstream="10.9.9.9")))
    # The reference rebuilds every view at every step; it has the same history (a policy
    # keeps its last valid server when its Service goes: last-good state).
    reference = Hub(hub.settings)
    for ns in NAMESPACES:
        _connect(hub, ns, f"n-{ns}")
        _connect(reference, ns, f"n-{ns}")
    for step in range(250):
        for _ in range(rng.randrange(1, 4)):
            obj = random_object(rng)
            if rng.random() < 0.2:
                store.delete_object("k8s", object_key(obj))
            else:
                store.apply_object("k8s", object_key(obj), obj)
        batch = store.take()
        hub.set_inventory(batch.inventory, changed=batch.changed)
        reference.builder._views.clear()  # noqa: SLF001 - nothing to reuse: rebuild every view
        reference.set_inventory(batch.inventory)
        assert hub.tenant_views == reference.tenant_views, step
        assert hub.policy_errors == reference.policy_errors, step
        assert _versions(hub) == _versions(reference), step
        assert hub.vips == reference.vips, step


class ThreadRecordingResolvers:
    """A ResolverDirectory that says which thread called it."""

    errors: dict[str, str] = {}

    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.prepare_threads: set[int] = set()

    @property
    def hop(self) -> ResolverHop | None:
        return None

    def hop_for(self, tenant: str) -> ResolverHop | None:
        return None

    def prepare(self, forwards: Mapping[str, Forwarding]) -> None:
        self.prepare_threads.add(threading.get_ident())

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        self.threads.add(threading.get_ident())
        return {t: Upstream("127.0.0.1", 5300) for t in forwards}


def test_with_a_worker_views_are_built_off_the_loop_and_resolvers_applied_on_it() -> None:
    store = Store()
    resolvers = ThreadRecordingResolvers()
    build_threads: set[int] = set()

    async def scenario() -> tuple[int, Hub]:
        loop_thread = threading.get_ident()
        with ThreadPoolExecutor(max_workers=1) as worker:
            hub = Hub(Settings(), resolvers=resolvers, worker=worker)
            resolvers.prepare_threads.clear()  # the constructor's empty build is inline
            built = hub.builder.build

            def spy(*args: Any) -> Any:
                build_threads.add(threading.get_ident())
                return built(*args)

            hub.builder.build = spy  # type: ignore[method-assign]
            store.replace_origin("f", [
                Namespace("acme", (("tenant", "acme"),)), Service("acme", "web",
                                                                  cluster_ips=("10.0.0.1",)),
                tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",),
                              default_action=DefaultAction.ALLOW, server_address="10.9.9.9")])
            await hub.apply(store.take)
            conn = _connect(hub, "acme", "n1")  # a new view key: rendered on the worker
            assert hub.snapshot_for(conn) is None
            for _ in range(200):
                if hub.snapshot_for(conn) is not None:
                    break
                await asyncio.sleep(0.01)
            assert hub.snapshot_for(conn) is not None
            store.apply_object("f", ("Service", "acme", "api"),
                               Service("acme", "api", cluster_ips=("10.0.0.2",)))
            await hub.apply(store.take, poked_at=1.0)
            return loop_thread, hub

    loop_thread, hub = asyncio.run(scenario())
    assert resolvers.threads == {loop_thread}
    assert build_threads and loop_thread not in build_threads
    # The tables' zone texts (1 s at 100,000 names) are made with the views, off the loop.
    assert resolvers.prepare_threads and loop_thread not in resolvers.prepare_threads
    assert [e.record.name for e in hub.tenant_views["acme"].entries] == [
        "api.acme.svc.cluster.local", "web.acme.svc.cluster.local"]
    trace = hub.metrics.traces[-1]
    assert trace.changed == 1 and trace.rebuilt == ("acme",) and trace.poked_at == 1.0
    assert {"merge", "build", "adopt", "render", "install"} <= set(trace.phases)


class MovingResolvers(ThreadRecordingResolvers):
    """Every tenant's resolver on ``port``: a test moves it (a restart on new ports)."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 5300

    def apply(self, forwards: Mapping[str, Forwarding]) -> dict[str, Upstream]:
        self.threads.add(threading.get_ident())
        return {t: Upstream("127.0.0.1", self.port) for t in forwards}


def test_with_a_resolver_thread_resolvers_are_applied_there_and_a_move_reaches_the_view(
        ) -> None:
    store = Store()
    resolvers = MovingResolvers()

    async def scenario() -> tuple[int, Hub, Connection]:
        loop_thread = threading.get_ident()
        with (ThreadPoolExecutor(max_workers=1) as worker,
              ThreadPoolExecutor(max_workers=1) as resolver_worker):
            hub = Hub(Settings(), resolvers=resolvers, worker=worker,
                      resolver_worker=resolver_worker)
            resolvers.threads.clear()  # the constructor's empty build is inline
            resolvers.prepare_threads.clear()
            store.replace_origin("f", [
                Namespace("acme", (("tenant", "acme"),)), Service("acme", "web",
                                                                  cluster_ips=("10.0.0.1",)),
                tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",),
                              default_action=DefaultAction.ALLOW, server_address="10.9.9.9")])
            await hub.apply(store.take)  # a first start: waited for before the views
            conn = _connect(hub, "acme", "n1")
            for _ in range(200):
                if hub.snapshot_for(conn) is not None:
                    break
                await asyncio.sleep(0.01)
            store.apply_object("f", ("Service", "acme", "api"),
                               Service("acme", "api", cluster_ips=("10.0.0.2",)))
            await hub.apply(store.take)  # up already: the apply runs after install
            assert hub.tenant_views["acme"].upstreams == (Upstream("127.0.0.1", 5300),)
            resolvers.port = 5301  # restarted on new ports: the views follow
            await hub.apply(None)
            return loop_thread, hub, conn

    loop_thread, hub, conn = asyncio.run(scenario())
    assert len(resolvers.threads) == 1 and loop_thread not in resolvers.threads
    # the tables' zone texts too: on that thread
    assert resolvers.prepare_threads == resolvers.threads
    assert hub.tenant_views["acme"].upstreams == (Upstream("127.0.0.1", 5301),)
    # what the stream is served was rendered from that view
    assert conn.view_key is not None and hub.snapshot_for(conn) is not None
    assert not hub.snapshots.stale(hub.streams.active_views(), hub.tenant_views)
    assert all("resolvers" in t.phases for t in list(hub.metrics.traces)[-3:])


def test_streams_of_a_changed_view_are_woken_a_batch_per_loop_iteration() -> None:
    from controlplane.hub.streams import WAKE_BATCH

    hub = Hub(Settings())
    store = Store()
    store.replace_origin("f", [Namespace("acme", (("tenant", "acme"),)),
                               tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",))])
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    conns = [_connect(hub, "acme", f"n{i}") for i in range(WAKE_BATCH * 3)]
    woken: list[int] = []

    async def scenario() -> list[int]:
        for i, c in enumerate(conns):
            c.notify = lambda i=i: woken.append(i)
        assert conns[0].view_key is not None
        hub.streams.wake(conns[0].view_key)
        counts = []
        for _ in range(4):
            await asyncio.sleep(0)
            counts.append(len(woken))
        return counts

    counts = asyncio.run(scenario())
    assert counts[0] == WAKE_BATCH and counts[-1] == len(conns)
    assert sorted(woken) == list(range(len(conns)))


def test_heap_guard_pauses_collection_and_freezes_what_was_built() -> None:
    guard = HeapGuard()
    with guard.quiet():  # inactive: the interpreter's defaults
        assert gc.isenabled()
    interval, frozen, thresholds = sys.getswitchinterval(), gc.get_freeze_count(), gc.get_threshold()
    try:
        guard.activate()
        assert sys.getswitchinterval() == 0.001
        assert gc.get_threshold() == (5_000, 5, 10)  # short-lived objects die young
        with guard.quiet():
            assert not gc.isenabled()
            with guard.quiet():  # nested (another thread's work): still paused
                kept = [[i] for i in range(100)]
            assert not gc.isenabled()
        assert gc.isenabled() and guard.freezes == 1
        assert gc.get_freeze_count() >= frozen + len(kept)
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)


def test_rebuild_traces_in_the_admin_api() -> None:
    hub = Hub(Settings())
    store = Store()
    store.replace_origin("f", [Namespace("acme", (("tenant", "acme"),)),
                               tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",))],
                         seen_at=100.0)
    conn = _connect(hub, "acme", "n1")

    async def scenario() -> dict[str, Any]:
        await hub.apply(store.take(), poked_at=100.02)
        (out,) = conn.stream.responses(hub.snapshot_for(conn))
        hub.record_sent(conn, out)
        for event in conn.stream.receive(discovery_pb2.DiscoveryRequest(
                type_url=LISTENER_TYPE, version_info=out.version, response_nonce=out.nonce)):
            hub.record(conn, event)
        transport = httpx.ASGITransport(app=create_app(AdminReads.of_hub(hub)))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            rebuilds = (await c.get("/api/v1/rebuilds")).json()["rebuilds"]
            metrics = (await c.get("/metrics")).text
        assert 'dnscp_rebuild_phase_seconds_count{phase="build"}' in metrics
        assert "dnscp_event_loop_lag_max_seconds" in metrics
        return dict(rebuilds[0])

    latest = asyncio.run(scenario())
    assert latest["seen_at"] == 100.0 and latest["first_ack_node"] == "n1"
    assert latest["sent"] == 1 and latest["last_sent_at"] >= latest["first_sent_at"]
    assert latest["snapshots_changed"] == [str(conn.view_key)]
    ms = latest["milliseconds"]
    assert abs(ms["to_loop"] - 20.0) < 1.0 and "envoy_ack" in ms and ms["build"] >= 0


def test_a_change_trace_counts_the_wave_until_the_last_stream_of_its_views() -> None:
    """The server's side of a change reaching many streams: every response carrying a
    changed view's new version counts, after the first ACK too, and the time of the last;
    a stream of another view does not."""
    hub = Hub(Settings())
    store = Store()
    store.replace_origin("f", [
        Namespace("acme", (("tenant", "acme"),)), Namespace("foo", (("tenant", "foo"),)),
        tenant_policy("acme", whitelist=("*.acme.svc.cluster.local",)),
        tenant_policy("foo", whitelist=("*.foo.svc.cluster.local",),
                      default_action=DefaultAction.DENY)])
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    acme = [_connect(hub, "acme", f"a{i}") for i in range(3)]
    foo = _connect(hub, "foo", "f1")
    for conn in (*acme, foo):  # every stream has the current version
        for out in conn.stream.responses(hub.snapshot_for(conn)):
            hub.record_sent(conn, out)
    store.apply_object("f", ("Service", "acme", "new"),
                       Service("acme", "new", cluster_ips=("10.0.0.9",)))
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    trace = hub.metrics.traces[-1]
    assert trace.views == {acme[0].view_key} and trace.sent == 0
    for conn in (*acme, foo):
        for out in conn.stream.responses(hub.snapshot_for(conn)):
            hub.record_sent(conn, out)
            for event in conn.stream.receive(discovery_pb2.DiscoveryRequest(
                    type_url=out.type_url, version_info=out.version, response_nonce=out.nonce)):
                hub.record(conn, event)  # the first ACK ends the trace's first part only
    assert trace.sent == 3 and trace.first_ack_at is not None
    assert trace.last_sent_at is not None and trace.first_sent_at is not None
    assert trace.last_sent_at >= trace.first_sent_at


def test_a_view_follows_the_service_its_server_names_even_when_it_sees_none_of_it() -> None:
    store = Store()
    hub = Hub(Settings())
    store.replace_origin("f", [
        Namespace("acme", (("tenant", "acme"),)), Service("dns", "up", cluster_ips=("10.5.0.1",)),
        tenant_policy("acme", whitelist=("*.partner.example",),
                      default_action=DefaultAction.DENY, server_address="up.dns")])
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    forward = hub.tenant_views["acme"].forward
    assert forward is not None and forward.server == Upstream("10.5.0.1", 53)
    store.apply_object("f", ("Service", "dns", "up"), Service("dns", "up",
                                                             cluster_ips=("10.5.0.2",)))
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    forward = hub.tenant_views["acme"].forward
    assert forward is not None and forward.server == Upstream("10.5.0.2", 53)
    assert hub.metrics.traces[-1].rebuilt == ("acme",)
    # Another Service changing does not concern the view: it is reused as it is.
    store.apply_object("f", ("Service", "dns", "other"), Service("dns", "other",
                                                                cluster_ips=("10.5.0.3",)))
    view = hub.tenant_views["acme"]
    batch = store.take()
    hub.set_inventory(batch.inventory, changed=batch.changed)
    assert hub.tenant_views["acme"] is view and hub.metrics.traces[-1].rebuilt == ()
