"""One Service of a wide tenant changed: where the tenant resolver's reload goes.

    nice .venv/bin/python benchmarks/resolver_table_change.py [--services 10000]
        [--edits 10] [--ports] [--code DIR] [--table-updates reload|ixfr]

The synthetic cluster (benchmarks/synthetic.py: ``--services`` Services over 100
namespaces, 50 headless Services, 100 ServiceEntries) with one ALLOW tenant that sees
every Service; its ``Forwarding`` is built once by the views' code, and one real
``ResolverPool`` starts its unbound. Each edit gives one Service a new cluster IP (a
new table tuple, every other record the same object, as the hub's incremental build
gives them) and times, in this process, the pool's ``prepare`` (the table's files in
Python), its ``apply`` split into each ``unbound-control`` call (a zone's
``auth_zone_reload``: unbound reads the whole file; ``local_datas``) and the rest
(file writes, keys), and then asks the resolver for the name until it carries the new IP
(polled every 0.5 ms: with ``--table-updates ixfr`` ``apply`` returns before unbound has
the change, which it takes by IXFR from the pool's primary; with ``reload``, today's
path, the first answer has it). "change->answer" is from the start of ``prepare`` to that
answer. Without ``--ports`` the Services have no named ports (as
envoy_propagation.py's); with it two each (an SRV record per port: three zone lines
per Service). Medians over the edits; CPU of this process and of unbound apart; the
load average. ``--code DIR`` imports the control plane from another checkout (e.g.
``git archive 391be08 | tar -x -C DIR``: before the tables were made by the names
that changed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UNITLESS = ("reloads", "polls")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--edits", type=int, default=10)
    parser.add_argument("--ports", action="store_true", help="two named ports per Service")
    parser.add_argument("--code", default="", help="import the control plane from here")
    parser.add_argument("--pause", type=float, default=0.0,
                        help="seconds between one edit's answer and the next edit (changes "
                             "spaced as the hub's debounce spaces them; unbound writes the "
                             "zone file back after each IXFR)")
    parser.add_argument("--table-updates", default="reload", choices=("reload", "ixfr"),
                        help="how a change reaches the resolver (ixfr: the pool's primary)")
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
          f"{' with 2 named ports' if args.ports else ''}, {args.edits} edits, "
          f"--table-updates {args.table_updates}, code "
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
    extra: dict[str, Any] = {}
    try:  # (code from before the setting: the reload path only)
        from controlplane.core.settings import ResolverTableUpdates
    except ImportError:
        if args.table_updates != "reload":
            raise SystemExit(f"{args.code}: no --resolver-table-updates there") from None
    else:
        extra["table_updates"] = ResolverTableUpdates(args.table_updates)
    pool = ResolverPool(Path(tempfile.mkdtemp(prefix="rtc-")) / "pool", **extra)
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
            if i and args.pause:
                time.sleep(args.pause)  # the spacing of the changes, not a synchronisation
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
            polls = 0
            while True:
                r = dns.query.udp(q, res.paths.listen.host, port=res.paths.listen.port,
                                  timeout=10)
                polls += 1
                got = [rd.to_text() for rrset in r.answer for rd in rrset]
                if got == [ip]:
                    break
                if time.perf_counter() - t2 > 30:
                    raise SystemExit(f"{entry.record.name}: still {got} after 30 s")
                time.sleep(0.0005)  # a poll, not a synchronisation: the answer decides
            t3 = time.perf_counter()
            if os.environ.get("RTC_CALLS"):
                print([(c, round(s_ * 1000, 1)) for c, s_ in calls])
            zones = [s for c, s in calls if c.startswith("auth_zone_reload")]
            rows.append({"change->answer": t3 - t0, "apply->answer": t3 - t2,
                         "polls": polls, "prepare": t1 - t0, "apply": t2 - t1,
                         "first zone reload": zones[0] if zones else 0.0,
                         "zone reloads": sum(zones), "reloads": len(zones),
                         "other control": sum(s for c, s in calls
                                              if not c.startswith("auth_zone_reload")),
                         "apply but control": t2 - t1 - sum(s for _, s in calls)})
        cpu = (own_cpu_seconds() - cpu0[0], cpu_seconds(res.unbound.pid) - cpu0[1])
    finally:
        pool.stop_all()
    print("median per edit (ms): " + ", ".join(
        f"{k} {statistics.median(r[k] for r in rows) * (1 if k in UNITLESS else 1000):.1f}"
        for k in rows[0]))
    print("max per edit (ms):    " + ", ".join(
        f"{k} {max(r[k] for r in rows) * (1 if k in UNITLESS else 1000):.1f}"
        for k in rows[0]))
    print(f"change->answer p50 {statistics.median(r['change->answer'] for r in rows) * 1000:.1f} "
          f"ms, max {max(r['change->answer'] for r in rows) * 1000:.1f} ms; zone reloads "
          f"{pool.table_reloads}, IXFR changes {getattr(pool, 'table_transfers', 0)}; "
          f"unbound CPU {cpu[1] / len(rows) * 1000:.1f} ms per edit")
    print(f"prepare + apply: median {statistics.median(r['prepare'] + r['apply'] for r in rows) * 1000:.0f} ms;"
          f" CPU over the edits: this process (the pool) {cpu[0]:.2f} s, unbound {cpu[1]:.2f} s;"
          f" load average at end {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
