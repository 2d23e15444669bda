"""The grpcio ADS driver over a real socket, with a scripted client (no Envoy)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane._kit.localrun import ControlPlane, http_text, wait_for
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE
from e2e.harness.ads_client import Client


@pytest.fixture
def client_factory(manifests: Path, start_control_plane: Callable[..., ControlPlane]
                   ) -> Iterator[tuple[ControlPlane, Callable[[], Client]]]:
    cp = start_control_plane(manifests)
    clients: list[Client] = []

    def make() -> Client:
        c = Client(cp.xds_address)
        clients.append(c)
        return c

    yield cp, make
    for c in clients:
        c.close()


def test_node_without_metadata_gets_default_view(
        client_factory: tuple[ControlPlane, Callable[[], Client]]) -> None:
    cp, make = client_factory
    c = make()
    c.send(type_url=LISTENER_TYPE, node=base_pb2.Node(id="bare"))
    resp = c.recv()
    assert resp.type_url == LISTENER_TYPE
    names = sorted(listener_pb2.Listener.FromString(r.value).name for r in resp.resources)
    assert names == ["dns:127.0.0.1:15053", "stats:0.0.0.0:15090"]  # the defaults
    (node,) = wait_for(lambda: cp.get("/api/v1/nodes"), timeout=5, what="node listed")
    assert node["tenant"] == "_default"
    assert any("NAMESPACE" in w for w in node["warnings"])
    assert cp.get("/healthz") == {"status": "ok"}


def test_nack_is_recorded_and_not_resent(
        client_factory: tuple[ControlPlane, Callable[[], Client]]) -> None:
    cp, make = client_factory
    c = make()
    node = base_pb2.Node(id="sleep.acme")
    node.metadata.update({"NAMESPACE": "acme", "LABELS": {"app": "sleep"}})
    c.send(type_url=CLUSTER_TYPE, node=node)
    cds = c.recv()
    c.send(type_url=LISTENER_TYPE)
    lds = c.recv()
    c.send(type_url=CLUSTER_TYPE, version_info=cds.version_info, response_nonce=cds.nonce)
    nack = discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, response_nonce=lds.nonce)
    nack.error_detail.message = "forced rejection"
    c.requests.put(nack)
    (n,) = wait_for(lambda: [x for x in cp.get("/api/v1/nodes")
                             if x["types"].get("lds", {}).get("nacks")], timeout=5,
                    what="NACK recorded")
    assert n["types"]["lds"]["last_nack_error"] == "forced rejection"
    assert n["types"]["lds"]["nacked_version"] == lds.version_info
    # A re-request does not bring the rejected version back; a real change does.
    c.send(type_url=LISTENER_TYPE, response_nonce=lds.nonce)
    (cp.source / "z.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: z, namespace: acme}\n"
        "spec: {clusterIP: 10.9.9.9}\n")
    nxt = c.recv()
    assert nxt.type_url == LISTENER_TYPE and nxt.version_info != lds.version_info
    assert b"10.9.9.9" in nxt.resources[0].value
    metrics = [line for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith("dnscp_nacks_total")]
    assert len(metrics) == 1 and 'type="lds"' in metrics[0] and "acme@" in metrics[0]
    assert metrics[0].endswith(" 1.0")


def test_empty_type_url_is_invalid_argument(
        client_factory: tuple[ControlPlane, Callable[[], Client]]) -> None:
    _, make = client_factory
    c = make()
    c.send(type_url="", node=base_pb2.Node(id="x"))
    with pytest.raises(grpc.RpcError) as info:
        c.recv()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
