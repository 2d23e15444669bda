"""Faults with a real Envoy under a steady DNS load: nothing lost, nothing regressed."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, DnsLoad, Envoy, http_text, wait_for
from e2e.harness.dnsquery import query

ACME = {"httpbin.acme.com": "100.66.185.144", "httpbin.acme.svc.cluster.local": "100.66.185.144"}


def node(cp: ControlPlane, node_id: str) -> dict[str, object] | None:
    return next((n for n in cp.get("/api/v1/nodes") if n["node_id"] == node_id), None)


def lds(cp: ControlPlane, node_id: str) -> dict[str, object]:
    n = node(cp, node_id)
    assert n is not None
    return n["types"]["lds"]  # type: ignore[index,return-value]


def test_control_plane_killed_and_restarted(manifests: Path,
                                            start_control_plane: Callable[..., ControlPlane],
                                            start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    before = lds(cp, "sleep.acme")["acked_version"]
    load = DnsLoad(acme.dns_port, ACME, qps=300).start()
    wait_for(lambda: load.answered > 200, timeout=10, what="load running")
    assert cp.process is not None
    cp.process.kill()  # SIGKILL: no goodbye
    answered_at_kill = load.answered
    wait_for(lambda: load.answered > answered_at_kill + 300, timeout=20,
             what="Envoy answering while the control plane is down")
    started = time.monotonic()
    cp.start()
    wait_for(lambda: (node(cp, "sleep.acme") or {}).get("types", {}).get("lds", {}).get(
        "acked_version"), timeout=60, interval=0.05, what="Envoy to reconnect")
    reconnect = time.monotonic() - started
    answered_at_reconnect = load.answered
    wait_for(lambda: load.answered > answered_at_reconnect + 300, timeout=20,
             what="load after reconnect")
    load.stop()
    print(f"\ncontrol plane killed and restarted: {load.summary()}; reconnect (process start "
          f"to ACK) {reconnect:.2f}s")
    assert (load.lost, load.wrong) == (0, 0), load.wrong_samples
    assert lds(cp, "sleep.acme")["acked_version"] == before  # same content, same version
    stats = acme.stats()
    assert stats["listener_manager.lds.update_rejected"] == 0


def test_rejected_config_is_not_resent_and_others_are_unaffected(
        manifests: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests, "--fault-invalid-name", "bad.acme.svc.cluster.local")
    acme = start_envoy(cp, "sleep.acme", "acme")
    foo = start_envoy(cp, "sleep.foo", "foo")
    good = lds(cp, "sleep.acme")["acked_version"]
    foo_version = lds(cp, "sleep.foo")["acked_version"]
    load = DnsLoad(acme.dns_port, ACME, qps=300).start()
    (manifests / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad, namespace: acme}\n"
        "spec: {clusterIP: 10.66.6.6}\n")
    state = wait_for(lambda: (lambda s: s if s["nacks"] else None)(lds(cp, "sleep.acme")),
                     timeout=20, what="Envoy to NACK")
    assert "not-an-ip-address" in str(state["last_nack_error"])
    assert state["acked_version"] == good  # Envoy keeps the last good version
    pushes = _metric(cp, "dnscp_pushes_total", 'type="lds"', "acme@")
    nacks = _metric(cp, "dnscp_nacks_total", 'type="lds"', "acme@")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # a bounded observation window: nothing is resent
        assert _metric(cp, "dnscp_pushes_total", 'type="lds"', "acme@") == pushes
        time.sleep(0.2)
    load.stop()
    print(f"\nrejected config: {load.summary()}; acme pushes {pushes:.0f}, nacks {nacks:.0f}")
    assert nacks == 1 and (load.lost, load.wrong) == (0, 0)
    assert acme.stats()["listener_manager.lds.update_rejected"] == 1
    assert query(acme.dns_port, "bad.acme.svc.cluster.local")[0] == "NXDOMAIN"
    # foo never saw the bad name: untouched.
    assert lds(cp, "sleep.foo") == {**lds(cp, "sleep.foo"), "acked_version": foo_version,
                                    "nacks": 0}
    assert foo.stats()["listener_manager.lds.update_rejected"] == 0
    # New input fixes it: a new version goes out and is accepted.
    (manifests / "bad.yaml").unlink()
    wait_for(lambda: lds(cp, "sleep.acme")["acked_version"] == good, timeout=20,
             what="the fixed version")


def test_source_directory_removed_keeps_serving(manifests: Path,
                                                start_control_plane: Callable[..., ControlPlane],
                                                start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    version = lds(cp, "sleep.acme")["acked_version"]
    load = DnsLoad(acme.dns_port, ACME, qps=300).start()
    backup = manifests.parent / "backup"
    shutil.copytree(manifests, backup)
    shutil.rmtree(manifests)
    ready = wait_for(lambda: (lambda r: r if r.get("degraded") else None)(cp.get("/readyz")),
                     timeout=20, what="/readyz to say why")
    assert "does not exist" in ready["degraded"] and ready["ready"] is True
    answered = load.answered
    wait_for(lambda: load.answered > answered + 300, timeout=20, what="answers meanwhile")
    assert lds(cp, "sleep.acme")["acked_version"] == version
    shutil.copytree(backup, manifests)
    wait_for(lambda: not cp.get("/readyz").get("degraded"), timeout=30,
             what="recovery once the directory is back")
    load.stop()
    print(f"\nsource directory removed: {load.summary()}")
    assert (load.lost, load.wrong) == (0, 0)
    assert lds(cp, "sleep.acme")["acked_version"] == version


def _metric(cp: ControlPlane, name: str, *parts: str) -> float:
    total = 0.0
    for line in http_text(f"{cp.admin_url}/metrics").splitlines():
        if line.startswith(name + "{") and all(p in line for p in parts):
            total += float(line.rsplit(" ", 1)[1])
    return total
