"""The grpcio (asyncio) driver around ``SotwStream``: a thin loop, no protocol logic.

Responses leave as bytes (``response_serializer`` is the identity): the
snapshot already holds the serialised body, and the stream only appends
its nonce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from controlplane.auth import TokenAuthenticator, authorize
from controlplane.hub import Hub
from controlplane.querylog import QueryLog
from controlplane.workload import workload_from_node
from controlplane.xds.protocol import ProtocolError

log = logging.getLogger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class AdsServicer:
    def __init__(self, hub: Hub, authenticator: TokenAuthenticator | None = None) -> None:
        self.hub = hub
        self.authenticator = authenticator

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

    async def _serve(self, requests: AsyncIterator[Any], context: grpc.aio.ServicerContext,
                     *, delta: bool) -> AsyncIterator[bytes]:
        """One ADS stream: the same loop for both variants; the stream object decides."""
        hub = self.hub
        identity = None
        if self.authenticator is not None:
            identity = self.authenticator.authenticate(context.invocation_metadata() or ())
            if identity is None:
                log.warning("stream from %s: no valid bearer token", context.peer())
                await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                    "a valid 'authorization: Bearer <token>' is required")
        conn = hub.open(peer=context.peer(), delta=delta)
        wake = asyncio.Event()
        conn.notify = wake.set

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
                for out in conn.stream.responses(hub.snapshot_for(conn)):
                    hub.record_sent(conn, out)
                    yield out.payload
                if reader.done():
                    error = reader.result()
                    if error is not None:
                        log.warning("stream %s from %s: %s", conn.conn_id, conn.peer, error)
                        await context.abort(grpc.StatusCode[error.code], str(error))
                    return
        finally:
            reader.cancel()
            hub.close(conn)


LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
# Generated (upb) classes without type stubs.
ExportRequest: Any = logs_service_pb2.ExportLogsServiceRequest  # type: ignore[attr-defined]
ExportResponse: Any = logs_service_pb2.ExportLogsServiceResponse  # type: ignore[attr-defined]


def _field(message: Any, name: str, old_name: str) -> Any:
    """OTLP renamed these fields (same numbers); the bundled classes may have either name."""
    descriptor = message.DESCRIPTOR.fields_by_name
    return getattr(message, name if name in descriptor else old_name)


def add_query_log_service(server: grpc.aio.Server, query_log: QueryLog,
                          node_tenant: Callable[[str], str | None] | None = None) -> None:
    """OpenTelemetry logs from the sidecars' DNS filters (per-query records).

    With ``node_tenant``, a record counts only when it comes from a connected
    node (an authenticated ADS stream when tokens are on) of the tenant it
    names, so a workload cannot fill another tenant's records.
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
                    query_log.ingest(tenant=tenant, node=node, body=record.body.string_value)
        return ExportResponse()

    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(LOGS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(
            export,
            request_deserializer=ExportRequest.FromString,
            response_serializer=ExportResponse.SerializeToString,
        )})])


def add_ads_service(server: grpc.aio.Server, hub: Hub,
                    authenticator: TokenAuthenticator | None = None) -> AdsServicer:
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
