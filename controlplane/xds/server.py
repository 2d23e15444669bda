"""The grpcio (asyncio) driver around ``SotwStream``: a thin loop, no protocol logic.

Responses leave as bytes (``response_serializer`` is the identity): the
snapshot already holds the serialised body, and the stream only appends
its nonce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.hub import Hub
from controlplane.xds.protocol import ProtocolError

log = logging.getLogger("controlplane.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


class AdsServicer:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def stream_aggregated_resources(
        self,
        requests: AsyncIterator[discovery_pb2.DiscoveryRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[bytes]:
        hub = self.hub
        conn = hub.open(peer=context.peer())
        wake = asyncio.Event()
        conn.notify = wake.set

        async def read() -> ProtocolError | None:
            async for request in requests:
                try:
                    events = conn.stream.receive(request)
                except ProtocolError as exc:
                    return exc
                if conn.workload is None:
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

    async def delta_aggregated_resources(
        self, requests: AsyncIterator[object], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "incremental (delta) ADS is not implemented; use state of the world")
        yield b""  # pragma: no cover - makes this an async generator


def add_ads_service(server: grpc.aio.Server, hub: Hub) -> AdsServicer:
    servicer = AdsServicer(hub)
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
