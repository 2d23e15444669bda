"""The grpcio (asyncio) driver around ``SotwStream``: a thin loop, no protocol logic.

Responses leave as bytes (``response_serializer`` is the identity): the
snapshot already holds the serialised body, and the stream only appends
its nonce.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from controlplane.core.errors import AuthUnavailable, ProtocolError, Unauthenticated
from controlplane.core.workload import workload_from_node
from controlplane.hub.hub import Hub
from controlplane.identity.auth import (
    Authenticator,
    Identity,
    authorize,
)
from controlplane.telemetry.querylog import QueryLog, QueryRecord

log = logging.getLogger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class AdsServicer:
    def __init__(self, hub: Hub, authenticator: Authenticator | None = None) -> None:
        self.hub = hub
        self.authenticator = authenticator
        self.draining = False
        self._enders: dict[str, Callable[[], None]] = {}  # open stream -> ends it (drain)

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
            loop.call_later(random.uniform(0.0, spread) if spread > 0 else 0.0, end)
        deadline = loop.time() + spread + 1.0
        while self._enders and loop.time() < deadline:
            await asyncio.sleep(0.02)
        return len(enders)

    async def stream_aggregated_resources(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for payload in self._serve(requests, context, delta=False):
            yield payload

    async def delta_aggregated_resources(
        self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for payload in self._serve(requests, context, delta=True):
            yield payload

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
                     *, delta: bool) -> AsyncIterator[bytes]:
        """One ADS stream: the same loop for both variants; the stream object decides."""
        hub = self.hub
        identity = None
        if self.authenticator is not None:
            identity = await self._identify(self.authenticator, requests, context)
        conn = hub.open(peer=context.peer(), delta=delta)
        wake = asyncio.Event()
        conn.notify = wake.set
        ending = asyncio.Event()  # set by drain(): this replica is shutting down

        def end() -> None:
            ending.set()
            wake.set()

        self._enders[conn.conn_id] = end
        if self.draining:
            end()

        async def read() -> ProtocolError | None:
            async for request in requests:
                try:
                    events = conn.stream.receive(request)
                except ProtocolError as exc:
                    return exc
                if conn.workload is None:
                    if identity is not None:
                        assert conn.stream.node is not None
                        denied = authorize(identity, workload_from_node(conn.stream.node))
                        if denied:
                            return ProtocolError("PERMISSION_DENIED", denied)
                        if identity.bind_labels:  # the view is chosen with the pod's labels
                            conn.stream.node.metadata["LABELS"] = dict(identity.labels)
                    hub.attach(conn)
                for event in events:
                    hub.record(conn, event)
                wake.set()
            return None

        reader = asyncio.ensure_future(read())
        try:
            while True:
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                wake.clear()
                if ending.is_set():
                    log.info("stream %s from %s: ended, this replica is shutting down",
                             conn.conn_id, conn.peer)
                    await context.abort(grpc.StatusCode.UNAVAILABLE,
                                        "control-plane replica shutting down: reconnect")
                for out in conn.stream.responses(hub.snapshot_for(conn)):
                    hub.record_sent(conn, out)
                    yield out.payload
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
            self._enders.pop(conn.conn_id, None)
            hub.close(conn)


async def _first_node_id(requests: AsyncIterator[Any], timeout: float = 1.0) -> str:
    """The node id in a refused stream's first request (Envoy sends it at once), for the
    log only: nothing in it is trusted."""
    try:
        first = await asyncio.wait_for(anext(requests), timeout)
    except Exception:  # noqa: BLE001 - no first request: the log names the peer only
        return ""
    node = getattr(first, "node", None)
    return str(node.id) if node is not None else ""


LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
# Generated (upb) classes without type stubs.
ExportRequest: Any = logs_service_pb2.ExportLogsServiceRequest  # type: ignore[attr-defined]
ExportResponse: Any = logs_service_pb2.ExportLogsServiceResponse  # type: ignore[attr-defined]


def _field(message: Any, name: str, old_name: str) -> Any:
    """OTLP renamed these fields (same numbers); the bundled classes may have either name."""
    descriptor = message.DESCRIPTOR.fields_by_name
    return getattr(message, name if name in descriptor else old_name)


def add_query_log_service(server: grpc.aio.Server, query_log: QueryLog,
                          node_tenant: Callable[[str], str | None] | None = None,
                          on_record: Callable[[QueryRecord], None] | None = None) -> None:
    """OpenTelemetry logs from the sidecars' DNS filters (per-query records).

    With ``node_tenant``, a record counts only when it comes from a connected
    node (an authenticated ADS stream when tokens are on) of the tenant it
    names, so a workload cannot fill another tenant's records. ``on_record`` is
    told every WARN and deny record kept (per-sidecar counts, dns_traffic.py).
    """

    async def export(request: Any, context: grpc.aio.ServicerContext) -> Any:
        for resource_logs in request.resource_logs:
            resource = {kv.key: kv.value.string_value
                        for kv in resource_logs.resource.attributes}
            node = resource.get("node_name", "")
            owner = node_tenant(node) if node_tenant else None
            for scope in _field(resource_logs, "scope_logs", "instrumentation_library_logs"):
                for record in _field(scope, "log_records", "logs"):
                    attrs = {kv.key: kv.value.string_value for kv in record.attributes}
                    tenant = attrs.get("tenant", "")
                    if node_tenant is not None and owner != tenant:
                        query_log.reject(tenant, node)
                        continue
                    kept = query_log.ingest(tenant=tenant, node=node,
                                            body=record.body.string_value)
                    if kept is not None and on_record is not None:
                        on_record(kept)
        return ExportResponse()

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(LOGS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=ExportRequest.FromString,
            response_serializer=ExportResponse.SerializeToString,
        )})])


def add_ads_service(server: grpc.aio.Server, hub: Hub,
                    authenticator: Authenticator | None = None) -> AdsServicer:
    servicer = AdsServicer(hub, authenticator)
    handler = grpc.method_handlers_generic_handler(ADS_SERVICE, {
        "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.stream_aggregated_resources,
            request_deserializer=discovery_pb2.DiscoveryRequest.FromString,
            response_serializer=lambda payload: payload,
        ),
        "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
            servicer.delta_aggregated_resources,
            request_deserializer=discovery_pb2.DeltaDiscoveryRequest.FromString,
            response_serializer=lambda payload: payload,
        ),
    })
    server.add_generic_rpc_handlers([handler])
    return servicer
