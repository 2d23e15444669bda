"""A scripted ADS client on a real gRPC channel: what the e2e tests speak instead of Envoy
when they need to choose each request."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import grpc
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2


class Client:
    """A scripted ADS client on a real gRPC channel."""

    def __init__(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(self.channel)
        self.responses: Iterator[discovery_pb2.DiscoveryResponse] = (
            stub.StreamAggregatedResources(iter(self.requests.get, None)))

    def send(self, **kw: object) -> None:
        self.requests.put(discovery_pb2.DiscoveryRequest(**kw))  # type: ignore[arg-type]

    def recv(self) -> discovery_pb2.DiscoveryResponse:
        return next(self.responses)

    def close(self) -> None:
        self.requests.put(None)
        self.channel.close()
