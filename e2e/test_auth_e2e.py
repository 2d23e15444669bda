"""ADS with tokens: a sidecar cannot obtain another tenant's view by lying in its metadata."""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane._kit.localrun import ControlPlane, Envoy, wait_for
from controlplane.translate.types import LISTENER_TYPE
from e2e.harness.dnsquery import query


@pytest.fixture
def secured(manifests: Path, tmp_path: Path,
            start_control_plane: Callable[..., ControlPlane]) -> ControlPlane:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "acme-sidecars", "token": "acme-token", "namespace": "acme"},
        {"name": "foo-sidecars", "token": "foo-token", "namespace": "foo"}]}))
    return start_control_plane(manifests, "--auth-tokens", str(tokens))


def ask(cp: ControlPlane, token: str | None, namespace: str) -> discovery_pb2.DiscoveryResponse:
    channel = grpc.insecure_channel(cp.xds_address)
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    node = base_pb2.Node(id=f"liar.{namespace}")
    node.metadata.update({"NAMESPACE": namespace, "LABELS": {"app": "sleep"}})
    requests.put(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
    metadata = [("authorization", f"Bearer {token}")] if token else []
    stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        iter(requests.get, None), metadata=metadata)
    try:
        return next(stream)
    finally:
        requests.put(None)
        channel.close()


def test_token_for_acme_cannot_get_foo(secured: ControlPlane) -> None:
    with pytest.raises(grpc.RpcError) as info:
        ask(secured, "acme-token", "foo")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "claims namespace 'foo'" in (info.value.details() or "")
    with pytest.raises(grpc.RpcError) as info:
        ask(secured, None, "acme")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        ask(secured, "made-up", "acme")
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(ask(secured, "acme-token", "acme").resources) == 2  # its own view: allowed
    # The denied streams never got a view; the allowed one is gone once the server has seen
    # its channel close (reading /api/v1/nodes at once raced with that).
    wait_for(lambda: secured.get("/api/v1/nodes") == [], timeout=5,
             what="no node listed after the streams ended")


def test_real_envoy_with_its_token(secured: ControlPlane, tmp_path: Path,
                                   processes: list[object]) -> None:
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=secured.xds_address, workdir=tmp_path, token="acme-token")
    processes.append(envoy)
    envoy.start()
    assert query(envoy.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    (node,) = secured.get("/api/v1/nodes")
    assert node["tenant"] == "acme"
