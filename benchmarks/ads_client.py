"""Simulated sidecars for benchmarks/streams.py: N ADS streams in one process.

Each stream subscribes to CDS and LDS like Envoy, ACKs every response, and
prints one JSON line per LDS response: {"c": id, "v": version, "t": wall time}.
Like Envoy, each stream has its own TCP connection (a channel of its own, not
gRPC's shared subchannel) and, when the server ends it, opens a new one after a
random back-off of 0.1-1 s, printing {"e": status code name} for each ending.
Runs until stdin closes or --seconds pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"


async def stream(address: str, cid: str, namespace: str, out: list[str],
                 stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await _one_stream(address, cid, namespace, out, stop)
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
                      stop: asyncio.Event) -> None:
    own = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(address, options=own) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = base_pb2.Node(id=cid)
        node.metadata.update({"NAMESPACE": namespace, "LABELS": {"app": "bench"},
                              "STATS_LISTEN_ADDRESS": "off"})
        call = stub.StreamAggregatedResources()  # requests written by this task, in order
        await call.write(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
        await call.write(discovery_pb2.DiscoveryRequest(type_url=LDS))
        while (resp := await call.read()) is not grpc.aio.EOF:
            await call.write(discovery_pb2.DiscoveryRequest(
                type_url=resp.type_url, version_info=resp.version_info,
                response_nonce=resp.nonce))
            if resp.type_url == LDS:
                out.append(json.dumps({"c": cid, "v": resp.version_info, "t": time.time()}))
            if stop.is_set():
                return


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--namespaces", default="acme,foo,globex")
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    namespaces = args.namespaces.split(",")
    out: list[str] = []
    stop = asyncio.Event()
    tasks = [asyncio.create_task(stream(args.address, f"c{i}", namespaces[i % len(namespaces)],
                                        out, stop))
             for i in range(args.first, args.first + args.count)]
    loop = asyncio.get_running_loop()
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
