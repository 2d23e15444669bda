"""The grpcio (asyncio) driver around ``SotwStream``: a thin loop, no protocol logic.

It knows the configuration only through ``AdsBackend`` (``watcher.py``): open,
attach, the snapshot for the next responses, ACK/NACK and sends, close.

A response leaves the handler as its ``Outgoing`` (usually the view's whole
response, nonce included, one bytes object for all its streams; else the view's
body and the stream's own nonce), and becomes bytes only in
``response_serializer``, as gRPC sends it, within the bytes-in-flight budget
all streams share (``budget.py``).
Not bytes: grpc.aio keeps the last item a handler yielded until it yields the
next, so a stream that yielded its 1.6 MB listener held that copy for as long as
it stayed connected (one copy per stream: 800 MB for 1,000 idle streams of an
800 KB listener, 75 MB when the handler yields the ``Outgoing``).

``ads_server()`` makes the gRPC server with the options a fleet needs (see
``SERVER_OPTIONS``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.core.errors import AuthUnavailable, ProtocolError, Unauthenticated
from controlplane.core.workload import workload_from_node
from controlplane.identity.auth import (
    Authenticator,
    Identity,
    authorize,
    node_refusal,
)
from controlplane.identity.limits import CallerLimits
from controlplane.xds.budget import ByteBudget
from controlplane.xds.delta import DeltaOutgoing
from controlplane.xds.protocol import Outgoing
from controlplane.xds.watcher import AdsBackend, W

log = logging.getLogger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

# gRPC core keeps each new call in a queue until the server asks for one, and grpc.aio
# asks for one call per event-loop turn. Past ``max_pending_requests`` (1,000 by
# default) queued calls core refuses new ones at random, every one past the hard limit
# (3,000), and it drops a call queued over ``max_unrequested_time`` (30 s): each such
# stream ends with CANCELLED before any response. A reconnect storm of a few thousand
# sidecars queues that many in well under a second, and every refused sidecar comes
# back after its back-off: a storm that never ends (issue 21). A queued call costs its
# headers only, so the queue is bounded by the fleet, not by gRPC's defaults.
MAX_PENDING_CALLS = 1_000_000
SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", 256 * 1024 * 1024),
    ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
    ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
    ("grpc.server_max_unrequested_time_in_server", 600),
)


def ads_server() -> grpc.aio.Server:
    """The gRPC server the ADS service (and the sidecars' other channels) run on."""
    return grpc.aio.server(options=list(SERVER_OPTIONS))


class AdsServicer(Generic[W]):
    def __init__(self, backend: AdsBackend[W], authenticator: Authenticator | None = None,
                 limits: CallerLimits | None = None, budget: ByteBudget | None = None) -> None:
        self.backend = backend
        self.authenticator = authenticator
        self.limits = limits or CallerLimits()
        self.budget = budget or ByteBudget()
        self.draining = False
        # open stream -> ends it with (status, message); and who opened it (Identity.key)
        self._enders: dict[str, Callable[[grpc.StatusCode, str], None]] = {}
        self._callers: dict[str, str] = {}

    async def drain(self, spread: float) -> int:
        """End every open ADS stream with UNAVAILABLE, each at a random moment within
        ``spread`` seconds, and every new one at once; returns how many were open.

        Called on shutdown once the server no longer accepts streams (GOAWAY sent,
        listener closed), so each sidecar's reconnection goes to another replica;
        the spread keeps a fleet from reconnecting all in the same instant. Envoy
        keeps answering DNS from its last configuration meanwhile.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        enders = list(self._enders.values())
        for end in enders:
            loop.call_later(random.uniform(0.0, spread) if spread > 0 else 0.0, end,
                            grpc.StatusCode.UNAVAILABLE,
                            "control-plane replica shutting down: reconnect")
        deadline = loop.time() + spread + 1.0
        while self._enders and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return len(enders)

    def end_callers(self, callers: set[str], why: str) -> int:
        """End the open streams opened by ``callers`` (``Identity.key``: a static token
        revoked or changed) with UNAUTHENTICATED; returns how many. Envoy reconnects with
        the credentials it has now, and is let in again only if they are still good."""
        ended = 0
        for conn_id, caller in list(self._callers.items()):
            end = self._enders.get(conn_id)
            if caller in callers and end is not None:
                end(grpc.StatusCode.UNAUTHENTICATED, why)
                ended += 1
        return ended

    @staticmethod
    async def _identify(authenticator: Authenticator, requests: AsyncIterator[Any],
                        context: grpc.aio.ServicerContext) -> Identity:
        """Who the stream speaks for. A refused stream ends before any resource:
        UNAUTHENTICATED for bad credentials, UNAVAILABLE when they cannot be checked
        now (Envoy retries); logged with the node of its first request."""
        try:
            return await authenticator.identify(tuple(context.invocation_metadata() or ()))
        except (Unauthenticated, AuthUnavailable) as exc:
            code = (grpc.StatusCode.UNAVAILABLE if isinstance(exc, AuthUnavailable)
                    else grpc.StatusCode.UNAUTHENTICATED)
            node = await _first_node_id(requests)
            log.warning("stream from %s, node %s: %s: %s", context.peer(), node or "(none)",
                        code.name, exc, extra={"node": node})
            await context.abort(code, str(exc))
            raise  # abort() raises; never reached

    async def _serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                     *, delta: bool) -> AsyncIterator[Outgoing | DeltaOutgoing]:
        """One ADS stream: the same loop for both variants; the stream object decides."""
        backend = self.backend
        identity = None
        if self.authenticator is not None:
            identity = await self._identify(self.authenticator, requests, context)
        wake = Wake()
        conn = backend.open(context.peer(), delta=delta, notify=wake.set)
        attached = False
        held: str | None = None  # the node id this stream holds a place for (limits)
        ending: list[tuple[grpc.StatusCode, str]] = []  # drain(), end_callers(): why

        def end(code: grpc.StatusCode, why: str) -> None:
            ending.append((code, why))
            wake.set()

        self._enders[conn.conn_id] = end
        if identity is not None:
            self._callers[conn.conn_id] = identity.key
        if self.draining:
            end(grpc.StatusCode.UNAVAILABLE, "control-plane replica shutting down: reconnect")

        async def read() -> ProtocolError | None:
            nonlocal attached, held
            try:
                async for request in requests:
                    try:
                        events = conn.stream.receive(request)
                    except ProtocolError as exc:
                        return exc
                    if not attached:
                        if identity is not None:
                            assert conn.stream.node is not None
                            node_id = conn.stream.node.id
                            denied = (authorize(identity, workload_from_node(conn.stream.node))
                                      or node_refusal(identity, node_id))
                            if denied:
                                return ProtocolError("PERMISSION_DENIED", denied)
                            full = self.limits.admit("ads", identity, node_id)
                            if full:
                                return ProtocolError("RESOURCE_EXHAUSTED", full)
                            held = node_id
                            if identity.bind_labels:  # the view is chosen with the bound labels
                                conn.stream.node.metadata["LABELS"] = dict(identity.labels)
                            backend.attach(conn, tenant=identity.tenant, caller=identity.key)
                        else:
                            backend.attach(conn)
                        attached = True
                    for event in events:
                        backend.record(conn, event)
                    wake.set()
                return None
            finally:
                wake.set()  # the send loop sees the reader end (done, refused or failed)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                await wake.wait()
                if ending:
                    code, why = ending[0]
                    log.info("stream %s from %s: ended: %s", conn.conn_id, conn.peer, why)
                    await context.abort(code, why)
                for out in conn.stream.responses(backend.snapshot_for(conn)):
                    size = out.size
                    await self.budget.acquire(size)
                    try:
                        backend.record_sent(conn, out)
                        yield out  # serialised by gRPC (_payload); back here once sent
                    finally:
                        self.budget.release(size)
                if reader.done():
                    error = reader.result()
                    if error is not None:
                        node_id = conn.stream.node.id if conn.stream.node else ""
                        log.warning("stream %s from %s, node %s: %s: %s", conn.conn_id,
                                    conn.peer, node_id or "(none)", error.code, error,
                                    extra={"node": node_id})
                        await context.abort(grpc.StatusCode[error.code], str(error))
                    return
        finally:
            reader.cancel()
            if identity is not None and held is not None:
                self.limits.release("ads", identity, held)
            self._enders.pop(conn.conn_id, None)
            self._callers.pop(conn.conn_id, None)
            backend.close(conn)

    # The handlers gRPC calls: ``_serve`` itself, not a generator around it (one frame
    # and one hop per response less for each stream).
    stream_aggregated_resources = functools.partialmethod(_serve, delta=False)
    delta_aggregated_resources = functools.partialmethod(_serve, delta=True)


class Wake:
    """A stream's wake-up: set by its reader (a request, or the reader's end), by a new
    snapshot of its view and by an ending; its send loop, the one waiter, waits for it
    and takes it. What an idle stream holds while it waits is one future: no
    ``asyncio.Event`` (a deque of waiters), no waiter task and no ``asyncio.wait`` per
    turn (RESULTS.md section 23: ~3 KB and a task per connected stream)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Return once set (at once if it is), and clear it."""
        if not self._set:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        self._set = False


async def _first_node_id(requests: AsyncIterator[Any], timeout: float = 1.0) -> str:
    """The node id in a refused stream's first request (Envoy sends it at once), for the
    log only: nothing in it is trusted."""
    try:
        first = await asyncio.wait_for(anext(requests), timeout)
    except Exception:  # noqa: BLE001 - no first request: the log names the peer only
        return ""
    node = getattr(first, "node", None)
    return str(node.id) if node is not None else ""


def _payload(out: Outgoing | DeltaOutgoing) -> bytes:
    """The bytes of a response, made as gRPC sends it and dropped once it has."""
    return out.payload


def add_ads_service(server: grpc.aio.Server, backend: AdsBackend[W],
                    authenticator: Authenticator | None = None,
                    limits: CallerLimits | None = None,
                    budget: ByteBudget | None = None) -> AdsServicer[W]:
    servicer = AdsServicer(backend, authenticator, limits, budget)
    handler = grpc.method_handlers_generic_handler(ADS_SERVICE, {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.stream_aggregated_resources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=_payload,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.delta_aggregated_resources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=_payload,
        ),
    })
    server.add_generic_rpc_handlers([handler])
    return servicer
