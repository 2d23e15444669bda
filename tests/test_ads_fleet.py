"""Many ADS streams at once: gRPC queues a burst of new streams instead of cancelling
them, and the responses in flight are bounded by one byte budget, each stream's
response being the view's shared body plus its own nonce (issue 21, item 3)."""

from __future__ import annotations

import asyncio
import threading
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.translate.types import LISTENER_TYPE
from controlplane.xds.budget import ByteBudget
from controlplane.xds.protocol import Outgoing, SotwStream
from controlplane.xds.server import AdsServicer, _payload, add_ads_service, ads_server
from controlplane.xds.snapshot import ViewSnapshot, build_snapshot
from tests.test_hub_surface import FakeBackend

BURST = 2000  # gRPC's defaults refuse at random past 1,000 queued calls


def _first_request(node_id: str) -> discovery_pb2.DiscoveryRequest:
    return discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=base_pb2.Node(id=node_id))


async def _one_request(node_id: str) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
    yield _first_request(node_id)  # then the client half-closes: the stream ends after


async def _first_response(call: grpc.aio.StreamStreamCall) -> str:
    try:
        async for response in call:
            return str(response.type_url)
        return "no response"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


def test_a_burst_of_new_streams_waiting_for_the_server_is_served_not_cancelled() -> None:
    """The server's event loop is held while 2,000 streams arrive (as in a reconnect storm,
    when it is busy sending): gRPC core queues them, and once the loop runs each one gets
    its listener. With gRPC's default queue limits some hundred ended CANCELLED before any
    response, and their sidecars came back at once to be refused again."""
    backend = FakeBackend(build_snapshot("fixed", {LISTENER_TYPE: {}}))
    held = threading.Event()
    release = threading.Event()
    started: dict[str, int] = {}
    stop: list[asyncio.Future[None]] = []

    def serve() -> None:
        async def main() -> None:
            server = ads_server()
            add_ads_service(server, backend)
            started["port"] = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            stop.append(done)

            def hold() -> None:
                held.set()
                release.wait()  # the loop is busy: no call is taken from core meanwhile

            asyncio.get_running_loop().call_soon(hold)
            await done
            await server.stop(None)
        asyncio.run(main())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    held.wait(30)

    async def clients() -> Counter[str]:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{started['port']}")
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            calls = [stub.StreamAggregatedResources(_one_request(f"n{i}")) for i in range(BURST)]
            await asyncio.gather(*(c.wait_for_connection() for c in calls),
                                 return_exceptions=True)  # every stream's headers are out
            release.set()
            return Counter(await asyncio.gather(*(_first_response(c) for c in calls)))
        finally:
            release.set()
            await channel.close()

    try:
        results = asyncio.run(clients())
    finally:
        release.set()
        loop_done = stop[0] if stop else None
        if loop_done is not None:
            loop_done.get_loop().call_soon_threadsafe(loop_done.set_result, None)
        thread.join(30)
    assert results == Counter({LISTENER_TYPE: BURST})


# -- one payload per view and version, bytes in flight bounded -----------------------
def _big_snapshot(names: int) -> ViewSnapshot:
    return build_snapshot("wide", {LISTENER_TYPE: {
        f"l{i}": listener_pb2.Listener(name=f"l{i}", stat_prefix="x" * 1000)
        for i in range(names)}})


def test_every_stream_of_a_view_sends_the_one_payload_of_its_version_as_it_is() -> None:
    """A change wave: each stream of the view is handed the same bytes object, nonce
    included, nothing joined or copied per stream (issue 21, item 3)."""
    snap = _big_snapshot(10)
    ts = snap.types[LISTENER_TYPE]
    outs = []
    for i in range(3):
        stream = SotwStream(f"s{i}")
        stream.receive(_first_request(f"n{i}"))
        [out] = stream.responses(snap)
        outs.append(out)
    assert all(out.body is ts.payload and out.tail == b"" for out in outs)  # not a copy
    assert all(out.payload is ts.payload for out in outs)
    assert [out.decode().nonce for out in outs] == [ts.shared_nonce] * 3
    assert all(out.size == len(ts.payload) for out in outs)
    decoded = outs[0].decode()
    assert decoded.version_info == ts.version and decoded.type_url == LISTENER_TYPE
    assert list(decoded.resources) == [ts.anys[n] for n in sorted(ts.anys)]


