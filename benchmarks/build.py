"""Build benchmark: every view from scratch, then one change at a time, and memory.

    .venv/bin/python benchmarks/build.py [--sizes 1000 10000 50000 100000] [--tenants 100]

For each size, in a fresh process (so the memory figures are its own): the
synthetic cluster (``benchmarks/synthetic.py``) is loaded into a ``Store`` as
one origin; the first ``take`` is applied to a hub (inline, no worker) with
one connected sidecar per tenant, so every view is built and serialised: the
full build. Then changes, each the way a source hands them over (the store
gets one object, the hub gets the batch of changed keys): one Service's cluster
IP (tenant t0 sees it), one headless endpoint, one Service added. Each change
is timed (wall and CPU, median of ``--repeat``), with how many views were
re-serialised. Memory: RSS after the imports, after the full build, and the
peak (``ru_maxrss``).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.procstat import load_average  # noqa: E402
from benchmarks.synthetic import cluster  # noqa: E402
from controlplane._kit.localrun import rss_mb  # noqa: E402
from controlplane.core.model import Endpoint, Service, ServicePort, Workload, object_key  # noqa: E402
from controlplane.core.settings import ResolverMode, ResolverSettings, Settings  # noqa: E402
from controlplane.hub.hub import Hub  # noqa: E402
from controlplane.store.store import Store

ORIGIN = "synthetic"


def attach_all(hub: Hub, tenants: int) -> None:
    """One connected sidecar per tenant, so every view is built and serialised."""
    for t in range(tenants):
        conn = hub.open(peer=f"bench-{t}")
        conn.workload = Workload(node_id=f"n{t}", namespace=f"ns{t}")
        hub._assign(conn)  # noqa: SLF001 - what attach() does after reading the node
    hub._refresh_snapshots()  # noqa: SLF001


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def one(n: int, tenants: int, repeat: int) -> dict[str, Any]:
    """Measure size ``n`` in this process."""
    base_rss = rss_mb(_pid())
    inv = cluster(n, tenants=tenants, namespaces=max(tenants, 100))
    objects = [*inv.namespaces.values(), *inv.services.values(), *inv.endpoint_slices.values(),
               *inv.service_entries.values(), *inv.policies.values()]
    del inv
    store = Store()
    store.replace_origin(ORIGIN, objects)
    del objects
    hub = Hub(Settings(resolvers=ResolverSettings(mode=ResolverMode.NONE)))

    def full() -> None:
        batch = store.take()
        hub.set_inventory(batch.inventory, changed=batch.changed)
        attach_all(hub, tenants)

    wall, cpu = timed(full)
    built_rss = rss_mb(_pid())
    views = len(hub.cache.snapshots())
    size = sum(s.size for s in hub.cache.snapshots()) // max(1, views)

    def change(obj: Any) -> tuple[float, float, int]:
        store.apply_object(ORIGIN, object_key(obj), obj)
        before = hub.cache.serializations

        def apply() -> None:
            batch = store.take()
            hub.set_inventory(batch.inventory, changed=batch.changed)

        w, c = timed(apply)
        return w, c, hub.cache.serializations - before

    results: dict[str, list[tuple[float, float, int]]] = {"svc": [], "endpoint": [], "add": []}
    for i in range(repeat):
        svc = hub.inventory.services[("ns0", "svc0")]
        results["svc"].append(change(dataclasses.replace(
            svc, cluster_ips=(f"10.250.0.{i + 1}",))))
        sl = hub.inventory.endpoint_slices[("ns0", "hl0-1")]
        results["endpoint"].append(change(dataclasses.replace(sl, endpoints=(
            Endpoint((f"10.201.0.{i + 1}",), ready=True, hostname="hl0-0"),) + sl.endpoints[1:])))
        results["add"].append(change(Service("ns0", f"added{i}", cluster_ips=(f"10.251.0.{i + 1}",),
                                             ports=(ServicePort("http", 80),))))
    out: dict[str, Any] = {"services": n, "views": views, "full_s": wall, "full_cpu_s": cpu,
                           "bytes_per_view": size, "rss_base_mb": base_rss,
                           "rss_built_mb": built_rss,
                           "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for name, rows in results.items():
        out[f"{name}_ms"] = statistics.median(r[0] for r in rows) * 1000
        out[f"{name}_cpu_ms"] = statistics.median(r[1] for r in rows) * 1000
        out[f"{name}_reserialised"] = max(r[2] for r in rows)
    return out


def _pid() -> int:
    import os

    return os.getpid()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000, 100000])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.tenants, args.repeat)))
        return 0
    print(f"build benchmark: {args.tenants} tenants, one process per size, changes through "
          f"the store (median of {args.repeat}); load average at start {load_average()}")
    print(f"{'services':>9} {'views':>5} {'full build':>10} {'(cpu)':>7} "
          f"{'1 svc change':>12} {'(cpu)':>7} {'1 endpoint':>10} {'(cpu)':>7} "
          f"{'1 svc added':>11} {'(cpu)':>7} {'re-ser.':>7} {'bytes/view':>10} "
          f"{'RSS base':>8} {'built':>6} {'peak':>6}")
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--tenants",
                               str(args.tenants), "--repeat", str(args.repeat)],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n:>9} {r['views']:>5} {r['full_s'] * 1000:>8.0f}ms {r['full_cpu_s'] * 1000:>5.0f}ms"
              f" {r['svc_ms']:>10.2f}ms {r['svc_cpu_ms']:>5.2f}ms"
              f" {r['endpoint_ms']:>8.2f}ms {r['endpoint_cpu_ms']:>5.2f}ms"
              f" {r['add_ms']:>9.2f}ms {r['add_cpu_ms']:>5.2f}ms"
              f" {max(r['svc_reserialised'], r['endpoint_reserialised']):>7}"
              f" {r['bytes_per_view']:>10} {r['rss_base_mb']:>6.0f}MB {r['rss_built_mb']:>4.0f}MB"
              f" {r['rss_peak_mb']:>4.0f}MB")
    print(f"load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
