"""Simulated sidecars for benchmarks/streams.py: N ADS streams in one process.

Each stream subscribes to CDS and LDS like Envoy, ACKs every response, and
prints one JSON line per LDS response: {"c": id, "v": version, "t": wall time}.
Like Envoy, each stream has its own TCP connection (a channel of its own, not
gRPC's shared subchannel) and, when the server ends it, opens a new one after a
random back-off of 0.1-1 s, printing {"e": status code name} for each ending.
Runs until stdin closes or --seconds pass.

``--fronted``: each stream is a DNS-fronted sidecar as the webhook injects it: its node
metadata is the one ``injection/sidecar.sidecar_bootstrap`` writes with the front on
(``DNS_FRONT_SET_ADDRESS``, the hop and stats addresses), and, like its Envoy, it also
subscribes by name to what the resources it got name: the RouteConfigurations of the
listeners' HTTP connection managers (RDS: the front's set), the endpoints of EDS clusters
and the secrets of the clusters' TLS contexts (SDS), ACKing each with its names. It then
prints a line per RDS response too, with ``"k": "rds"`` (``"lds"`` for listeners).
``--watch NAME``: each printed line says whether the response's resources carry NAME
(``"w": 1``; a byte search), so a change counts as arrived when what changed carries it,
and its size (``"b"``: bytes of its resources).

Like Envoy's gRPC client, each channel advertises a 256 MiB receive window and does not
probe (``ENVOY_WINDOW``), and a fronted node is made from the bootstrap once per
namespace. ``--hold``: start, print ``{"ready": 1}``, and connect only once a line
arrives on stdin (the storm of ``streams.py``: sidecars already running reconnect).

The same sidecar in C++ (Envoy's kind of gRPC client): ``benchmarks/ads_client_cc/``
(``make bench-client``; ``streams.py --clients cc``; its nodes from ``write_nodes``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.json_format import ParseDict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.core.settings import InjectionConfig  # noqa: E402
from controlplane.injection.sidecar import sidecar_bootstrap  # noqa: E402

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
SDS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
REPORTED = {LDS: "lds", RDS: "rds"}
HCM = b"envoy.filters.network.http_connection_manager"
TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"


# The receive windows of a real Envoy's gRPC client (its xDS cluster's HTTP/2 options
# left at their defaults): Http2ProtocolOptions.initial_stream_window_size and
# initial_connection_window_size default to 268435456 (256 MiB). gRPC's own default is a
# 64 KB stream window (``grpc.http2.lookahead_bytes``) grown by BDP probing, so a 158 KB
# listener needed WINDOW_UPDATEs from a busy client loop before the server could finish
# sending it. Envoy does not probe.
ENVOY_WINDOW = (("grpc.http2.lookahead_bytes", 256 * 1024 * 1024), ("grpc.http2.bdp_probe", 0))


@functools.cache
def _fronted_node(namespace: str) -> bytes:
    boot = sidecar_bootstrap(InjectionConfig(front=True), node_id="",
                             namespace=namespace, labels={"app": "bench"})
    return bytes(ParseDict(boot["node"], base_pb2.Node()).SerializeToString())


def node_of(cid: str, namespace: str, *, fronted: bool, extensions: int = 0) -> base_pb2.Node:
    """The sidecar's node: an injected, fronted sidecar's metadata, or the old minimal one
    (no stats listener, no front); with ``extensions`` entries in its extensions list, as
    a real Envoy sends (Envoy 1.40: 516 of them, 59,657 bytes of a 61,106-byte node).
    The fronted node is made from the bootstrap once per namespace (Envoy reads its
    bootstrap once, at start), each stream's copy given its id."""
    if fronted:
        node = base_pb2.Node.FromString(_fronted_node(namespace))
        node.id = cid
    else:
        node = base_pb2.Node(id=cid)
        node.metadata.update({"NAMESPACE": namespace, "LABELS": {"app": "bench"},
                              "STATS_LISTEN_ADDRESS": "off"})
    for i in range(extensions):  # ~116 bytes each, like Envoy's
        node.extensions.add(name=f"envoy.extensions.synthetic.filter_{i:04d}",
                            category="envoy.filters.network",
                            type_urls=[f"envoy.extensions.synthetic.v3.Filter{i:04d}"])
    return node


def write_nodes(path: Path, namespaces: list[str], *, fronted: bool, extensions: int = 0) -> None:
    """The nodes of the C++ client (``ads_client_cc``, ``--nodes``): a line per namespace,
    ``namespace<TAB>hex`` of ``node_of`` with an empty id; it appends each stream's id."""
    path.write_text("".join(
        f"{ns}\t{node_of('', ns, fronted=fronted, extensions=extensions).SerializeToString().hex()}\n"
        for ns in namespaces))


def route_names(values: list[bytes]) -> tuple[str, ...]:
    """The RouteConfigurations the listeners' HTTP connection managers ask RDS for, from
    the listeners' bytes."""
    out = set()
    for value in values:
        if HCM not in value:  # the DNS listener (a UDP filter) is never parsed
            continue
        listener = listener_pb2.Listener.FromString(value)
        for chain in listener.filter_chains:
            for f in chain.filters:
                if f.name == HCM.decode() and f.typed_config.value:
                    hcm = hcm_pb2.HttpConnectionManager.FromString(f.typed_config.value)
                    if hcm.HasField("rds"):
                        out.add(hcm.rds.route_config_name)
    return tuple(sorted(out))


