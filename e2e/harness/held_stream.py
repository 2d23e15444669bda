"""One ADS stream held open on a thread, as a sidecar would hold it: what the attacker
tests open with a token and a node id of their choosing, and the status it ended with."""

from __future__ import annotations

import queue
import threading

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane.translate.types import LISTENER_TYPE


class HeldAdsStream:
    """A listener request on ``channel`` with ``token``; ``result()`` is OK once the first
    response came, else the status the server ended the stream with (``details``)."""

    def __init__(self, channel: grpc.Channel, *, token: str, node_id: str, namespace: str,
                 labels: dict[str, str]) -> None:
        self.channel = channel
        self.requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
        node = base_pb2.Node(id=node_id)
        node.metadata.update({"NAMESPACE": namespace, "LABELS": labels})
        self.requests.put(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
        self.stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(
            self.channel).StreamAggregatedResources(
            iter(self.requests.get, None), metadata=[("authorization", f"Bearer {token}")])
        self.code: grpc.StatusCode | None = None  # OK once the first response came
        self.details = ""
        self.done = threading.Event()
        # How the stream ended, also after responses came (None: still open).
        self.end_code: grpc.StatusCode | None = None
        self.end_details = ""
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for _ in self.stream:
                if self.code is None:
                    self.code = grpc.StatusCode.OK
                    self.done.set()
        except grpc.RpcError as exc:
            if self.code is None:
                self.code, self.details = exc.code(), str(exc.details())
            self.end_code, self.end_details = exc.code(), str(exc.details())
        finally:
            self.done.set()
            self.ended.set()

    def result(self, timeout: float = 10.0) -> grpc.StatusCode | None:
        self.done.wait(timeout)
        return self.code

    def close(self) -> None:
        self.requests.put(None)
        self.stream.cancel()
        self.channel.close()