def test_a_stream_sent_a_snapshot_again_gets_its_own_nonce_joined_to_the_body() -> None:
    """Nonces stay unique per stream (#1): the same snapshot sent twice on one stream (a
    changed subscription, #10), or an older snapshot after a newer one, goes with the
    stream's own nonce, not the shared one again."""
    old, new = _big_snapshot(3), _big_snapshot(4)
    stream = SotwStream("s1")
    stream.receive(_first_request("n1"))
    [first] = stream.responses(old)
    assert first.nonce == old.types[LISTENER_TYPE].shared_nonce
    [second] = stream.responses(new)
    assert second.nonce == new.types[LISTENER_TYPE].shared_nonce
    stream.receive(discovery_pb2.DiscoveryRequest(  # ACKed; all, and one by name too
        type_url=LISTENER_TYPE, version_info=second.version, response_nonce=second.nonce,
        resource_names=["*", "l0"]))
    [third] = stream.responses(new)  # #10: the same snapshot again
    stream.receive(discovery_pb2.DiscoveryRequest(
        type_url=LISTENER_TYPE, version_info=third.version, response_nonce=third.nonce,
        resource_names=["*", "l0"]))
    [fourth] = stream.responses(old)  # the view went back to an older snapshot
    nonces = [o.nonce for o in (first, second, third, fourth)]
    assert len(set(nonces)) == 4
    assert third.nonce == "s1-1" and fourth.nonce == "s1-2"
    assert third.body is new.types[LISTENER_TYPE].body and third.tail
    assert third.decode().nonce == "s1-1" and fourth.decode().nonce == "s1-2"
    assert fourth.decode().version_info == old.types[LISTENER_TYPE].version


def test_the_byte_budget_holds_a_response_until_the_bytes_in_flight_leave_room() -> None:
    async def scenario() -> None:
        budget = ByteBudget(limit=10)
        await budget.acquire(6)
        second = asyncio.create_task(budget.acquire(6))
        third = asyncio.create_task(budget.acquire(1))  # fits, but waits its turn
        await asyncio.sleep(0)
        assert not second.done() and not third.done()
        assert budget.in_flight == 6 and budget.waited == 2
        budget.release(6)
        await asyncio.gather(second, third)
        assert budget.in_flight == 7
        budget.release(6)
        budget.release(1)
        await budget.acquire(50)  # larger than the budget: goes alone
        assert budget.in_flight == 50 and budget.peak == 50
        cancelled = asyncio.create_task(budget.acquire(1))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.gather(cancelled, return_exceptions=True)
        budget.release(50)
        assert budget.in_flight == 0 and not budget._waiters
    asyncio.run(scenario())


def test_streams_of_one_view_send_within_the_budget_and_give_every_byte_back() -> None:
    snap = _big_snapshot(200)
    size = len(snap.types[LISTENER_TYPE].body)
    budget = ByteBudget(limit=size * 3 // 2)  # room for one response at a time
    backend = FakeBackend(snap)

    async def run() -> list[str]:
        server = ads_server()
        add_ads_service(server, backend, budget=budget)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            calls = [stub.StreamAggregatedResources(_one_request(f"n{i}")) for i in range(20)]
            return list(await asyncio.gather(*(_first_response(c) for c in calls)))
        finally:
            await channel.close()
            await server.stop(None)

    assert asyncio.run(run()) == [LISTENER_TYPE] * 20
    assert budget.waited > 0
    assert size <= budget.peak <= budget.limit
    assert budget.in_flight == 0


class _Context:
    """The little of grpc.aio.ServicerContext the ADS driver reads without auth."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AssertionError(f"aborted: {code} {details}")


def test_the_driver_hands_grpc_the_shared_body_not_a_joined_copy_it_would_keep() -> None:
    """grpc.aio holds the last item a handler yielded for as long as the stream lives: the
    driver yields the ``Outgoing`` (the view's body, the stream's nonce), and the bytes are
    joined by the response serializer while gRPC sends them."""
    snap = _big_snapshot(10)
    servicer = AdsServicer(FakeBackend(snap))

    async def first() -> Outgoing:
        responses = servicer.stream_aggregated_resources(
            _one_request("n1"), _Context())  # type: ignore[arg-type]
        out = await anext(responses)
        await responses.aclose()
        assert isinstance(out, Outgoing)
        return out

    out = asyncio.run(first())
    assert out.body is snap.types[LISTENER_TYPE].payload and _payload(out) is out.body
    response = discovery_pb2.DiscoveryResponse.FromString(_payload(out))
    assert response.nonce == out.nonce and response.version_info == out.version
    assert servicer.budget.in_flight == 0  # given back when the stream ended


def test_streams_that_were_sent_their_listener_hold_no_copy_of_it_while_they_stay() -> None:
    """30 streams get a listener of ~1 MB and stay connected: the Python memory the
    server gains is far below one copy per stream (it was 30 copies: grpc.aio kept each
    handler's last yielded bytes)."""
    snap = _big_snapshot(1000)
    size = len(snap.types[LISTENER_TYPE].body)
    streams = 30

    async def run() -> int:
        server = ads_server()
        add_ads_service(server, FakeBackend(snap))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}",
                                            options=[("grpc.max_receive_message_length", -1)])
        hold = asyncio.Event()

        async def requests(i: int) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
            yield _first_request(f"n{i}")
            await hold.wait()  # the stream stays open, as a sidecar's does

        try:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            calls = [stub.StreamAggregatedResources(requests(i)) for i in range(streams)]
            for call in calls:
                await call.read()
            gained = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            hold.set()
            return gained
        finally:
            hold.set()
            await channel.close()
            await server.stop(None)

    gained = asyncio.run(run())
    assert gained < streams * size // 4, (gained, size)
