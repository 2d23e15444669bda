"""What the tenant resolver's query reports cost its answers (dnstap, docs/tenant-resolver.md).

    .venv/bin/python benchmarks/resolver_reports.py [--seconds 8] [--runs 3] [--rate 5000]

One tenant resolver started by the real ``ResolverPool`` from a ``Forwarding`` built by
``build_tenant_view`` (defaultAction WARN, blacklist ``*.foo.com``: the view logs queries),
its server a dnsmasq answering ``*.bench.example``. dnsperf on loopback (UDP, 4 clients,
``-q 200``, ``-t 2``) asks 1,000 names: 60% ``nameN.bench.example A`` and 20% ``TXT``
(cached after the warm-up: WARN), 20% ``xN.foo.com`` MX/TXT/AAAA (RPZ: denied). Cases,
in turn, each ``--runs`` times, at full speed and at ``--rate`` q/s:

- off: the resolver's config has no ``dnstap:`` section (the cost floor);
- queued: the ``dnstap:`` section, nobody reading (a tenant that logs nothing: unbound
  keeps a bounded backlog and drops the rest);
- reported: the pool's reader on its thread and every answer classified into the
  ``QueryLog`` (``ResolverReports``), as ``controlplane serve`` does;
- log-replies: no dnstap, ``unbound-control set_option log-replies: yes`` (one line per
  answer to the resolver's log file; the alternative we did not choose), nobody reading.

Figures: queries/s and lost queries (dnsperf), unbound's CPU per 1,000 queries
(``/proc/PID/stat``), this process's CPU (the reader threads, with the structured log
line of each WARN and deny record formatted and written, as ``serve`` does, to a file)
per 1,000 reports, and how many answers were reported (the rest unbound dropped: its
queue is bounded). Prints figures only; not a test.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane._kit.localrun import Dnsmasq, find_tool  # noqa: E402
from controlplane.core.inventory import Inventory  # noqa: E402
from controlplane.core.model import DefaultAction, Namespace  # noqa: E402
from controlplane.core.settings import DnsSettings  # noqa: E402
from controlplane.dns.views import Forwarding, build_tenant_view, cluster_records  # noqa: E402
from controlplane.policy.selection import CompiledPolicy  # noqa: E402
from controlplane.resolvers.dnstap import ResolverReply  # noqa: E402
from controlplane.resolvers.pool import ResolverPool  # noqa: E402
from controlplane.telemetry.logs import JsonFormatter  # noqa: E402
from controlplane.telemetry.querylog import QueryLog  # noqa: E402
from controlplane.telemetry.resolver_reports import ResolverReports  # noqa: E402
from controlplane.translate.unbound import ResolverPaths  # noqa: E402
from tests.factories import policy  # noqa: E402

CASES = ("off", "queued", "reported", "log-replies")


class NoDnstapPool(ResolverPool):
    """The pool with the ``dnstap:`` section left out (the "off" and "log-replies" cases)."""

    def _prepare(self, tenant: str, fwd: Forwarding) -> tuple[Path, ResolverPaths]:
        directory, paths = super()._prepare(tenant, fwd)
        return directory, replace(paths, dnstap_socket="")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100.0


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def dnsperf(port: int, queries: Path, *, seconds: float, rate: int | None) -> dict[str, float]:
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l",
            str(seconds), "-c", "4", "-q", "200", "-t", "2"]
    if rate:
        argv += ["-Q", str(rate)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    sent = float(re.search(r"Queries sent:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    lost = float(re.search(r"Queries lost:\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {"sent": sent, "lost": lost, "qps": qps, "avg_ms": avg * 1000}


def settle(counter: list[int], quiet: float = 0.5) -> None:
    """Until ``counter`` has not moved for ``quiet`` seconds."""
    last, since = counter[0], time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.05)
        if counter[0] != last:
            last, since = counter[0], time.monotonic()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000)
    args = ap.parse_args()
    if find_tool("dnsperf") is None:
        sys.exit("dnsperf is not installed (apt-get install dnsperf)")
    work = Path(tempfile.mkdtemp(prefix="rr-bench-"))
    # Every WARN and deny record logs a line, as under ``controlplane serve``.
    handler = logging.FileHandler(work / "controlplane.log")
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    upstream = Dnsmasq({"bench.example": "192.0.2.1"}, work).start()
    pol = policy("a", {"tenant": "a"}, server_address=f"127.0.0.1:{upstream.port}",
                 default_action=DefaultAction.WARN, blacklist=("*.foo.com",))
    inv = Inventory.of([Namespace("a", (("tenant", "a"),)), pol])
    view = build_tenant_view(pol, cluster_records(inv, zone="cluster.local"), inv,
                             DnsSettings())[0]
    assert view.forward is not None and view.forward.log_queries
    quiet = {view.tenant: replace(view.forward, log_queries=False)}
    logging_ = {view.tenant: view.forward}
    qlog = QueryLog(lambda: {view.tenant: CompiledPolicy.of(pol)}, keep=1000)
    reports = ResolverReports(qlog)
    reported = [0]
    sent_at: list[float] = []  # when each reported answer was sent (unbound's clock)

    def sink(tenant: str, reply: ResolverReply) -> None:
        reported[0] += 1
        sent_at.append(reply.time)
        reports.answer(tenant=tenant, source=reply.source, name=reply.name,
                       qtype=reply.type, rcode=reply.rcode)

    rng = random.Random(7)
    lines = []
    for i in range(1000):
        roll = rng.random()
        if roll < 0.6:
            lines.append(f"name{i}.bench.example A")
        elif roll < 0.8:
            lines.append(f"name{i}.bench.example TXT")
        else:
            lines.append(f"x{i}.foo.com {rng.choice(['MX', 'TXT', 'AAAA'])}")
    queries = work / "queries.txt"
    queries.write_text("\n".join(lines) + "\n")

    print(f"# dnsperf -s 127.0.0.1 -p PORT -d queries.txt -l {args.seconds:g} -c 4 -q 200 "
          f"-t 2 [-Q {args.rate}]; {args.runs} runs per case, cases in turn")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for case in CASES:
            pool_cls = NoDnstapPool if case in ("off", "log-replies") else ResolverPool
            pool = pool_cls(work / f"pool-{case}-{run}")
            if case == "reported":
                pool.report_to(sink)
            try:
                port = pool.apply(logging_ if case == "reported" else quiet)["a"].port
                res = pool.resolvers["a"]
                if case == "log-replies":
                    pool._control(res, "set_option log-replies: yes")  # noqa: SLF001
                dnsperf(port, queries, seconds=2, rate=None)  # warm the cache
                settle(reported)
                for mode, rate in (("full", None), ("rate", args.rate)):
                    before = (cpu_seconds(res.unbound.pid), own_cpu(), reported[0])
                    start = time.time()
                    figures = dnsperf(port, queries, seconds=args.seconds, rate=rate)
                    end = time.time()
                    settle(reported)  # the reader catches up with unbound's queue
                    unbound_cpu = cpu_seconds(res.unbound.pid) - before[0]
                    figures["unbound_ms_per_1k"] = unbound_cpu * 1e6 / figures["sent"]
                    got = reported[0] - before[2]
                    # Answers sent during this run (unbound's backlog of earlier runs aside).
                    within = sum(1 for t in sent_at if start - 0.01 <= t <= end + 0.01)
                    figures["reported"] = within / figures["sent"]
                    figures["reader_ms_per_1k"] = ((own_cpu() - before[1]) * 1e6 / got
                                                   if got else 0.0)
                    results.setdefault((case, mode), []).append(figures)
            finally:
                pool.stop_all()
    upstream.stop()
    print("| case | mode | queries/s | avg latency ms | lost | unbound CPU ms / 1k queries | "
          "reported | reader CPU ms / 1k reports |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("full", "rate"):
        for case in CASES:
            rows = results[(case, mode)]

            def span(key: str, fmt: str, rows: list[dict[str, float]] = rows) -> str:
                values = sorted(r[key] for r in rows)
                return (fmt.format(values[0]) if values[0] == values[-1]
                        else f"{fmt.format(values[0])}-{fmt.format(values[-1])}")
            print(f"| {case} | {'unthrottled' if mode == 'full' else f'-Q {args.rate}'} | "
                  f"{span('qps', '{:,.0f}')} | {span('avg_ms', '{:.3f}')} | "
                  f"{span('lost', '{:.0f}')} | "
                  f"{span('unbound_ms_per_1k', '{:.1f}')} | {span('reported', '{:.1%}')} | "
                  f"{span('reader_ms_per_1k', '{:.0f}') if case == 'reported' else ''} |")


if __name__ == "__main__":
    main()
