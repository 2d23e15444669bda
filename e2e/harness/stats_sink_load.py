"""Synthetic sidecars for the stats sink: memory and CPU of the control plane at N sidecars.

    .venv/bin/python -m e2e.harness.stats_sink_load [--sidecars 1000] [--interval 5] [--rounds 12]

Starts a real control plane on examples/ (file source), connects N simulated sidecars
(each one ADS stream, like Envoy, so its reports are accepted, and one
``MetricsService/StreamMetrics`` stream that sends, every ``--interval`` seconds, the
message a real Envoy 1.40 sidecar sends with this project's bootstrap: the DNS filter's
counters and summaries, the xDS health stats), and prints the control plane's RSS
before the reports start and after each round, its CPU per second while reporting, and
what ``/api/v1/traffic`` counts. Bounded: ``--rounds`` rounds, then everything stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from controlplane._kit.localrun import ControlPlane, http_json, rss_mb, wait_for
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.stats_sink import METRICS_SERVICE

ROOT = Path(__file__).resolve().parents[2]
TENANTS = ("acme", "foo", "globex")
CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
# The stats a steady sidecar sends besides the DNS counters (bootstrap.SIDECAR_STATS).
HEALTH = ("listener_manager.lds.update_attempt", "listener_manager.lds.update_success",
          "listener_manager.lds.update_time", "listener_manager.lds.version",
          "listener_manager.lds.version_text", "cluster_manager.cds.update_attempt",
          "cluster_manager.cds.update_success", "cluster_manager.cds.update_time",
          "cluster_manager.cds.version", "control_plane.connected_state",
          "control_plane.pending_requests", "cluster.xds_cluster.upstream_cx_total")


def message(node: str | None, tenant: str, n: int, ts_ms: int) -> Any:
    msg = metrics_protos.StreamMetricsMessage()
    if node is not None:
        msg.identifier.node.id = node
        msg.identifier.node.cluster = "dns-sidecar"
    prefix = f"dns_filter.tenant.{tenant}."
    for name, value in (("downstream_rx_queries", 10 * n), ("downstream_tx_responses", 10 * n),
                        ("a_record_queries", 8 * n), ("aaaa_record_queries", 2 * n),
                        ("local_a_record_answers", 7 * n), ("known_domain_queries", 9 * n),
                        ("externally_resolved_queries", 2 * n), ("unanswered_queries", n)):
        family = msg.envoy_metrics.add(name=prefix + name, type=metrics_protos.COUNTER)
        family.metric.add(timestamp_ms=ts_ms).counter.value = value
    for name in HEALTH:
        family = msg.envoy_metrics.add(name=name, type=metrics_protos.GAUGE)
        family.metric.add(timestamp_ms=ts_ms).gauge.value = n
    raw = msg.SerializeToString()
    # The DNS filter's three histograms, as Envoy's summaries (10 quantiles each); the
    # control plane's parser skips them as unknown fields.
    quantile = b"\x09" + b"\x00" * 8 + b"\x11" + b"\x00" * 8
    summary = b"\x08" + _varint(n) + b"\x11" + b"\x00" * 8 + (b"\x1a\x12" + quantile) * 10
    metric = b"\x22" + _varint(len(summary)) + summary + b"\x30" + _varint(ts_ms)
    for name in ("downstream_rx_bytes", "downstream_tx_bytes", "downstream_rx_query_latency"):
        fam = (prefix + name).encode()
        body = (b"\x0a" + _varint(len(fam)) + fam + b"\x18\x02" + b"\x22"
                + _varint(len(metric)) + metric)
        raw += b"\x12" + _varint(len(body)) + body
    return raw


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def sidecar(address: str, i: int, rounds: int, interval: float, sent: list[int],
                  connected: asyncio.Event, go: asyncio.Event, total: int,
                  ready: list[int]) -> None:
    tenant = TENANTS[i % len(TENANTS)]
    node_id = f"synthetic-{i}"
    async with grpc.aio.insecure_channel(address) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        queue: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        node = base_pb2.Node(id=node_id)
        node.metadata.update({"NAMESPACE": tenant, "LABELS": {"app": "sleep"},
                              "STATS_LISTEN_ADDRESS": "off"})
        await queue.put(discovery_pb2.DiscoveryRequest(type_url=CDS, node=node))
        await queue.put(discovery_pb2.DiscoveryRequest(type_url=LDS))

        async def requests() -> Any:
            while True:
                yield await queue.get()

        ads = stub.StreamAggregatedResources(requests())

        async def ack() -> None:
            first = True
            async for resp in ads:
                await queue.put(discovery_pb2.DiscoveryRequest(
                    type_url=resp.type_url, version_info=resp.version_info,
                    response_nonce=resp.nonce))
                if first and resp.type_url == LDS:
                    first = False
                    ready.append(i)
                    if len(ready) == total:
                        connected.set()

        acker = asyncio.create_task(ack())
        await go.wait()
        call = channel.stream_unary(f"/{METRICS_SERVICE}/StreamMetrics",
                                    request_serializer=lambda raw: raw,
                                    response_deserializer=lambda raw: raw)

        async def reports() -> Any:
            await asyncio.sleep(interval * (i % 100) / 100)  # Envoys flush out of phase
            for n in range(1, rounds + 1):
                yield message(node_id if n == 1 else None, tenant, n, int(time.time() * 1000))
                sent[0] += 1
                await asyncio.sleep(interval)

        try:
            await call(reports())
        finally:
            acker.cancel()
            ads.cancel()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(sidecars: int, interval: float, rounds: int, cp: ControlPlane) -> dict[str, Any]:
    assert cp.process is not None
    pid = cp.process.pid
    sent = [0]
    connected, go = asyncio.Event(), asyncio.Event()
    ready: list[int] = []
    tasks = [asyncio.create_task(sidecar(cp.xds_address, i, rounds, interval, sent, connected,
                                         go, sidecars, ready)) for i in range(sidecars)]
    await asyncio.wait_for(connected.wait(), 120)
    await asyncio.sleep(2)
    before = rss_mb(pid)
    print(f"{sidecars} ADS streams connected: control plane RSS {before:.1f} MB", flush=True)
    go.set()
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    samples = []
    for r in range(rounds):
        await asyncio.sleep(interval)
        rss = rss_mb(pid)
        samples.append(rss)
        print(f"round {r + 1}: {sent[0]} reports sent, RSS {rss:.1f} MB", flush=True)
    cpu = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    summary = await asyncio.to_thread(http_json, f"{cp.admin_url}/api/v1/traffic", 10.0)
    await asyncio.gather(*tasks, return_exceptions=True)
    return {"sidecars": sidecars, "interval_s": interval, "rounds": rounds,
            "reports_sent": sent[0], "rss_before_mb": round(before, 1),
            "rss_rounds_mb": [round(s, 1) for s in samples],
            "rss_growth_mb": round(max(samples) - before, 1),
            "cpu_while_reporting": round(cpu, 3),
            "reports": summary["reports"], "message_bytes": len(message("n", "acme", 1, 0)),
            "reporting": {t["tenant"]: t["sidecars_reporting"] for t in summary["tenants"]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sidecars", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dns-cp-statsload-"))
    cp = ControlPlane(ROOT / "examples", workdir, extra_args=["--tenant-resolvers", "none"])
    cp.start()
    try:
        wait_for(cp.ready, timeout=30, what="control plane")
        result = asyncio.run(run(args.sidecars, args.interval, args.rounds, cp))
    finally:
        cp.stop()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