def cluster_names(resp: discovery_pb2.DiscoveryResponse) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the EDS clusters' endpoint names, the secrets the clusters' TLS contexts name)."""
    eds, secrets = set(), set()
    for res in resp.resources:
        cluster = cluster_pb2.Cluster.FromString(res.value)
        if cluster.type == cluster_pb2.Cluster.EDS:
            eds.add(cluster.eds_cluster_config.service_name or cluster.name)
        socket = cluster.transport_socket.typed_config
        if socket.type_url == TLS:
            common = tls_pb2.UpstreamTlsContext.FromString(socket.value).common_tls_context
            secrets.update(s.name for s in common.tls_certificate_sds_secret_configs)
            if common.HasField("validation_context_sds_secret_config"):
                secrets.add(common.validation_context_sds_secret_config.name)
    return tuple(sorted(eds)), tuple(sorted(secrets))


async def stream(address: str, cid: str, namespace: str, out: list[str],
                 stop: asyncio.Event, **opts: Any) -> None:
    while not stop.is_set():
        try:
            await _one_stream(address, cid, namespace, out, stop, **opts)
            code = "OK"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except Exception as exc:  # noqa: BLE001 - e.g. a write on a stream already refused
            code = type(exc).__name__
        if stop.is_set():
            return
        out.append(json.dumps({"e": code}))
        await asyncio.sleep(random.uniform(0.1, 1.0))  # Envoy's retry back-off


async def _one_stream(address: str, cid: str, namespace: str, out: list[str],
                      stop: asyncio.Event, *, fronted: bool = False, watch: str = "",
                      extensions: int = 0) -> None:
    own = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1),
           *ENVOY_WINDOW]
    needle = watch.encode()
    async with grpc.aio.insecure_channel(address, options=own) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        call = stub.StreamAggregatedResources()  # requests written by this task, in order
        await call.write(discovery_pb2.DiscoveryRequest(
            type_url=CDS, node=node_of(cid, namespace, fronted=fronted, extensions=extensions)))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=LDS))
        # Named subscriptions (RDS, EDS, SDS) and the last version and nonce of each type.
        names: dict[str, tuple[str, ...]] = {}
        last: dict[str, tuple[str, str]] = {}
        while (resp := await call.read()) is not grpc.aio.EOF:
            last[resp.type_url] = (resp.version_info, resp.nonce)
            await call.write(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info,
                response_nonce=resp.nonce, resource_names=names.get(resp.type_url, ())))
            # Each resource's bytes, copied out of the message once for what follows.
            values = [r.value for r in resp.resources] if fronted or needle else []
            if fronted:
                wanted: dict[str, tuple[str, ...]] = {}
                if resp.type_url == LDS:
                    wanted[RDS] = route_names(values)
                elif resp.type_url == CDS:
                    wanted[EDS], wanted[SDS] = cluster_names(resp)
                for type_url, wanted_names in wanted.items():
                    if wanted_names != names.get(type_url, ()):
                        names[type_url] = wanted_names
                        version, nonce = last.get(type_url, ("", ""))
                        await call.write(discovery_pb2.DiscoveryRequest(
                            type_url=type_url, version_info=version, response_nonce=nonce,
                            resource_names=wanted_names))
            kind = REPORTED.get(resp.type_url)
            if kind == "lds" or (kind and fronted):
                line: dict[str, object] = {"c": cid, "v": resp.version_info, "t": time.time()}
                if fronted:
                    line["k"] = kind
                if needle:
                    line["w"] = int(any(needle in v for v in values))
                    line["b"] = sum(len(v) for v in values)
                out.append(json.dumps(line))
            if stop.is_set():
                return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--namespaces", default="acme,foo,globex")
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--fronted", action="store_true",
                        help="DNS-fronted sidecars, as injected (RDS too; see the module doc)")
    parser.add_argument("--extensions", type=int, default=0,
                        help="entries in each node's extensions list (a real Envoy: ~516)")
    parser.add_argument("--watch", default="",
                        help="say in each line whether the response carries this name")
    parser.add_argument("--hold", action="store_true",
                        help="start, make the nodes, print {\"ready\": 1}, and connect only "
                        "once a line arrives on stdin (a storm of sidecars already running)")
    args = parser.parse_args()
    namespaces = args.namespaces.split(",")
    out: list[str] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if args.hold:
        for i in range(args.first, args.first + args.count):
            node_of(f"c{i}", namespaces[i % len(namespaces)], fronted=args.fronted,
                    extensions=args.extensions)
        print(json.dumps({"ready": 1}), flush=True)
        if not await loop.run_in_executor(None, sys.stdin.readline):
            return
    tasks = [asyncio.create_task(stream(args.address, f"c{i}", namespaces[i % len(namespaces)],
                                        out, stop, fronted=args.fronted, watch=args.watch,
                                        extensions=args.extensions))
             for i in range(args.first, args.first + args.count)]
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    deadline = time.time() + args.seconds
    while time.time() < deadline and not stdin_closed.done():
        await asyncio.sleep(0.05)
        while out:
            print(out.pop(0), flush=True)
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
