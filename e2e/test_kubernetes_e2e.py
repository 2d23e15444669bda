"""Kubernetes mode end to end: fake API server -> control plane process -> real Envoy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controlplane._kit.localrun import ControlPlane, Envoy, wait_for
from e2e.harness.dnsquery import query
from e2e.harness.examples import demo_objects
from tests.fakes.kube import FakeKube


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    return demo_objects()


@pytest.fixture
def cluster_cp(kube: FakeKube, tmp_path: Path, manifests: Path,
               processes: list[object]) -> ControlPlane:
    cp = ControlPlane(Path("kubernetes"), tmp_path, extra_args=[
        "--kubeconfig", str(kube.kubeconfig(tmp_path)), "--debounce", "0.02",
        "--status-interval", "0.2", "--watch-timeout", "5"])
    processes.append(cp)
    return cp.start()


def conditions(kube: FakeKube, name: str) -> dict[str, dict[str, Any]]:
    obj = kube.get("DnsPolicy", name) or {}
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions", [])}


def test_envoy_gets_its_table_from_the_cluster(
        kube: FakeKube, cluster_cp: ControlPlane,
        start_envoy: Callable[..., Envoy]) -> None:
    acme = start_envoy(cluster_cp, "sleep.acme", "acme")
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    assert query(acme.dns_port, "httpbin.foo.com") == ("NXDOMAIN", [])
    # A Service added through the API appears in Envoy's answers.
    started = time.monotonic()
    kube.apply({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "added", "namespace": "acme"},
                "spec": {"clusterIP": "10.44.0.1", "ports": [{"name": "http", "port": 80}]}})
    wait_for(lambda: query(acme.dns_port, "added.acme.svc.cluster.local", timeout=0.3)
             == ("NOERROR", ["10.44.0.1"]), timeout=20, interval=0.01, what="the new Service")
    print(f"\nAPI-to-answer latency: {(time.monotonic() - started) * 1000:.0f} ms")
    # Status: accepted and ready once Envoy runs the current configuration.
    wait_for(lambda: conditions(kube, "acme").get("Ready", {}).get("status") == "True"
             and conditions(kube, "acme")["Ready"]["reason"] == "Current", timeout=20,
             what="acme Ready=True")
    c = conditions(kube, "acme")
    assert c["Accepted"]["status"] == "True" and c["Conflicted"]["status"] == "False"
    status = (kube.get("DnsPolicy", "acme") or {})["status"]
    assert status["selectedNamespaces"] == 1 and status["connectedProxies"] == 1
    assert status["observedGeneration"] == 1
    ready = cluster_cp.get("/readyz")
    assert ready["ready"] is True and ready["source"]["kind"] == "kubernetes"


def test_status_written_once_per_change_and_invalid_policy_keeps_serving(
        kube: FakeKube, cluster_cp: ControlPlane,
        start_envoy: Callable[..., Envoy]) -> None:
    acme = start_envoy(cluster_cp, "sleep.acme", "acme")
    wait_for(lambda: conditions(kube, "acme").get("Ready", {}).get("reason") == "Current",
             timeout=20, what="acme settled")
    settled = len([n for n, _ in kube.status_writes if n == "acme"])
    # Status writes cause watch events; they must not cause more writes.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # a bounded observation window, not a wait
        assert len([n for n, _ in kube.status_writes if n == "acme"]) == settled
        time.sleep(0.1)
    policy = kube.get("DnsPolicy", "acme")
    assert policy is not None
    policy["spec"]["policy"]["defaultAction"] = "BLOCK"
    kube.apply(policy)
    wait_for(lambda: conditions(kube, "acme").get("Accepted", {}).get("status") == "False",
             timeout=20, what="Accepted=False")
    c = conditions(kube, "acme")["Accepted"]
    assert "BLOCK" in c["message"] and c["reason"] == "Invalid"
    assert c["observedGeneration"] == 2
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    writes = [s for n, s in kube.status_writes if n == "acme"]
    assert len(writes) == settled + 1, writes[settled:]
    # foo's status is untouched by acme's trouble.
    assert conditions(kube, "foo")["Accepted"]["status"] == "True"


def test_unresolvable_server_is_not_accepted(kube: FakeKube, cluster_cp: ControlPlane,
                                             start_envoy: Callable[..., Envoy]) -> None:
    acme = start_envoy(cluster_cp, "sleep.acme", "acme")
    policy = kube.get("DnsPolicy", "acme")
    assert policy is not None
    policy["spec"]["policy"]["defaultAction"] = "ALLOW"
    policy["spec"]["server"] = {"address": "nothing.dns.svc"}
    kube.apply(policy)
    wait_for(lambda: conditions(kube, "acme").get("Accepted", {}).get("reason")
             == "UnresolvableServer", timeout=20, what="UnresolvableServer")
    assert "does not exist" in conditions(kube, "acme")["Accepted"]["message"]
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])


def test_api_outage_keeps_envoy_answering(kube: FakeKube, cluster_cp: ControlPlane,
                                          start_envoy: Callable[..., Envoy]) -> None:
    acme = start_envoy(cluster_cp, "sleep.acme", "acme")
    kube.down()
    wait_for(lambda: cluster_cp.get("/readyz").get("degraded"), timeout=20,
             what="/readyz to report the outage")
    assert "503" in cluster_cp.get("/readyz")["degraded"]
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    kube.up()
    kube.apply({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "after", "namespace": "acme"},
                "spec": {"clusterIP": "10.44.0.9"}})
    wait_for(lambda: query(acme.dns_port, "after.acme.svc.cluster.local", timeout=0.3)
             == ("NOERROR", ["10.44.0.9"]), timeout=30, what="recovery")
    assert acme.stats()["listener_manager.lds.update_rejected"] == 0


def test_service_entry_vip_in_status(kube: FakeKube, tmp_path: Path, manifests: Path,
                                     processes: list[object],
                                     start_envoy: Callable[..., Envoy]) -> None:
    kube.apply({"apiVersion": "networking.example.com/v1alpha1", "kind": "ServiceEntry",
                "metadata": {"name": "partner", "namespace": "acme"},
                "spec": {"hosts": ["api.partner.acme.com"], "resolution": "NONE"}})
    cp = ControlPlane(Path("kubernetes"), tmp_path, extra_args=[
        "--kubeconfig", str(kube.kubeconfig(tmp_path)), "--debounce", "0.02",
        "--status-interval", "0.2", "--auto-allocate-vips"])
    processes.append(cp)
    cp.start()
    acme = start_envoy(cp, "sleep.acme", "acme")

    def vip() -> str | None:
        obj = kube.get("ServiceEntry", "partner", "acme") or {}
        addresses = (obj.get("status") or {}).get("addresses") or []
        return addresses[0]["value"] if addresses else None

    allocated = wait_for(vip, timeout=20, what="the VIP in the ServiceEntry's status")
    assert allocated.startswith("240.240.")
    assert cp.get("/api/v1/vips")["allocations"] == [
        {"namespace": "acme", "serviceentry": "partner", "host": "api.partner.acme.com",
         "vip": allocated}]
    assert query(acme.dns_port, "api.partner.acme.com") == ("NOERROR", [allocated])
