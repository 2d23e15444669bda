"""The Kubernetes source against a fake API server speaking the real wire protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane._kit.localrun import wait_for
from controlplane.core.inventory import Inventory, Key
from controlplane.sources.kubernetes import KubernetesSource
from controlplane.store.store import Store
from tests.factories import policy_manifest
from tests.fakes.kube import CORE, ISTIO, OURS, FakeKube, Resource


class RecordingStore(Store):
    """A store that remembers every deletion, to prove relists never flap."""

    def __init__(self) -> None:
        super().__init__()
        self.deleted: list[Key] = []

    def delete_object(self, origin: str, key: Key) -> bool:
        changed = super().delete_object(origin, key)
        if changed:
            self.deleted.append(key)
        return changed


def ns(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def svc(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterIP": ip}}


def slice_(name: str, namespace: str, service: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": [{"addresses": [ip]}]}


def pod(name: str, namespace: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace,
                                                           "labels": {"app": "x"}},
            "status": {"podIP": ip}}


def entry(name: str, namespace: str, host: str, api: str = "networking.istio.io/v1"
          ) -> dict[str, Any]:
    return {"apiVersion": api, "kind": "ServiceEntry",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"hosts": [host], "addresses": ["192.0.2.10"], "resolution": "STATIC"}}


class Harness:
    def __init__(self, kube: FakeKube, tmp: Path, **kw: Any) -> None:
        self.kube = kube
        self.store = RecordingStore()
        self.changes = threading.Event()
        self.api = kubernetes.config.new_client_from_config(str(kube.kubeconfig(tmp)))
        self.source = KubernetesSource(self.api, self.store, self.changes.set, watch_timeout=5,
                                       backoff_base=0.05, **kw)

    def inv(self) -> Inventory:
        return self.store.inventory()

    def until(self, cond: Any, what: str, timeout: float = 15) -> Any:
        return wait_for(lambda: cond(self.inv()), timeout=timeout, what=what)


@pytest.fixture
def kube_resources() -> list[Resource]:
    return CORE + OURS + ISTIO  # the source watches Istio's ServiceEntries when served


@pytest.fixture
def harness(kube: FakeKube, tmp_path: Path) -> Iterator[Harness]:
    h = Harness(kube, tmp_path)
    yield h
    h.source.stop()


def test_initial_list_and_every_kind(kube: FakeKube, harness: Harness) -> None:
    kube.apply(ns("acme", tenant="acme"))
    kube.apply(svc("web", "acme", "10.0.0.1"))
    kube.apply(slice_("web-1", "acme", "web", "10.1.0.1"))
    kube.apply(policy_manifest("acme"))
    kube.apply(entry("ext", "acme", "api.partner.com"))
    kube.apply(entry("own", "acme", "own.partner.com", "networking.example.com/v1alpha1"))
    harness.source.start()
    wait_for(lambda: harness.source.ready, timeout=15, what="initial lists")
    inv = harness.inv()
    assert set(inv.namespaces) == {"acme"}
    assert inv.services[("acme", "web")].cluster_ips == ("10.0.0.1",)
    assert inv.endpoint_slices[("acme", "web-1")].service_name == "web"
    assert inv.policies["acme"].generation == 1
    assert {(k, se.hosts[0], se.api_version) for k, se in inv.service_entries.items()} == {
        (("acme", "ext"), "api.partner.com", "networking.istio.io/v1"),
        (("acme", "own"), "own.partner.com", "networking.example.com/v1alpha1")}
    assert harness.source.notes == []


@pytest.mark.parametrize(("make", "kind", "key", "field"), [
    (lambda v: svc("web", "acme", f"10.0.0.{v}"), "Service", ("acme", "web"),
     lambda inv: inv.services[("acme", "web")].cluster_ips[0]),
    (lambda v: ns("acme", tenant="acme", rev=str(v)), "Namespace", "acme",
     lambda inv: dict(inv.namespaces["acme"].labels)["rev"]),
    (lambda v: slice_("web-1", "acme", "web", f"10.1.0.{v}"), "EndpointSlice", ("acme", "web-1"),
     lambda inv: inv.endpoint_slices[("acme", "web-1")].endpoints[0].addresses[0]),
    (lambda v: policy_manifest("acme", action="DENY" if v == 1 else "ALLOW"), "DnsPolicy", "acme",
     lambda inv: inv.policies["acme"].default_action.value),
    (lambda v: entry("ext", "acme", f"h{v}.partner.com"), "ServiceEntry@networking.istio.io/v1",
     ("acme", "ext"),
     lambda inv: inv.service_entries[("acme", "ext")].hosts[0]),
    (lambda v: entry("own", "acme", f"h{v}.own.com", "networking.example.com/v1alpha1"),
     "ServiceEntry@networking.example.com/v1alpha1", ("acme", "own"),
     lambda inv: inv.service_entries[("acme", "own")].hosts[0]),
    (lambda v: pod("p", "acme", f"10.2.0.{v}"), "Pod", ("acme", "p"),
     lambda inv: inv.pods[("acme", "p")].ips[0]),
])
def test_add_modify_delete(kube: FakeKube, tmp_path: Path, make: Any, kind: str, key: Any,
                           field: Any) -> None:
    harness = Harness(kube, tmp_path, watch_pods=True)
    harness.source.start()
    wait_for(lambda: harness.source.ready, timeout=15, what="initial lists")
    kube.apply(make(1))
    first = harness.until(lambda inv: _get(inv, kind, key) and field(inv), f"{kind} added")
    kube.apply(make(2))
    second = harness.until(lambda inv: field(inv) != first and field(inv), f"{kind} modified")
    assert second != first
    name = key if isinstance(key, str) else key[1]
    namespace = "" if isinstance(key, str) else key[0]
    kind_name, _, api_version = kind.partition("@")
    kube.delete(kind_name, name, namespace, api_version or None)
    harness.until(lambda inv: _get(inv, kind, key) is None, f"{kind} deleted")
    harness.source.stop()


def _get(inv: Inventory, kind: str, key: Any) -> Any:
    table: dict[Any, Any] = {"Service": inv.services, "Namespace": inv.namespaces,
                             "EndpointSlice": inv.endpoint_slices, "Pod": inv.pods,
                             "DnsPolicy": inv.policies,
                             "ServiceEntry": inv.service_entries}[kind.partition("@")[0]]
    return table.get(key)


def test_invalid_object_is_reported_and_last_valid_kept(kube: FakeKube, harness: Harness) -> None:
    harness.source.start()
    kube.apply(policy_manifest("acme", action="DENY"))
    harness.until(lambda inv: "acme" in inv.policies, "policy")
    kube.apply(policy_manifest("acme", action="BLOCK"))
    err = harness.until(lambda inv: [e for e in inv.errors if e.kind == "DnsPolicy"], "error")[0]
    assert err.name == "acme" and "BLOCK" in err.reason and err.generation == 2
    assert harness.inv().policies["acme"].default_action.value == "DENY"


def test_410_relist_applies_only_the_difference(kube: FakeKube, harness: Harness) -> None:
    for i in range(5):
        kube.apply(svc(f"s{i}", "acme", f"10.0.0.{i + 1}"))
    harness.source.start()
    harness.until(lambda inv: len(inv.services) == 5, "5 services")
    kube.down()  # the watch drops; meanwhile the cluster moves on and compacts
    kube.apply(svc("s0", "acme", "10.0.9.9"))
    kube.delete("Service", "s4", "acme")
    kube.apply(svc("s5", "acme", "10.0.0.6"))
    kube.compact()
    kube.up()
    harness.until(lambda inv: set(inv.services) == {("acme", f"s{i}") for i in (0, 1, 2, 3, 5)}
                  and inv.services[("acme", "s0")].cluster_ips == ("10.0.9.9",), "converged")
    watcher = next(w for w in harness.source.watchers if w.kind.plural == "services")
    assert watcher.state.relists >= 2  # the initial list and the one after 410
    # Only s4 was ever deleted: nothing vanished and came back.
    assert harness.store.deleted == [("Service", "acme", "s4")]


def test_outage_keeps_serving_and_recovers(kube: FakeKube, harness: Harness) -> None:
    kube.apply(svc("web", "acme", "10.0.0.1"))
    harness.source.start()
    wait_for(lambda: harness.source.ready, timeout=15, what="ready")
    kube.down()
    watcher = next(w for w in harness.source.watchers if w.kind.plural == "services")
    wait_for(lambda: "503" in watcher.state.problem, timeout=15, what="the outage noticed")
    assert ("acme", "web") in harness.inv().services  # the last state stays
    assert harness.source.ready  # initial lists happened; readiness is about the first load
    kube.up()
    kube.apply(svc("api", "acme", "10.0.0.2"))
    harness.until(lambda inv: ("acme", "api") in inv.services, "recovery")
    wait_for(lambda: watcher.state.problem == "", timeout=15, what="problem cleared")
    assert harness.store.deleted == []


def test_a_stuck_kind_does_not_hold_the_others(kube: FakeKube, harness: Harness) -> None:
    release = kube.stall("endpointslices")
    harness.source.start()
    kube.apply(svc("web", "acme", "10.0.0.1"))
    harness.until(lambda inv: ("acme", "web") in inv.services, "services despite stuck slices")
    assert not harness.source.ready
    assert "endpointslices" in harness.source.not_ready_reason()
    release.set()
    wait_for(lambda: harness.source.ready, timeout=15, what="ready after release")


def test_forbidden_optional_kind_is_skipped(kube: FakeKube, tmp_path: Path) -> None:
    kube.forbid("pods")
    h = Harness(kube, tmp_path, watch_pods=True)
    try:
        h.source.start()
        wait_for(lambda: h.source.ready, timeout=15, what="ready without pods")
        pods = h.source.status()["kinds"]["kubernetes:pods.core"]  # type: ignore[index]
        assert "forbidden by RBAC" in pods["disabled"]
    finally:
        h.source.stop()


def test_missing_istio_is_noted_not_fatal(tmp_path: Path) -> None:
    k = FakeKube(resources=CORE + OURS).start()
    h = Harness(k, tmp_path)
    try:
        h.source.start()
        wait_for(lambda: h.source.ready, timeout=15, what="ready")
        assert any("networking.istio.io" in n for n in h.source.notes)
        assert all(w.kind.group != "networking.istio.io" for w in h.source.watchers)
    finally:
        h.source.stop()
        k.stop()
