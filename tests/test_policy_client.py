"""The policy decider against a real gRPC ext_authz server in this process: refresh ahead
without spinning, a slow answer that only queues is not an outage, live questions do not
wait behind the table prefetch, and a tenant without forwarding still gets its table."""

from __future__ import annotations

import asyncio

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from controlplane._kit.localrun import free_port
from controlplane.core.inventory import Inventory
from controlplane.core.model import (
    DefaultAction,
    DnsPolicy,
    Namespace,
    PolicyServer,
    Service,
)
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.policy.decisions import Question
from controlplane.policyserver.client import PolicyDecider
from tests.factories import policy


class Server(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, delay: float = 0.0, ttl: float | None = None) -> None:
        self.delay, self.ttl, self.calls = delay, ttl, 0

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        self.calls += 1
        await asyncio.sleep(self.delay)
        resp = external_auth_pb2.CheckResponse()
        resp.status.code = 7 if request.attributes.request.http.host.startswith("no.") else 0
        if self.ttl is not None:
            resp.dynamic_metadata.update({"dns.ttl_seconds": self.ttl})
        return resp


async def _serve(servicer: Server) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(servicer, server)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, port


def _policy(port: int, **kw: object) -> DnsPolicy:
    return policy("t", {"t": "shop"}, default_action=DefaultAction.DENY,
                  policy_server=PolicyServer(f"127.0.0.1:{port}", **kw))  # type: ignore[arg-type]


def _inventory(policy: DnsPolicy, n: int = 3) -> Inventory:
    return Inventory.of([Namespace("shop", (("t", "shop"),)), policy,
                         *(Service("shop", f"s{i}", cluster_ips=(f"10.0.0.{i + 1}",))
                           for i in range(n)),
                         Service("shop", "no", cluster_ips=("10.0.1.1",))])


def test_tenant_without_forwarding_gets_its_table_from_the_decisions() -> None:
    async def run() -> None:
        servicer = Server()
        server, port = await _serve(servicer)
        decider = PolicyDecider()
        policy = _policy(port)  # no spec.server: the view does not forward
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(policy))
        decider.on_change = hub.recompute
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.05))
        for _ in range(100):
            if len(hub.tenant_views["t"].entries) == 3:
                break
            await asyncio.sleep(0.02)
        names = sorted(e.record.name for e in hub.tenant_views["t"].entries)
        assert names == [f"s{i}.shop.svc.cluster.local" for i in range(3)]
        assert hub.tenant_views["t"].server_denied == ("no.shop.svc.cluster.local",)
        stop.set()
        await task
        await server.stop(None)
    asyncio.run(run())


def test_refresh_ahead_asks_again_without_spinning() -> None:
    async def run() -> None:
        servicer = Server(ttl=0.5)
        server, port = await _serve(servicer)
        decider = PolicyDecider()
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port), n=1))
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.02))
        await asyncio.sleep(2.0)
        stop.set()
        await task
        await server.stop(None)
        # 2 names, a 0.5 s lifetime, re-asked before it ends: about 4 calls each in 2 s
        assert 4 <= servicer.calls <= 24, servicer.calls
        assert decider.counts[("t", "cache")] < 50  # the loop does not answer itself
    asyncio.run(run())


def test_a_wait_for_a_slot_is_not_an_outage_and_live_questions_get_their_own_slots() -> None:
    async def run() -> None:
        servicer = Server(delay=0.3)
        server, port = await _serve(servicer)
        decider = PolicyDecider(max_in_flight=4)
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port, timeout_ms=100), n=40))
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.02))
        await asyncio.sleep(0.05)  # the prefetch has filled its slots
        started = asyncio.get_running_loop().time()
        d = await decider.decide(Question(tenant="t", name="live.example.com", qtype="A"))
        waited = asyncio.get_running_loop().time() - started
        assert waited < 0.2 and d.source.startswith("failure mode closed")  # within timeout
        await asyncio.sleep(0.5)  # the live call (0.3 s) lands in its own slot
        later = await decider.decide(Question(tenant="t", name="live.example.com", qtype="A"))
        assert later.from_server and later.allow
        assert decider.reachable("t") == (True, "")  # slow is not unreachable
        stop.set()
        await task
        await server.stop(None)
    asyncio.run(run())
