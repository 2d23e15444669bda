"""Parity of the C++ simulated sidecar (``ads_client_cc``) with ``benchmarks/ads_client.py``.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/ads_client_cc/parity.py [--streams 6]

Starts the control plane on examples/, and between it and the clients a recording proxy
(gRPC, raw bytes forwarded both ways) that parses every DiscoveryRequest. Runs
ads_client.py, then the C++ client, with the same arguments (fronted, ``--watch``), each
for ``--seconds``, and checks, per stream:

- the requests: the same sequence of (type_url, resource_names, whether a version and a
  nonce are set), i.e. the same subscriptions by name (RDS, EDS, SDS) and the same ACKs;
- the node: the C++ client's parses to ``ads_client.node_of`` of that stream (its id too);
- the printed lines: the same keys in the same order, and the same values but ``t``.

examples/ gives fronted sidecars RDS names only (no EDS or TLS clusters), so the names
parsed from listeners and clusters are also checked offline first: synthetic Listeners
(HTTP connection managers with RDS, an inline route, other filters, the DNS listener) and
Clusters (EDS with and without a service name, static, TLS contexts naming SDS secrets
and an inline validation context) through ``ads_client.route_names``/``cluster_names``
and the C++ parser (``--names-of lds|cds``).

A first Python run warms the control plane (the first fronted sidecars of a tenant get
their set's pairs only after the front's settle time), so both compared runs see the same
versions. Exits 1 on a difference, printing it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2 as lc_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2
from google.protobuf.json_format import MessageToDict

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.ads_client import (  # noqa: E402
    HCM,
    cluster_names,
    node_of,
    route_names,
    write_nodes,
)
from benchmarks.checkout import start_control_plane  # noqa: E402
from controlplane._kit.localrun import free_port  # noqa: E402

SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"
METHOD = f"/{SERVICE}/StreamAggregatedResources"
BINARY = ROOT / "benchmarks" / "ads_client_cc" / "build" / "ads_client"


class Recorder:
    """A gRPC proxy in front of the control plane that records each stream's requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.streams: list[list[discovery_pb2.DiscoveryRequest]] = []

    async def handle(self, requests: Any, context: Any) -> Any:
        seen: list[discovery_pb2.DiscoveryRequest] = []
        self.streams.append(seen)

        async def forward() -> Any:
            async for raw in requests:
                seen.append(discovery_pb2.DiscoveryRequest.FromString(raw))
                yield raw

        async with grpc.aio.insecure_channel(
                self.upstream, options=[("grpc.max_receive_message_length", -1)]) as channel:
            call = channel.stream_stream(METHOD)(forward())
            async for raw in call:
                yield raw

    def take(self) -> dict[str, list[discovery_pb2.DiscoveryRequest]]:
        """The recorded streams by node id, and forget them."""
        out = {s[0].node.id: s for s in self.streams if s}
        self.streams = []
        return out


def packed(message: Any) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def synthetic() -> tuple[list[bytes], list[bytes]]:
    """Listeners and clusters covering each field the sidecar follows (and some it must not)."""
    def hcm(**kw: Any) -> lc_pb2.Filter:
        return lc_pb2.Filter(name=HCM.decode(),
                                   typed_config=packed(hcm_pb2.HttpConnectionManager(**kw)))

    listeners = [
        listener_pb2.Listener(name="dns", filter_chains=[lc_pb2.FilterChain(filters=[
            lc_pb2.Filter(name="envoy.filters.udp.dns_filter")])]),
        listener_pb2.Listener(name="http", filter_chains=[
            lc_pb2.FilterChain(filters=[
                lc_pb2.Filter(name="envoy.filters.network.tcp_proxy"),
                hcm(rds=hcm_pb2.Rds(route_config_name="dns-front-set:acme"))]),
            lc_pb2.FilterChain(filters=[hcm(rds=hcm_pb2.Rds(route_config_name="r2"))]),
            lc_pb2.FilterChain(filters=[hcm(stat_prefix="inline-route")]),
            lc_pb2.FilterChain(filters=[hcm(rds=hcm_pb2.Rds())])]),
    ]
    sds = secret_pb2.SdsSecretConfig
    clusters = [
        cluster_pb2.Cluster(name="a", type=cluster_pb2.Cluster.EDS,
                            eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
                                service_name="svc-a")),
        cluster_pb2.Cluster(name="b", type=cluster_pb2.Cluster.EDS),
        cluster_pb2.Cluster(name="static", type=cluster_pb2.Cluster.STATIC),
        cluster_pb2.Cluster(name="tls", type=cluster_pb2.Cluster.STRICT_DNS,
                            transport_socket=base_pb2.TransportSocket(
                                name="tls", typed_config=packed(tls_pb2.UpstreamTlsContext(
                                    common_tls_context=tls_pb2.CommonTlsContext(
                                        tls_certificate_sds_secret_configs=[sds(name="s1"),
                                                                            sds(name="s2")],
                                        validation_context_sds_secret_config=sds(
                                            name="ca")))))),
        cluster_pb2.Cluster(name="tls-inline-ca", type=cluster_pb2.Cluster.EDS,
                            transport_socket=base_pb2.TransportSocket(
                                name="tls", typed_config=packed(tls_pb2.UpstreamTlsContext(
                                    common_tls_context=tls_pb2.CommonTlsContext(
                                        tls_certificate_sds_secret_configs=[sds(name="s3")],
                                        validation_context=common_pb2.CertificateValidationContext(
                                        )))))),
    ]
    return ([m.SerializeToString() for m in listeners],
            [m.SerializeToString() for m in clusters])


