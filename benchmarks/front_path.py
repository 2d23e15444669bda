"""The sidecar's DNS path before and after the DNS front, in the same run (issue 18).

    .venv/bin/python benchmarks/front_path.py [--seconds 10] [--rate 2000] [--runs 1]

One `controlplane serve` (tenant `bench`: 200 Services, forwarding to its own server, an
unbound holding 1,000 names under bench.example, TTL 300) and two sidecars of that tenant:

- before: Envoy alone (`controlplane bootstrap` + `envoy`, as before issue 18): its DNS
  listener answers table names and forwards the rest to the tenant resolver; UDP only;
- after: `controlplane sidecar` (kresd front on 127.0.0.X:53 + Envoy): table pairs to
  Envoy, everything else through Envoy's hop to the tenant resolver, UDP and TCP.

dnsperf at a fixed rate (`-Q`), one client, per-query latencies (`-v`): p50/p99, answers,
timeouts; CPU of the front and of Envoy per 10,000 queries; private memory (smaps_rollup
Private_Clean + Private_Dirty) of each sidecar process and of the tenant resolver.
Forwarded names are warmed first, so they are cache hits (in the front's cache for the
"after" path, in the resolver's for "before").
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.procstat import cpu_seconds, load_average  # noqa: E402
from controlplane._kit.localrun import ControlPlane, Envoy, find_tool  # noqa: E402
from e2e.harness.front_sidecar import FrontSidecar  # noqa: E402
from e2e.harness.realclients import reserve_loopback_dns_address  # noqa: E402
from e2e.harness.refserver import ReferenceDns  # noqa: E402

SERVICES = 200
EXTERNAL = 1000


def private_mib(pid: int) -> float:
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    return (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024


def manifests(world: str) -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: bench, labels: {tenant: bench}}"]
    docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bench}}\n"
             f"spec: {{clusterIP: 10.100.{i // 250}.{i % 250 + 1}, ports: [{{port: 80}}]}}"
             for i in range(SERVICES)]
    docs.append("apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
                "metadata: {name: bench}\nspec:\n"
                "  namespaceSelector: {matchLabels: {tenant: bench}}\n"
                f"  server: {{address: '{world}'}}\n  policy: {{defaultAction: ALLOW}}")
    return "\n---\n".join(docs) + "\n"


def dnsperf(host: str, port: int, queries: Path, *, seconds: float, rate: int, tcp: bool,
            watch: dict[str, int]) -> dict[str, Any]:
    tool = find_tool("dnsperf")
    if tool is None:
        raise SystemExit("dnsperf is required (apt-get install dnsperf)")
    argv = [tool, "-s", host, "-p", str(port), "-d", str(queries), "-l", str(seconds),
            "-c", "1", "-q", "100", "-t", "2", "-Q", str(rate), "-v"]
    if tcp:
        argv += ["-m", "tcp"]
    before = {k: cpu_seconds(p) for k, p in watch.items()}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60,
                          check=False)
    cpu = {k: cpu_seconds(p) - before[k] for k, p in watch.items()}
    lines = [line for line in done.stdout.splitlines() if line.startswith("> ")]
    latencies = sorted(float(line.rsplit(" ", 1)[1]) for line in lines
                       if not line.startswith("> T "))
    noerror = sum(1 for line in lines if line.split(" ", 2)[1] == "NOERROR")

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 \
            if latencies else float("nan")

    sent = re.search(r"Queries sent:\s+(\d+)", done.stdout)
    lost = re.search(r"Queries lost:\s+(\d+)", done.stdout)
    n = int(sent.group(1)) if sent else 0
    return {"sent": n, "lost": int(lost.group(1)) if lost else -1, "noerror": noerror,
            "p50": pct(0.5), "p99": pct(0.99),
            "cpu_per_10k": {k: 1000 * v * 10_000 / max(1, n) for k, v in cpu.items()}}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="front-path-"))
    started: list[Any] = []
    try:
        world = ReferenceDns(
            records=[f"n{i}.bench.example. 300 IN A 198.18.{i // 250}.{i % 250 + 1}"
                     for i in range(EXTERNAL)],
            local_zones=["bench.example"], address=reserve_loopback_dns_address(),
            workdir=work / "world", max_udp_size=4096)
        started.append(world.start())
        source = work / "manifests"
        source.mkdir()
        (source / "bench.yaml").write_text(manifests(f"{world.address.host}:53"))
        cp = ControlPlane(source=source, workdir=work / "cp")
        cp.workdir.mkdir()
        started.append(cp.start())
        (work / "before").mkdir()
        before = Envoy(node_id="before.bench", namespace="bench", labels={"app": "b"},
                       xds_address=cp.xds_address, workdir=work / "before", concurrency=1)
        started.append(before.start())
        after = FrontSidecar(xds_address=cp.xds_address, node_id="after.bench",
                             namespace="bench", labels={"app": "a"},
                             address=reserve_loopback_dns_address(), workdir=work / "after")
        started.append(after)
        after.start(expect_pair="A s0.bench.svc.cluster.local.\n")
        table = work / "table.txt"
        table.write_text("".join(f"s{i}.bench.svc.cluster.local A\n" for i in range(SERVICES)))
        forwarded = work / "forwarded.txt"
        forwarded.write_text("".join(f"n{i}.bench.example A\n" for i in range(EXTERNAL)))
        front_pid = after_envoy_pid = 0
        [resolver] = cp.get("/api/v1/resolvers")["resolvers"]
        kids = subprocess.run(["pgrep", "-P", str(after.process.pid if after.process else 0)],
                              capture_output=True, text=True, check=False).stdout.split()
        for pid in map(int, kids):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            if "kresd" in cmd:
                front_pid = pid
            elif "envoy" in cmd:
                after_envoy_pid = pid
        before_pid = before.process.pid if before.process else 0
        assert front_pid and after_envoy_pid and before_pid, (front_pid, after_envoy_pid)
        paths = [("before", "udp", "127.0.0.1", before.dns_port, {"envoy": before_pid}),
                 ("after", "udp", after.host, 53, {"front": front_pid, "envoy": after_envoy_pid}),
                 ("after", "tcp", after.host, 53, {"front": front_pid, "envoy": after_envoy_pid})]
        # Warm the caches: every forwarded name once on each path.
        for _, transport, host, port, watch in paths:
            dnsperf(host, port, forwarded, seconds=2, rate=2000, tcp=transport == "tcp",
                    watch=watch)
        print(f"front path benchmark: dnsperf -c 1 -q 100 -t 2 -Q {args.rate} -l "
              f"{args.seconds:g} -v; {SERVICES} table names, {EXTERNAL} forwarded names "
              f"(cache hits); load average before: {load_average()}")
        print(f"{'path':7} {'proto':5} {'names':9} {'sent':>6} {'lost':>4} {'NOERROR':>7} "
              f"{'p50 ms':>7} {'p99 ms':>7}  CPU ms per 10k queries")
        for _ in range(args.runs):
            for kind, queries in (("table", table), ("forwarded", forwarded)):
                for path, transport, host, port, watch in paths:
                    r = dnsperf(host, port, queries, seconds=args.seconds, rate=args.rate,
                                tcp=transport == "tcp", watch=watch)
                    cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_per_10k"].items())
                    print(f"{path:7} {transport:5} {kind:9} {r['sent']:6d} {r['lost']:4d} "
                          f"{r['noerror']:7d} {r['p50']:7.3f} {r['p99']:7.3f}  {cpu}")
        print("private memory, MiB (smaps_rollup, after the runs):")
        print(f"  before: Envoy {private_mib(before_pid):.1f}")
        print(f"  after:  Envoy {private_mib(after_envoy_pid):.1f} + front (kresd) "
              f"{private_mib(front_pid):.1f}")
        print(f"  per tenant: its resolver (unbound, {SERVICES} table names) "
              f"{private_mib(int(resolver['pid'])):.1f}")
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
