"""What a DNS-fronted sidecar of a wide tenant costs its pod, by cluster size (issue 21, item 1).

    nice .venv/bin/python benchmarks/wide_tenant.py [--sizes 1000,10000,50000,100000]
        [--modes before,after] [--seconds 5] [--rate 1000]

For each size N: one `controlplane serve` with N Services: 500 in the tenant's own
namespace `wide` (`o<i>.wide.svc.cluster.local`) and the rest over 100 other namespaces
(`svc<i>.ns<k>`, two named ports each, so SRV too), and the DnsPolicy `wide`:
`defaultAction: ALLOW`, every Service visible, forwarding to a world server. Two fronted
sidecars of that tenant (`controlplane sidecar`: kresd + Envoy), so that pages the two
share (binaries, libraries) are not counted as one pod's.

- before: `--front-table-limit 0`, the whole table in every sidecar's Envoy and set
  (the code before issue 21);
- after: the default limit: Envoy holds the tenant's own namespaces (at most the limit),
  the tenant resolver the rest (`translate/envoy_part.py`, docs/wide-tenants.md).

Printed per size and mode: the pod's private memory (Envoy + front, `/proc/PID/smaps_rollup`
Private_Clean + Private_Dirty, the first sidecar, with the second running; and the
second's), RSS, the number of pairs in the set, the tenant resolver's private memory (one
per tenant and replica), the control plane's RSS, time to ready; then dnsperf through the
front (UDP, `-Q rate`) for names of the own namespace and of the others (answered by Envoy
or by the resolver through the hop): p50/p99 ms, answers, lost; Envoy's per-tenant
`downstream_rx_queries` during each run; load average at each line.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.front_path import dnsperf  # noqa: E402
from benchmarks.procstat import load_average  # noqa: E402
from benchmarks.synthetic import service_manifest  # noqa: E402
from controlplane._kit.localrun import ControlPlane  # noqa: E402
from e2e.harness.front_sidecar import FrontSidecar  # noqa: E402
from e2e.harness.realclients import reserve_loopback_dns_address  # noqa: E402
from e2e.harness.refserver import ReferenceDns  # noqa: E402

OWN = 500  # --own
NAMESPACES = 100


def smaps(pid: int) -> dict[str, int]:
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    return kb


def private_mib(pid: int) -> float:
    kb = smaps(pid)
    return (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024


def rss_mib(pid: int) -> float:
    return smaps(pid)["Rss"] / 1024


def own_manifest(i: int) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: o{i}, namespace: wide}}\n"
            f"spec: {{clusterIP: 10.90.{i // 250}.{i % 250 + 1}, ports: "
            "[{name: http, port: 80}]}\n")


def write_manifests(directory: Path, services: int, world: str, *, own: int) -> None:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: wide, labels: {tenant: wide}}\n"]
    docs += [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}}}\n"
             for n in range(NAMESPACES)]
    docs.append("apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
                "metadata: {name: wide}\nspec:\n"
                "  namespaceSelector: {matchLabels: {tenant: wide}}\n"
                f"  server: {{address: '{world}'}}\n  policy: {{defaultAction: ALLOW}}\n")
    (directory / "base.yaml").write_text("---\n".join(docs))
    own = min(own, services)
    (directory / "own.yaml").write_text("---\n".join(own_manifest(i) for i in range(own)))
    chunk = 10_000
    for first in range(0, services - own, chunk):
        last = min(services - own, first + chunk)
        (directory / f"svc-{first}.yaml").write_text("---\n".join(
            service_manifest(i, namespaces=NAMESPACES) for i in range(first, last)))


def children(pid: int) -> dict[str, int]:
    out = {}
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                          check=False).stdout.split()
    for kid in map(int, kids):
        cmd = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "kresd" in cmd:
            out["front"] = kid
        elif "envoy" in cmd:
            out["envoy"] = kid
    return out


def run(size: int, mode: str, args: argparse.Namespace, work: Path) -> None:
    started: list[Any] = []
    try:
        world = ReferenceDns(records=["x.world.example. 300 IN A 198.18.0.1"],
                             local_zones=["world.example"],
                             address=reserve_loopback_dns_address(), workdir=work / "world")
        started.append(world.start())
        source = work / "manifests"
        source.mkdir()
        write_manifests(source, size, f"{world.address.host}:53", own=args.own)
        limit = ["--front-table-limit", "0"] if mode == "before" else []
        cp = ControlPlane(source=source, workdir=work / "cp", extra_args=limit)
        cp.workdir.mkdir()
        t0 = time.monotonic()
        started.append(cp.start(timeout=600))
        ready = time.monotonic() - t0
        sidecars = []
        for n in range(2):
            sidecar = FrontSidecar(xds_address=cp.xds_address, node_id=f"pod{n}.wide",
                                   namespace="wide", labels={"app": f"p{n}"},
                                   address=reserve_loopback_dns_address(),
                                   workdir=work / f"pod{n}")
            started.append(sidecar)
            sidecar.start(expect_pair="A o0.wide.svc.cluster.local.\n", timeout=600)
            sidecars.append(sidecar)
        first = sidecars[0]
        pids = [children(s.process.pid if s.process else 0) for s in sidecars]
        pairs = sum(1 for line in first.set_body().splitlines() if line != "* .")
        [resolver] = [r for r in cp.get("/api/v1/resolvers")["resolvers"]
                      if r.get("tenant") == "wide"]
        # a few queries first so both processes have served (warm, as in a running pod)
        own = work / "own.txt"
        own.write_text("".join(f"o{i}.wide.svc.cluster.local A\n"
                               for i in range(min(args.own, size))))
        other, cold = work / "other.txt", work / "cold.txt"
        rest = max(0, size - args.own)
        others = list(range(0, rest, max(1, rest // 1000)))[:1000]
        other.write_text("".join(f"svc{i}.ns{i % NAMESPACES}.svc.cluster.local A\n"
                                 for i in others) or own.read_text())
        # names no query asked yet (the front's cache is cold): each asked once
        cold.write_text("".join(f"svc{i + 1}.ns{(i + 1) % NAMESPACES}.svc.cluster.local A\n"
                                for i in others if i + 1 < rest) or own.read_text())
        for queries in (own, other):
            dnsperf(first.host, 53, queries, seconds=1, rate=args.rate, tcp=False, watch={})
        envoy, front = pids[0]["envoy"], pids[0]["front"]
        pod = private_mib(envoy) + private_mib(front)
        pod2 = private_mib(pids[1]["envoy"]) + private_mib(pids[1]["front"])
        cp_pid = cp.process.pid if cp.process else 0
        print(f"{size:>7} {mode:6} pod private {pod:6.1f} MiB (Envoy {private_mib(envoy):6.1f}"
              f" + front {private_mib(front):5.1f}; 2nd pod {pod2:6.1f}); RSS Envoy "
              f"{rss_mib(envoy):6.1f} front {rss_mib(front):5.1f}; set {pairs} pairs; "
              f"resolver {private_mib(int(resolver['pid'])):6.1f} MiB private; control plane "
              f"RSS {rss_mib(cp_pid):6.0f} MiB, ready {ready:5.1f} s; load {load_average()}",
              flush=True)
        runs = (("cold", cold, 1.0), ("own", own, args.seconds), ("other", other, args.seconds))
        for kind, queries, seconds in runs:
            before = first.table_queries("wide")
            r = dnsperf(first.host, 53, queries, seconds=seconds, rate=args.rate,
                        tcp=False, watch={"envoy": envoy, "front": front})
            by_envoy = first.table_queries("wide") - before
            print(f"{'':7} {mode:6} {kind:5} names UDP: sent {r['sent']} lost {r['lost']} "
                  f"NOERROR {r['noerror']} p50 {r['p50']:.3f} ms p99 {r['p99']:.3f} ms; "
                  f"Envoy's dns_filter counted {by_envoy}; load {load_average()}", flush=True)
    finally:
        for process in reversed(started):
            process.stop()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,50000,100000")
    parser.add_argument("--modes", default="before,after")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--own", type=int, default=OWN,
                        help="Services in the tenant's own namespace (default %(default)s)")
    args = parser.parse_args()
    print(f"wide tenant per-pod memory: {args.own} own Services, the rest in {NAMESPACES} other "
          f"namespaces; 2 fronted sidecars; load average {load_average()}", flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in args.modes.split(","):
            work = Path(tempfile.mkdtemp(prefix=f"wide-{size}-{mode}-"))
            try:
                run(size, mode, args, work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
