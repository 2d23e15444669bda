"""Build benchmark: build and serialise every view from scratch, then one changed Service.

    .venv/bin/python benchmarks/build.py [--sizes 1000 10000 50000] [--tenants 100]

Prints, per size: the time to build every tenant view and serialise its
snapshot from scratch; the time (and CPU) for one changed Service and for one
headless endpoint change (only the affected view is re-serialised: the
snapshot counter says how many were); snapshot bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synthetic import cluster  # noqa: E402
from controlplane.hub import Hub, ViewKey  # noqa: E402
from controlplane.inventory import Inventory  # noqa: E402
from controlplane.model import Endpoint, Workload  # noqa: E402
from controlplane.settings import Settings  # noqa: E402


def attach_all(hub: Hub, tenants: int) -> None:
    """One connected sidecar per tenant, so every view is built and serialised."""
    for t in range(tenants):
        conn = hub.open(peer=f"bench-{t}")
        conn.workload = Workload(node_id=f"n{t}", namespace=f"ns{t}")
        hub._assign(conn)  # noqa: SLF001 - what attach() does after reading the node
    hub._refresh_snapshots()  # noqa: SLF001


def timed(fn: object) -> tuple[float, float]:
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000])
    parser.add_argument("--tenants", type=int, default=100)
    args = parser.parse_args()
    print(f"{'services':>9} {'views':>6} {'full build':>11} {'1 svc change':>13} "
          f"{'(cpu)':>8} {'re-serialised':>13} {'1 endpoint':>11} {'bytes/view':>11}")
    for n in args.sizes:
        inv = cluster(n, tenants=args.tenants, namespaces=max(args.tenants, 100))
        hub = Hub(Settings())

        def full() -> None:
            hub.set_inventory(inv)
            attach_all(hub, args.tenants)

        wall, _ = timed(full)
        views = len(hub.cache.snapshots())
        size = sum(s.size for s in hub.cache.snapshots()) // max(1, views)
        # One Service changes its cluster IP (tenant t0 sees it).
        svc = inv.services[("ns0", "svc0")]
        changed = dict(inv.services)
        changed[("ns0", "svc0")] = dataclasses.replace(svc, cluster_ips=("10.250.0.1",))
        inv2 = dataclasses.replace(inv, services=changed)
        before = hub.cache.serializations
        w1, c1 = timed(lambda: hub.set_inventory(inv2))
        reserialised = hub.cache.serializations - before
        # One headless endpoint changes (endpoint churn).
        sl = inv2.endpoint_slices[("ns0", "hl0-1")]
        slices = dict(inv2.endpoint_slices)
        slices[("ns0", "hl0-1")] = dataclasses.replace(
            sl, endpoints=(Endpoint(("10.201.0.1",), ready=True, hostname="hl0-0"),)
            + sl.endpoints[1:])
        inv3: Inventory = dataclasses.replace(inv2, endpoint_slices=slices)
        w2, _ = timed(lambda: hub.set_inventory(inv3))
        print(f"{n:>9} {views:>6} {wall * 1000:>9.0f}ms {w1 * 1000:>11.1f}ms "
              f"{c1 * 1000:>6.1f}ms {reserialised:>13} {w2 * 1000:>9.1f}ms {size:>11}")
        assert isinstance(hub.connections, dict) and ViewKey
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
