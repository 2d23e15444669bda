"""Incremental xDS with a real Envoy (bootstrap --delta)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from e2e.harness.dnsquery import query

EXT = "dns.ext.acme.svc.cluster.local"  # the STRICT_DNS cluster of an ExternalName Service


def clusters(envoy: Envoy) -> set[str]:
    return {line.split("::", 1)[0] for line in http_text(f"{envoy.admin_url}/clusters")
            .splitlines() if "::" in line}


def test_delta_envoy_gets_changes_and_removals_made_while_away(
        manifests: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        processes: list[object]) -> None:
    ext = manifests / "ext.yaml"
    ext.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: ext, namespace: acme}\n"
                   "spec: {type: ExternalName, externalName: api.external.example}\n")
    cp = start_control_plane(manifests)
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path, delta=True)
    processes.append(envoy)
    envoy.start()
    assert query(envoy.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    (node,) = cp.get("/api/v1/nodes")
    assert node["protocol"] == "delta" and node["types"]["lds"]["acked_version"]
    wait_for(lambda: EXT in clusters(envoy), timeout=10, what="the ExternalName cluster")
    # A live change reaches Envoy.
    (manifests / "live.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: live, namespace: acme}\n"
        "spec: {clusterIP: 10.88.0.1}\n")
    wait_for(lambda: query(envoy.dns_port, "live.acme.svc.cluster.local", timeout=0.3)[1]
             == ["10.88.0.1"], timeout=20, what="the live change")
    # While the control plane is down, the ExternalName Service goes away.
    assert cp.process is not None
    cp.process.kill()
    ext.unlink()
    cp.start()
    wait_for(lambda: EXT not in clusters(envoy), timeout=30,
             what="Envoy to drop the cluster removed while it was away")
    assert query(envoy.dns_port, "live.acme.svc.cluster.local") == ("NOERROR", ["10.88.0.1"])
    stats = envoy.stats()
    assert stats["listener_manager.lds.update_rejected"] == 0
    assert stats["cluster_manager.cds.update_rejected"] == 0
    # Rule 20: no type waited out Envoy's initial_fetch_timeout, at start or on reconnect
    # (more in e2e/test_xds_startup_e2e.py).
    assert stats["cluster_manager.cds.init_fetch_timeout"] == 0
    assert stats["listener_manager.lds.init_fetch_timeout"] == 0
