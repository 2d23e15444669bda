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
from controlplane.policyserver.client import REFRESH_AHEAD, PolicyDecider
from tests.factories import policy
from tests.waits import until


class Server(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, delay: float = 0.0, ttl: float | None = None) -> None:
        self.delay, self.ttl, self.calls = delay, ttl, 0
        self.asked: list[str] = []  # the names, in the order the Checks arrived

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        self.calls += 1
        self.asked.append(request.attributes.request.http.host)
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
        await until(lambda: len(hub.tenant_views["t"].entries) == 3,
                    what="the table's 3 allowed names")
        names = sorted(e.record.name for e in hub.tenant_views["t"].entries)
        assert names == [f"s{i}.shop.svc.cluster.local" for i in range(3)]
        assert hub.tenant_views["t"].server_denied == ("no.shop.svc.cluster.local",)
        stop.set()
        await task
        await server.stop(None)
    asyncio.run(run())


class Clock:
    """A clock the test moves; it counts its reads, and the prefetch loop reads it once a
    round, so the reads say how many rounds have run."""

    def __init__(self) -> None:
        self.now, self.reads = 1000.0, 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


def test_refresh_ahead_asks_again_without_spinning() -> None:
    async def run() -> None:
        servicer = Server(ttl=10.0)
        server, port = await _serve(servicer)
        clock = Clock()
        decider = PolicyDecider(clock=clock)
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port), n=1))
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.02))
        await until(lambda: servicer.calls == 2, what="the table's 2 names asked")
        names = sorted(servicer.asked)
        assert len(set(names)) == 2

        async def rounds(n: int) -> None:  # n more rounds of the prefetch loop
            start = clock.reads
            await until(lambda: clock.reads >= start + n, what=f"{n} rounds of the loop")

        clock.now += 10.0 * (1 - REFRESH_AHEAD * 1.5) - 0.01  # not yet in the refresh window
        await rounds(20)
        assert servicer.calls == 2  # fresh decisions are not asked again, however often it looks
        clock.now += 10.0 * REFRESH_AHEAD * 1.5 - 0.02  # every name in its window, unexpired
        await until(lambda: servicer.calls == 4, what="each name asked again")
        assert sorted(servicer.asked[2:]) == names  # once each, before they expire
        await rounds(20)
        assert servicer.calls == 4  # the new answers are fresh: no spinning on them
        assert decider.counts[("t", "cache")] == 0  # the loop does not answer itself
        stop.set()
        await task
        await server.stop(None)
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
        await until(lambda: servicer.calls >= 2, what="the prefetch to fill its 2 slots")
        d = await decider.decide(Question(tenant="t", name="live.example.com", qtype="A"))
        # the query gets the failure mode at its own timeout (100 ms), the call goes on
        assert d.source == "failure mode closed: no answer within 100 ms", d.source
        await until(lambda: "live.example.com" in decider.table_decisions("t"),
                    what="the live call (0.3 s) to land")
        # it had a slot of its own: asked while the prefetch of 40 names was under way,
        # not queued behind it (at most the 2 + 2 table names of the prefetch's first rounds)
        assert servicer.asked.index("live.example.com") <= 4, servicer.asked[:8]
        later = await decider.decide(Question(tenant="t", name="live.example.com", qtype="A"))
        assert later.from_server and later.allow
        assert decider.reachable("t") == (True, "")  # slow is not unreachable
        stop.set()
        await task
        await server.stop(None)
    asyncio.run(run())


def test_an_outage_longer_than_the_lifetime_expires_the_table_decisions() -> None:
    """Expired decisions are never used: once the server is gone past a decision's
    lifetime, the table names fall to the failure mode (closed: left out), the views are
    rebuilt, and the reason says how many names that affects."""
    async def run() -> None:
        servicer = Server(ttl=10.0)
        server, port = await _serve(servicer)
        clock = Clock()
        decider = PolicyDecider(clock=clock)
        changes: list[float] = []
        hub = Hub(Settings(), decider=decider)
        decider.on_change = lambda: changes.append(clock.now)
        hub.set_inventory(_inventory(_policy(port), n=1))
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.02))
        await until(lambda: len(decider.table_decisions("t")) == 2, what="2 names decided")
        await server.stop(None)
        clock.now += 10.0 * (1 - REFRESH_AHEAD)  # the re-asks fail: an outage
        await until(lambda: not decider.reachable("t")[0], what="the outage")
        assert len(decider.table_decisions("t")) == 2  # still alive: still used
        before = len(changes)
        clock.now += 10.0  # past every lifetime
        await until(lambda: decider.table_decisions("t") == {}, what="expired ones dropped")
        await until(lambda: len(changes) > before, what="a rebuild for the expired names")
        up, why = decider.reachable("t")
        assert not up and "2 table names past their lifetime" in why, why
        stop.set()
        await task
    asyncio.run(run())


class SlowFor(Server):
    """Answers names starting with ``slow.`` after ``delay``, every other name at once."""

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        if request.attributes.request.http.host.startswith("slow."):
            await asyncio.sleep(self.delay)
        self.calls += 1
        resp = external_auth_pb2.CheckResponse()
        resp.status.code = 0
        return resp


