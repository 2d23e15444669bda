"""Build benchmark: every view from scratch, then one change at a time, and memory.

    .venv/bin/python benchmarks/build.py [--sizes 1000 10000 50000 100000] [--tenants 100]
        [--wide 1 [--own 500]] [--resolvers] [--fronted] [--as-served] [--repeat 5]
        [--profile FILE]  (one size: the full build under cProfile, pstats written to FILE)

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

The full build's CPU is this process's (``time.process_time``: every thread;
the hub runs inline here, so that is the build). Options for the curves of
issue 21 (RESULTS.md section 20), each off by default (the old figures):

- ``--wide W``: W more tenants with ``defaultAction: ALLOW``, each with its own
  namespace ``wide<w>`` and one sidecar there, whose views hold every Service
  of the cluster (the last ``--own`` Services live in ``wide0``);
- ``--resolvers``: every tenant's resolver table too, as ``controlplane serve``
  makes them at a full build (``ResolverPool.prepare``: the zone texts and RPZ
  records of each table; no unbound is started: its own load is not counted);
- ``--fronted``: the wide tenants' sidecars declare a DNS front, so their Envoy
  gets only the own namespaces (at most ``--front-table-limit`` of the
  serve default, 2,000) and the tenant resolver holds the rest (needs
  ``--resolvers``; docs/wide-tenants.md);
- ``--as-served``: garbage collection as ``serve`` runs the build
  (``runtime.activate()``, the build inside ``runtime.quiet()``: no automatic
  full collection midway, the result frozen); without it the interpreter's
  defaults.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import json
import os
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
from controlplane.dns.views import Forwarding, ResolverHop, Upstream  # noqa: E402
from controlplane.hub.hub import Hub  # noqa: E402
from controlplane.runtime import heap as runtime  # noqa: E402
from controlplane.store.store import Store  # noqa: E402
from controlplane.translate.table_texts import NameTexts, TableTexts  # noqa: E402

ORIGIN = "synthetic"


class TableResolvers:
    """A ResolverDirectory that does the pure part of ``ResolverPool.prepare`` (every
    changed table's files, made by the names that changed: ``TableTexts``) and starts
    nothing; its CPU apart."""

    errors: dict[str, str] = {}

    def __init__(self) -> None:
        self.made: dict[str, TableTexts] = {}
        self.shared = NameTexts()  # as the pool shares each name's texts between tenants
        self.cpu = 0.0
        self.names = 0

    @property
    def hop(self) -> ResolverHop | None:
        return None

    def hop_for(self, tenant: str) -> ResolverHop | None:
        return None

    def prepare(self, forwards: dict[str, Forwarding]) -> None:
        c0 = time.process_time()
        for tenant, fwd in forwards.items():
            texts = self.made.get(tenant)
            if texts is None:
                texts = self.made[tenant] = TableTexts(shared=self.shared)
            if texts.table_of is not fwd.table:
                texts.update(fwd)
                self.names += len(fwd.table)
        self.cpu += time.process_time() - c0

    def apply(self, forwards: dict[str, Forwarding]) -> dict[str, Upstream]:
        self.prepare(forwards)
        return {t: Upstream("127.0.0.1", 5300 + i) for i, t in enumerate(sorted(forwards))}


def attach_all(hub: Hub, tenants: int, *, wide: int = 0, fronted: bool = False) -> None:
    """One connected sidecar per tenant, so every view is built and serialised."""
    nodes = [(f"n{t}", f"ns{t}", False) for t in range(tenants)]
    nodes += [(f"w{w}", f"wide{w}", fronted) for w in range(wide)]
    for node, namespace, front in nodes:
        conn = hub.open(peer=f"bench-{node}")
        conn.workload = Workload(node_id=node, namespace=namespace,
                                 front_set_host="127.0.0.1" if front else "",
                                 front_set_port=15055 if front else 0)
        hub._assign(conn)  # noqa: SLF001 - what attach() does after reading the node
    hub._refresh_snapshots()  # noqa: SLF001


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def one(n: int, tenants: int, repeat: int, *, wide: int = 0, own: int = 0,
        resolvers: bool = False, fronted: bool = False, as_served: bool = False,
        profile: str = "") -> dict[str, Any]:
    """Measure size ``n`` in this process."""
    base_rss = rss_mb(_pid())
    inv = cluster(n, tenants=tenants, namespaces=max(tenants, 100), wide=wide, own=own)
    objects = [*inv.namespaces.values(), *inv.services.values(), *inv.endpoint_slices.values(),
               *inv.service_entries.values(), *inv.policies.values()]
    del inv
    store = Store()
    store.replace_origin(ORIGIN, objects)
    del objects
    directory = TableResolvers() if resolvers else None
    hub = Hub(Settings(resolvers=ResolverSettings(
        mode=ResolverMode.LOCAL if resolvers else ResolverMode.NONE)), resolvers=directory)
    if as_served:
        runtime.activate()

    def full() -> None:
        with runtime.quiet():  # a no-op unless activated (--as-served)
            batch = store.take()
            hub.set_inventory(batch.inventory, changed=batch.changed)
            attach_all(hub, tenants, wide=wide, fronted=fronted)

    if profile:
        profiler = cProfile.Profile(time.process_time)  # CPU: other processes do not count
        wall, cpu = timed(lambda: profiler.runcall(full))
        profiler.dump_stats(profile)
    else:
        wall, cpu = timed(full)
    built_rss = rss_mb(_pid())
    views = len(hub.cache.snapshots())
    size = sum(s.size for s in hub.cache.snapshots()) // max(1, views)
    largest = max((s.size for s in hub.cache.snapshots()), default=0)
    resolver_cpu = directory.cpu if directory else 0.0
    resolver_names = directory.names if directory else 0

    def change(obj: Any) -> tuple[float, float, int, float]:
        store.apply_object(ORIGIN, object_key(obj), obj)
        before = hub.cache.serializations
        resolver_before = directory.cpu if directory else 0.0

        def apply() -> None:
            batch = store.take()
            hub.set_inventory(batch.inventory, changed=batch.changed)

        w, c = timed(apply)
        return (w, c, hub.cache.serializations - before,
                (directory.cpu if directory else 0.0) - resolver_before)

    results: dict[str, list[tuple[float, float, int, float]]] = {
        "svc": [], "endpoint": [], "add": []}
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
                           "bytes_per_view": size, "largest_view": largest,
                           "resolver_cpu_s": resolver_cpu, "resolver_names": resolver_names,
                           "rss_base_mb": base_rss,
                           "rss_built_mb": built_rss,
                           "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for name, rows in results.items():
        out[f"{name}_ms"] = statistics.median(r[0] for r in rows) * 1000
        out[f"{name}_cpu_ms"] = statistics.median(r[1] for r in rows) * 1000
        out[f"{name}_reserialised"] = max(r[2] for r in rows)
        out[f"{name}_resolver_cpu_ms"] = statistics.median(r[3] for r in rows) * 1000
    return out


def _pid() -> int:
    return os.getpid()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000, 100000])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--wide", type=int, default=0,
                        help="ALLOW tenants that see every Service, one sidecar each")
    parser.add_argument("--own", type=int, default=500,
                        help="with --wide: Services in the first wide tenant's namespace")
    parser.add_argument("--resolvers", action="store_true",
                        help="make every tenant resolver's table too (no unbound started)")
    parser.add_argument("--fronted", action="store_true",
                        help="the wide tenants' sidecars are DNS-fronted (needs --resolvers)")
    parser.add_argument("--as-served", action="store_true",
                        help="garbage collection as serve runs the build")
    parser.add_argument("--profile", default="",
                        help="with one size: cProfile the full build into this file "
                             "(pstats, CPU time; the profiler's overhead is in the figures)")
    parser.add_argument("--one", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fronted and not args.resolvers:
        parser.error("--fronted needs --resolvers (Envoy's part is cut only with a resolver)")
    own = args.own if args.wide else 0
    if args.one:
        print(json.dumps(one(args.one, args.tenants, args.repeat, wide=args.wide, own=own,
                             resolvers=args.resolvers, fronted=args.fronted,
                             as_served=args.as_served, profile=args.profile)))
        return 0
    extra = []
    if args.wide:
        extra += ["--wide", str(args.wide), "--own", str(own)]
    if args.profile:
        if len(args.sizes) != 1:
            parser.error("--profile takes one size")
        extra += ["--profile", args.profile]
    extra += [flag for flag, on in (("--resolvers", args.resolvers), ("--fronted", args.fronted),
                                    ("--as-served", args.as_served)) if on]
    print(f"build benchmark: {args.tenants} tenants"
          f"{f' + {args.wide} wide (ALLOW, every Service; {own} in wide0)' if args.wide else ''}"
          f"{', resolver tables' if args.resolvers else ''}"
          f"{', wide sidecars fronted' if args.fronted else ''}"
          f"{', gc as served' if args.as_served else ''}; one process per size, changes "
          f"through the store (median of {args.repeat}); load average at start {load_average()}")
    print(f"{'services':>9} {'views':>5} {'full build':>10} {'(cpu)':>7} "
          f"{'1 svc change':>12} {'(cpu)':>7} {'1 endpoint':>10} {'(cpu)':>7} "
          f"{'1 svc added':>11} {'(cpu)':>7} {'re-ser.':>7} {'bytes/view':>10} "
          f"{'RSS base':>8} {'built':>6} {'peak':>6}"
          + (f" {'largest view':>12}" if args.wide else "")
          + (f" {'resolver tables (cpu, names)':>28} {'of 1 svc change':>15}"
             if args.resolvers else "")
          + f" {'load':>5}")
    for n in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--one", str(n), "--tenants",
                               str(args.tenants), "--repeat", str(args.repeat), *extra],
                              capture_output=True, text=True, check=True)
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n:>9} {r['views']:>5} {r['full_s'] * 1000:>8.0f}ms {r['full_cpu_s'] * 1000:>5.0f}ms"
              f" {r['svc_ms']:>10.2f}ms {r['svc_cpu_ms']:>5.2f}ms"
              f" {r['endpoint_ms']:>8.2f}ms {r['endpoint_cpu_ms']:>5.2f}ms"
              f" {r['add_ms']:>9.2f}ms {r['add_cpu_ms']:>5.2f}ms"
              f" {max(r['svc_reserialised'], r['endpoint_reserialised']):>7}"
              f" {r['bytes_per_view']:>10} {r['rss_base_mb']:>6.0f}MB {r['rss_built_mb']:>4.0f}MB"
              f" {r['rss_peak_mb']:>4.0f}MB"
              + (f" {r['largest_view']:>12}" if args.wide else "")
              + (f" {r['resolver_cpu_s'] * 1000:>17.0f}ms {r['resolver_names']:>8}"
                 f" {r['svc_resolver_cpu_ms']:>13.2f}ms" if args.resolvers else "")
              + f" {os.getloadavg()[0]:>5.2f}")
    print(f"load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