def offline_names() -> int:
    """The names the C++ parser and ads_client.py take from the synthetic resources."""
    listeners, clusters = synthetic()
    response = discovery_pb2.DiscoveryResponse(
        resources=[any_pb2.Any(type_url="c", value=v) for v in clusters])
    eds, secrets = cluster_names(response)
    want = {"lds": {"rds": list(route_names(listeners))},
            "cds": {"eds": list(eds), "sds": list(secrets)}}
    failures = 0
    for kind, values in (("lds", listeners), ("cds", clusters)):
        got = json.loads(subprocess.run(
            [str(BINARY), "--names-of", kind], input="".join(f"{v.hex()}\n" for v in values),
            capture_output=True, text=True, check=True).stdout)
        same = got == want[kind]
        failures += not same
        print(f"offline {kind}: py {want[kind]}, cc {got}: {'same' if same else 'DIFFERENT'}")
    return failures


def summary(requests: list[discovery_pb2.DiscoveryRequest]) -> list[tuple[object, ...]]:
    return [(r.type_url.rsplit(".", 1)[1], tuple(r.resource_names), bool(r.version_info),
             bool(r.response_nonce)) for r in requests]


def lines(out: str) -> dict[str, list[dict[str, object]]]:
    by: dict[str, list[dict[str, object]]] = {}
    for line in out.splitlines():
        event = json.loads(line)
        by.setdefault(str(event.get("c", "-")), []).append(event)
    return by


async def run(command: list[str], seconds: float) -> str:
    """Run a client until its --seconds pass, then close its stdin (both end their streams
    at --seconds and exit when stdin closes); its stdout."""
    proc = await asyncio.create_subprocess_exec(*command, stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    reading = asyncio.ensure_future(proc.stdout.read())
    await asyncio.sleep(seconds + 1)
    proc.stdin.close()
    out = await asyncio.wait_for(reading, timeout=60)
    await proc.wait()
    return out.decode()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--namespaces", default="acme,foo,globex,micro-shake-factory")
    parser.add_argument("--watch", default="fruits-api-service")
    args = parser.parse_args()
    if not BINARY.exists():
        print(f"{BINARY} is not built: make bench-client")
        return 2
    failures = offline_names()
    work = Path(tempfile.mkdtemp(prefix="parity-"))
    shutil.copytree(ROOT / "examples", work / "manifests")
    cp = start_control_plane(work / "manifests", work, extra_args=["--log-level", "warning"])
    recorder = Recorder(cp.xds_address)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        SERVICE, {"StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
            recorder.handle)}),))
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    namespaces = args.namespaces.split(",")
    write_nodes(work / "nodes.tsv", namespaces, fronted=True)
    common = ["--address", f"127.0.0.1:{port}", "--count", str(args.streams), "--namespaces",
              args.namespaces, "--fronted", "--watch", args.watch, "--seconds", str(args.seconds)]
    py = [sys.executable, str(ROOT / "benchmarks" / "ads_client.py"), *common]
    cc = [str(BINARY), "--nodes", str(work / "nodes.tsv"), *common]
    try:
        await run(py, args.seconds)  # warm-up: the sets settle
        recorder.take()
        results = {}
        for name, command in (("py", py), ("cc", cc)):
            results[name] = (lines(await run(command, args.seconds)), recorder.take())
        (py_lines, py_reqs), (cc_lines, cc_reqs) = results["py"], results["cc"]
        for i in range(args.streams):
            cid, ns = f"c{i}", namespaces[i % len(namespaces)]
            want = MessageToDict(node_of(cid, ns, fronted=True))
            got = MessageToDict(base_pb2.Node.FromString(
                cc_reqs[cid][0].node.SerializeToString()))
            checks = {
                "node": (want, got),
                "requests": (summary(py_reqs[cid]), summary(cc_reqs[cid])),
                "lines": ([{k: v for k, v in e.items() if k != "t"} for e in py_lines[cid]],
                          [{k: v for k, v in e.items() if k != "t"} for e in cc_lines[cid]]),
                "keys": ([list(e) for e in py_lines[cid]], [list(e) for e in cc_lines[cid]]),
            }
            for what, (a, b) in checks.items():
                if a != b:
                    failures += 1
                    print(f"{cid} ({ns}) {what} differ:\n  py {a}\n  cc {b}")
            subscribed = {t: names for t, names, _, _ in summary(cc_reqs[cid]) if names}
            print(f"{cid} ({ns}): {len(cc_reqs[cid])} requests, {len(cc_lines[cid])} lines, "
                  f"names subscribed {subscribed}")
        extra = set(py_lines) ^ set(cc_lines)
        if extra:
            failures += 1
            print(f"lines from streams of one client only: {extra}")
        print("parity: " + ("OK, the same requests, node and lines" if not failures
                            else f"{failures} differences"))
        return 1 if failures else 0
    finally:
        await server.stop(None)
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