def test_a_late_failure_does_not_overrule_a_later_success() -> None:
    """A Check that started first and fails at its deadline (1 s) after a later Check
    succeeded leaves the server reachable: the latest call started decides."""
    async def run() -> None:
        server, port = await _serve(SlowFor(delay=3.0))
        decider = PolicyDecider()
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port, timeout_ms=100), n=0))
        slow = await decider.decide(Question(tenant="t", name="slow.example.com", qtype="A"))
        assert slow.source.startswith("failure mode closed")
        fast = await decider.decide(Question(tenant="t", name="fast.example.com", qtype="A"))
        assert fast.from_server and fast.allow
        await until(lambda: decider.counts[("t", "error")] == 1, timeout=5.0,
                    what="the slow Check to fail at its deadline")
        assert decider.reachable("t") == (True, "")
        await server.stop(None)
    asyncio.run(run())


def test_a_recovered_server_is_probed_even_when_nothing_is_due() -> None:
    """Long lifetimes: no decision is due, yet during an outage the loop asks once a
    second, so a server that is back clears the outage."""
    async def run() -> None:
        servicer = Server(ttl=600.0)
        server, port = await _serve(servicer)
        decider = PolicyDecider()
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port, timeout_ms=100), n=1))
        stop = asyncio.Event()
        task = asyncio.create_task(decider.run(stop, interval=0.02))
        await until(lambda: len(decider.table_decisions("t")) == 2, what="2 names decided")
        await server.stop(None)
        await decider.decide(Question(tenant="t", name="new.example.com", qtype="A"))
        await until(lambda: not decider.reachable("t")[0], what="the outage")
        again = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Server(ttl=600.0), again)
        again.add_insecure_port(f"127.0.0.1:{port}")
        await again.start()
        await until(lambda: decider.reachable("t")[0], timeout=10.0,
                    what="a probe to find the server back")
        stop.set()
        await task
        await again.stop(None)
    asyncio.run(run())


class PerType(Server):
    """Decides ``typed.`` names per type (A allowed, every other type denied), and every
    other name for all its types at once."""

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        self.calls += 1
        http = request.attributes.request.http
        self.asked.append(f"{http.host}{http.path}")
        resp = external_auth_pb2.CheckResponse()
        if http.host.startswith("typed."):
            resp.status.code = 0 if http.path == "/A" else 7
            resp.dynamic_metadata.update({"dns.per_type": True})
        return resp


def test_decisions_per_type_when_the_server_says_so() -> None:
    async def run() -> None:
        servicer = PerType()
        server, port = await _serve(servicer)
        decider = PolicyDecider()
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port), n=0))

        async def ask(name: str, qtype: str) -> bool:
            return (await decider.decide(Question(tenant="t", name=name, qtype=qtype))).allow
        assert await ask("typed.example.com", "A")
        assert not await ask("typed.example.com", "AAAA")  # asked on its own
        assert await ask("typed.example.com", "A")  # cached per type
        assert await ask("whole.example.com", "A")
        assert await ask("whole.example.com", "TXT")  # one decision for every type
        assert servicer.asked == ["typed.example.com/A", "typed.example.com/AAAA",
                                  "whole.example.com/A"]
        await server.stop(None)
    asyncio.run(run())


class Broken(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers every Check with gRPC status INTERNAL."""

    async def Check(self, request: external_auth_pb2.CheckRequest,  # noqa: N802
                    context: grpc.aio.ServicerContext) -> external_auth_pb2.CheckResponse:
        await context.abort(grpc.StatusCode.INTERNAL, "rule table missing")
        raise AssertionError("abort returns never")


def test_the_outage_reason_follows_the_latest_failure() -> None:
    """A server gone (UNAVAILABLE), then one answering INTERNAL on the same address: the
    reason shown is INTERNAL's, the outage keeps its start and is logged once."""
    async def run() -> None:
        port = free_port()
        decider = PolicyDecider()
        hub = Hub(Settings(), decider=decider)
        hub.set_inventory(_inventory(_policy(port, timeout_ms=500), n=0))
        gone = await decider.decide(Question(tenant="t", name="a.example.com", qtype="A"))
        assert gone.source.startswith("failure mode closed")
        reachable, why = decider.reachable("t")
        assert not reachable and "UNAVAILABLE" in why, why
        since = decider.outages["t"].since
        server = grpc.aio.server()
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(Broken(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        try:
            async def internal() -> bool:
                await decider.decide(Question(tenant="t", name=f"b{decider.checks}.example",
                                              qtype="A"))
                return "INTERNAL" in decider.reachable("t")[1]
            deadline = asyncio.get_running_loop().time() + 15  # the channel's back-off
            while not await internal() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            reachable, why = decider.reachable("t")
            assert not reachable and "INTERNAL: rule table missing" in why, why
            assert decider.outages["t"].since == since
        finally:
            await server.stop(None)
    asyncio.run(run())
