"""One Service of a wide tenant changed: where the tenant resolver's reload goes.

    nice .venv/bin/python benchmarks/resolver_table_change.py [--services 10000]
        [--edits 10] [--ports] [--code DIR]

The synthetic cluster (benchmarks/synthetic.py: ``--services`` Services over 100
namespaces, 50 headless Services, 100 ServiceEntries) with one ALLOW tenant that sees
every Service; its ``Forwarding`` is built once by the views' code, and one real
``ResolverPool`` starts its unbound. Each edit gives one Service a new cluster IP (a
new table tuple, every other record the same object, as the hub's incremental build
gives them) and times, in this process, the pool's ``prepare`` (the table's files in
Python), its ``apply`` split into each ``unbound-control`` call (a zone's
``auth_zone_reload``: unbound reads the whole file; ``local_datas``) and the rest
(file writes, keys), and then asks the resolver for the name (it must carry the new
IP at once). Without ``--ports`` the Services have no named ports (as
envoy_propagation.py's); with it two each (an SRV record per port: three zone lines
per Service). Medians over the edits; CPU of this process and of unbound apart; the
load average. ``--code DIR`` imports the control plane from another checkout (e.g.
``git archive 391be08 | tar -x -C DIR``: before the tables were made by the names
that changed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--ports", action="store_true", help="two named ports per Service")
    parser.add_argument("--code", default="", help="import the control plane from here")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.code).resolve() if args.code else ROOT))
    sys.path.insert(1, str(ROOT))  # benchmarks/ of this checkout
    import dns.message
    import dns.query

    import benchmarks.synthetic as synthetic
    from benchmarks.procstat import cpu_seconds, load_average, own_cpu_seconds
    from controlplane.core.model import Service, ServicePort
    from controlplane.core.settings import DnsSettings
    from controlplane.dns.views import build_tenant_view, cluster_records
    from controlplane.resolvers.pool import ResolverPool

    print(f"one Service of a wide tenant changed, {args.services} Services"
          f"{' with 2 named ports' if args.ports else ''}, {args.edits} edits, code "
          f"{args.code or 'this checkout'}; load average at start {load_average()}")
    if not args.ports:  # the Services as envoy_propagation.py has them: no named ports
        real = synthetic.Service

        def bare(*a: Any, ports: tuple[ServicePort, ...] = (), **kw: Any) -> Service:
            return real(*a, **kw)
        synthetic.Service = bare  # type: ignore[assignment,misc]
    inv = synthetic.cluster(args.services, wide=1, own=500)
    records = cluster_records(inv, zone="cluster.local")
    fwd = build_tenant_view(inv.policies["wide0"], records, inv, DnsSettings())[0].forward
    assert fwd is not None
    pool = ResolverPool(Path(tempfile.mkdtemp(prefix="rtc-")) / "pool")
    started = time.perf_counter()
    pool.apply({"wide0": fwd})
    print(f"{len(fwd.table)} table entries; resolver started in "
          f"{time.perf_counter() - started:.2f} s")
    res = pool.resolvers["wide0"]
    calls: list[tuple[str, float]] = []
    control = pool._control  # noqa: SLF001 - timed, not changed

    def timed(r: Any, command: str, **kw: Any) -> Any:
        t = time.perf_counter()
        try:
            return control(r, command, **kw)
        finally:
            calls.append((command, time.perf_counter() - t))
    pool._control = timed  # type: ignore[method-assign]  # noqa: SLF001
    index = next(i for i, e in enumerate(fwd.table)
                 if e.record.name.startswith("svc") and e.record.kind == "service")
    rows = []
    cpu0 = (own_cpu_seconds(), cpu_seconds(res.unbound.pid))
    try:
        for i in range(args.edits):
            entry = fwd.table[index + i]
            ip = f"10.66.0.{i + 1}"
            table = list(fwd.table)
            table[index + i] = replace(entry, record=replace(entry.record, ipv4=(ip,)))
            fwd = replace(fwd, table=tuple(table))
            calls.clear()
            t0 = time.perf_counter()
            pool.prepare({"wide0": fwd})
            t1 = time.perf_counter()
            pool.apply({"wide0": fwd})
            t2 = time.perf_counter()
            q = dns.message.make_query(entry.record.name, "A")
            r = dns.query.udp(q, res.paths.listen.host, port=res.paths.listen.port, timeout=10)
            got = [rd.to_text() for rrset in r.answer for rd in rrset]
            assert got == [ip], (entry.record.name, got)
            zones = [s for c, s in calls if c.startswith("auth_zone_reload")]
            rows.append({"prepare": t1 - t0, "apply": t2 - t1,
                         "first zone reload": zones[0] if zones else 0.0,
                         "zone reloads": sum(zones), "reloads": len(zones),
                         "other control": sum(s for c, s in calls
                                              if not c.startswith("auth_zone_reload")),
                         "apply but control": t2 - t1 - sum(s for _, s in calls)})
        cpu = (own_cpu_seconds() - cpu0[0], cpu_seconds(res.unbound.pid) - cpu0[1])
    finally:
        pool.stop_all()
    print("median per edit (ms): " + ", ".join(
        f"{k} {statistics.median(r[k] for r in rows) * (1 if k == 'reloads' else 1000):.1f}"
        for k in rows[0]))
    print("max per edit (ms):    " + ", ".join(
        f"{k} {max(r[k] for r in rows) * (1 if k == 'reloads' else 1000):.1f}"
        for k in rows[0]))
    print(f"prepare + apply: median {statistics.median(r['prepare'] + r['apply'] for r in rows) * 1000:.0f} ms;"
          f" CPU over the edits: this process (the pool) {cpu[0]:.2f} s, unbound {cpu[1]:.2f} s;"
          f" load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
