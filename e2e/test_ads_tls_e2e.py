"""ADS over TLS with the real Envoy: verified with a CA bundle, fails closed, rotation live.

The control plane runs as a process (``serve --xds-tls-dir``) with a CA and a
leaf made by ``write_server_files`` (the way the kubelet updates a Secret
volume: one ``..data`` symlink swap); the sidecars are real Envoys whose
bootstraps come from ``bootstrap_config(xds_ca=..., xds_server_name=...)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from controlplane.identity.certs import make_ca_and_server
from controlplane.identity.tlsfiles import write_server_files
from e2e.harness.dnsquery import query

NAME = "dns-controlplane.dns-system.svc"
NEXT = "xds-next.dns-system.svc"  # only in the rotated certificate


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "xds-tls"
    write_server_files(directory, [NAME])
    return directory


@pytest.fixture
def tls_control_plane(manifests: Path, tmp_path: Path, tls_dir: Path,
                      processes: list[object]) -> ControlPlane:
    cp = ControlPlane(manifests, tmp_path, extra_args=["--debounce", "0.02"],
                      xds_tls_dir=tls_dir)
    processes.append(cp)
    return cp.start()


@pytest.fixture
def sidecar(tmp_path: Path, processes: list[object]) -> Callable[..., Envoy]:
    def make(cp: ControlPlane, node_id: str, *, ca: str, server_name: str = NAME) -> Envoy:
        envoy = Envoy(node_id=node_id, namespace="acme", labels={"app": "sleep"},
                      xds_address=cp.xds_address, workdir=tmp_path, xds_ca=ca,
                      xds_server_name=server_name)
        processes.append(envoy)
        return envoy
    return make


def xds_stats(envoy: Envoy) -> dict[str, int]:
    return {k.removeprefix("cluster.xds_cluster."): v for k, v in envoy.stats().items()
            if k.startswith("cluster.xds_cluster.ssl.") or k.startswith(
                "cluster.xds_cluster.upstream_cx_total")}


def test_envoy_connects_over_tls_with_the_bundle(tls_control_plane: ControlPlane,
                                                 tls_dir: Path,
                                                 sidecar: Callable[..., Envoy]) -> None:
    envoy = sidecar(tls_control_plane, "sleep.acme", ca=str(tls_dir / "ca.crt")).start()
    assert query(envoy.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    stats = xds_stats(envoy)
    assert stats["ssl.handshake"] >= 1
    assert stats.get("ssl.fail_verify_error", 0) == 0 and stats.get("ssl.fail_verify_san", 0) == 0
    assert any(k.startswith("ssl.versions.TLSv1.") and v for k, v in stats.items()), stats
    (node,) = tls_control_plane.get("/api/v1/nodes")
    assert node["tenant"] == "acme"
    log = tls_control_plane.process.log() if tls_control_plane.process else ""
    assert "ADS over TLS" in log and "PLAINTEXT" not in log


@pytest.mark.parametrize(("case", "stat"), [
    ("wrong CA", "ssl.fail_verify_error"),  # a certificate of another CA
    ("wrong name", "ssl.fail_verify_san"),  # the right CA, a name the server does not have
    ("plaintext", None),  # a bootstrap without TLS against a TLS server
])
def test_envoy_fails_closed(case: str, stat: str | None, tls_control_plane: ControlPlane,
                            tls_dir: Path, sidecar: Callable[..., Envoy],
                            tmp_path: Path) -> None:
    wrong_ca = tmp_path / "wrong-ca.crt"
    wrong_ca.write_bytes(make_ca_and_server(NAME)[0])
    ca, name = {"wrong CA": (str(wrong_ca), NAME),
                "wrong name": (str(tls_dir / "ca.crt"), "elsewhere.dns-system.svc"),
                "plaintext": ("", "")}[case]
    envoy = sidecar(tls_control_plane, "sleep.acme", ca=ca, server_name=name)
    envoy.start(wait_listener=False)
    if stat is not None:
        wait_for(lambda: xds_stats(envoy).get(stat, 0) >= 2, timeout=20,
                 what=f"{stat} (repeated: Envoy keeps retrying)")
    else:
        wait_for(lambda: xds_stats(envoy).get("upstream_cx_total", 0) >= 2, timeout=20,
                 what="plaintext connection attempts")
    time.sleep(1.0)
    assert not envoy.listener_active()  # no listener, no DNS: closed
    assert tls_control_plane.get("/api/v1/nodes") == []  # no stream was ever accepted
    print(f"\n{case}: {xds_stats(envoy)}")


def test_rotated_certificate_reaches_new_connections_without_restarts(
        tls_control_plane: ControlPlane, tls_dir: Path, manifests: Path,
        sidecar: Callable[..., Envoy]) -> None:
    ca = str(tls_dir / "ca.crt")
    before = sidecar(tls_control_plane, "sleep.acme", ca=ca).start()
    assert xds_stats(before)["ssl.handshake"] == 1
    # A sidecar that insists on a name only the next certificate has: refused for now.
    waiting = sidecar(tls_control_plane, "next.acme", ca=ca, server_name=NEXT)
    waiting.start(wait_listener=False)
    wait_for(lambda: xds_stats(waiting).get("ssl.fail_verify_san", 0) >= 1, timeout=20,
             what="the current certificate to be refused for the next name")
    assert not waiting.listener_active()
    assert tls_control_plane.process is not None
    pid = tls_control_plane.process.pid

    rotated_at = time.monotonic()
    write_server_files(tls_dir, [NAME, NEXT])  # same CA, a new leaf
    wait_for(waiting.listener_active, timeout=20, interval=0.01,
             what="the waiting sidecar to connect with the rotated certificate")
    took = time.monotonic() - rotated_at
    print(f"\nrotation to a new sidecar's listener: {took * 1000:.0f} ms "
          "(bounded by Envoy's 1 s reconnection back-off)")
    assert query(waiting.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])

    # The sidecar connected before the rotation keeps its stream: the same TLS
    # connection (one handshake) still receives configuration changes.
    name = "rotated.acme.svc.cluster.local"
    (manifests / "rotated.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: rotated, namespace: acme}\n"
        "spec: {clusterIP: 10.77.7.7}\n")
    wait_for(lambda: query(before.dns_port, name, timeout=0.3) == ("NOERROR", ["10.77.7.7"]),
             timeout=20, what="a change after the rotation to reach the older sidecar")
    assert xds_stats(before)["ssl.handshake"] == 1
    assert tls_control_plane.process.pid == pid and tls_control_plane.process.alive()
    metrics = http_text(f"{tls_control_plane.admin_url}/metrics")
    assert "dnscp_xds_tls_certificate_reloads_total 1.0" in metrics
