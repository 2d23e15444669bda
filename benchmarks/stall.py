"""No stall: ADS streams and admin requests keep being served during a full rebuild.

    .venv/bin/python benchmarks/stall.py [--services 50000] [--sidecars 100] [--code DIR]

The control plane serves the synthetic cluster's base (``benchmarks/synthetic.py``:
100 namespaces, 100 DENY tenants, ServiceEntries, headless Services) from a
manifest directory, with ``--sidecars`` simulated sidecars connected (one per
tenant, ``benchmarks/ads_client.py``). Then two full rebuilds while serving:

1. ``load``: one file with N ClusterIP Services appears in the directory: it is
   parsed, every record is built, every tenant view is rebuilt and re-serialised;
2. ``policies``: every tenant's policy also whitelists the next tenant's
   namespaces: every view is rebuilt, twice as large, and re-serialised (the
   records stay).

Throughout, from this process: ``GET /healthz`` every 10 ms (admin latency), and
a new ADS stream every 50 ms for tenant t0's view, timed to its first listener
(ADS latency: a stream of a view already built needs nothing but the event loop).
The control plane's own event-loop lag (``dnscp_event_loop_lag_seconds``, a 10 ms
timer) is read from /metrics before and after. Server CPU (the control plane) and
client CPU (the sidecar process and this one) are reported apart, with the load
average. ``--code DIR`` runs the control plane from another checkout (e.g.
``git archive HEAD | tar -x -C DIR``) for a before/after comparison; older code has
no lag metric, the probes still tell.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.checkout import start_control_plane  # noqa: E402
from benchmarks.procstat import CpuMeter, load_average  # noqa: E402
from benchmarks.streams import Clients  # noqa: E402
from benchmarks.synthetic import base_manifests, services_manifests  # noqa: E402
from controlplane._kit.localrun import ControlPlane, http_text, rss_mb, wait_for  # noqa: E402

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"


class Probes:
    """Admin and ADS latency, sampled in two threads until ``stop``."""

    def __init__(self, cp: ControlPlane) -> None:
        self.cp = cp
        self.admin: list[tuple[float, float]] = []  # (wall time, seconds)
        self.ads: list[tuple[float, float]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._admin, daemon=True),
                         threading.Thread(target=self._ads, daemon=True)]

    def start(self) -> Probes:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)

    def _admin(self) -> None:
        url = f"{self.cp.admin_url}/healthz"
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - loopback
                    resp.read()
                self.admin.append((time.time(), time.perf_counter() - started))
            except OSError:
                self.failures += 1
            self._stop.wait(0.01)

    def _ads(self) -> None:
        channel = grpc.insecure_channel(self.cp.xds_address)
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        i = 0
        while not self._stop.is_set():
            i += 1
            node = base_pb2.Node(id=f"probe-{i}")
            node.metadata.update({"NAMESPACE": "ns0", "LABELS": {"app": "probe"},
                                  "STATS_LISTEN_ADDRESS": "off"})
            done = threading.Event()

            def requests(node: base_pb2.Node = node, done: threading.Event = done
                         ) -> Iterator[discovery_pb2.DiscoveryRequest]:
                yield discovery_pb2.DiscoveryRequest(type_url=CDS, node=node)
                yield discovery_pb2.DiscoveryRequest(type_url=LDS)
                done.wait(35)

            started = time.perf_counter()
            call = stub.StreamAggregatedResources(requests(), timeout=30)
            try:
                for resp in call:
                    if resp.type_url == LDS:
                        self.ads.append((time.time(), time.perf_counter() - started))
                        break
            except grpc.RpcError:
                self.failures += 1
            finally:
                done.set()
                call.cancel()
            self._stop.wait(0.05)
        channel.close()


def lag_metrics(cp: ControlPlane) -> tuple[dict[float, float], float] | None:
    """The control plane's event-loop lag histogram (le -> count) and its max, or None."""
    text = http_text(f"{cp.admin_url}/metrics")
    buckets = {}
    for m in re.finditer(r'^dnscp_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text,
                         re.MULTILINE):
        buckets[float(m.group(1))] = float(m.group(2))
    peak = re.search(r"^dnscp_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    if not buckets or peak is None:
        return None
    return buckets, float(peak.group(1))


def lag_summary(before: tuple[dict[float, float], float] | None,
                after: tuple[dict[float, float], float] | None) -> str:
    if before is None or after is None:
        return "loop lag: not measured by this control plane"
    delta = {le: after[0][le] - before[0].get(le, 0.0) for le in after[0]}
    total = delta[float("inf")]
    over = {ms: total - delta[ms / 1000] for ms in (10, 25, 50, 100) if ms / 1000 in delta}
    bound = min((le for le, n in delta.items() if n == total), default=float("inf"))
    peak = (f"max {after[1] * 1000:.1f} ms" if after[1] > before[1] else
            f"max <= {bound * 1000:g} ms (histogram bound)")
    return (f"loop lag: {total:.0f} samples of a 10 ms timer; late by more than "
            + ", ".join(f"{ms} ms: {n:.0f}" for ms, n in over.items()) + f"; {peak}")


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def window(samples: list[tuple[float, float]], t0: float, t1: float) -> list[float]:
    return [s for t, s in samples if t0 <= t <= t1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=50000)
    parser.add_argument("--sidecars", type=int, default=100)
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    args = parser.parse_args()
    print(f"stall benchmark: {args.services} Services, {args.sidecars} sidecars, code "
          f"{args.code or 'this checkout'}; 2 cores shared by every process; load average "
          f"at start {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="stall-"))
    manifests = work / "manifests"
    manifests.mkdir()
    (manifests / "base.yaml").write_text(base_manifests())
    cp = start_control_plane(manifests, work, code=args.code,
                             extra_args=["--log-level", "warning"])
    assert cp.process is not None
    pid = cp.process.pid
    namespaces = ",".join(f"ns{n}" for n in range(100))
    clients = Clients(cp.xds_address, args.sidecars, 1, seconds=900, namespaces=namespaces)
    probes = None
    try:
        wait_for(lambda: len(clients.latest()) >= args.sidecars, timeout=120, interval=0.2,
                 what="every sidecar's first listener")
        probes = Probes(cp).start()
        time.sleep(1.0)
        steps = [("load", lambda: (manifests / "services.yaml").write_text(
                    services_manifests(args.services))),
                 ("policies", lambda: (manifests / "base.yaml").write_text(
                    base_manifests(widen=True)))]
        print(f"{'step':<8} {'applied in':>10} {'admin p50/p99/max ms':>22} "
              f"{'ADS p50/p99/max ms':>20} {'server cpu':>10} {'client cpu':>10} "
              f"{'RSS MB':>7}")
        notes = []
        for name, change in steps:
            before = clients.latest()
            lag0 = lag_metrics(cp)
            meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
            t0 = time.time()
            change()
            wait_for(lambda before=before: all(v[0] != before[c][0]  # type: ignore[misc]
                                               for c, v in clients.latest().items()
                                               if c in before),
                     timeout=600, interval=0.05, what=f"{name}: every sidecar updated")
            applied = max(t for _, t in clients.latest().values()) - t0
            time.sleep(0.5)
            t1 = time.time()
            server_cpu, client_cpu = meter.stop()
            lag1 = lag_metrics(cp)
            admin = window(probes.admin, t0, t1)
            ads = window(probes.ads, t0, t1)
            print(f"{name:<8} {applied:>9.2f}s "
                  f"{percentile(admin, .5) * 1000:>6.1f}/{percentile(admin, .99) * 1000:.1f}/"
                  f"{max(admin, default=0) * 1000:.1f} "
                  f"{percentile(ads, .5) * 1000:>8.1f}/{percentile(ads, .99) * 1000:.1f}/"
                  f"{max(ads, default=0) * 1000:.1f} {server_cpu:>9.1f}s {client_cpu:>9.1f}s "
                  f"{rss_mb(pid):>7.0f}")
            notes.append(f"{name}: {lag_summary(lag0, lag1)}; {len(admin)} admin and "
                         f"{len(ads)} ADS probes")
        for note in notes:
            print(note)
        print(f"probe failures: {probes.failures}; load average at end {load_average()}")
        print("(applied in: from the write to the last sidecar's new listener; admin: GET "
              "/healthz every 10 ms; ADS: a new stream every 50 ms, to its first listener; "
              "cpu in seconds over the step + 0.5 s; client = the sidecars' process + this "
              "one's probes)")
        print(f"median ADS probe outside the steps: "
              f"{statistics.median([s for _, s in probes.ads[:5]] or [0]) * 1000:.1f} ms")
    finally:
        if probes is not None:
            probes.stop()
        clients.kill()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
