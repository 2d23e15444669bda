"""Data plane: Envoy with a 10,000-name table pushed by us, against dnsmasq, same records.

    .venv/bin/python benchmarks/dataplane.py [--names 10000] [--seconds 10]

Both servers get the same names and addresses and the same dnsperf run on
loopback (bounded by --seconds), each single-threaded (Envoy --concurrency 1;
dnsmasq is single-threaded), so the figures compare per core. Prints dnsperf's
queries per second, average latency and lost queries, and Envoy's RSS.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane._kit.localrun import (  # noqa: E402
    ControlPlane,
    Dnsmasq,
    Envoy,
    find_tool,
    rss_mb,
    wait_for,
)
from e2e.harness.dnsquery import query  # noqa: E402


def dnsperf(port: int, queries: Path, seconds: float, clients: int) -> dict[str, float]:
    tool = find_tool("dnsperf")
    if tool is None:
        raise SystemExit("dnsperf is required (apt-get install dnsperf)")
    out = subprocess.run([tool, "-s", "127.0.0.1", "-p", str(port), "-d", str(queries),
                          "-l", str(seconds), "-c", str(clients), "-q", "200", "-t", "2"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def grab(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {"qps": grab(r"Queries per second:\s+([\d.]+)"),
            "latency_ms": grab(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
            "lost": grab(r"Queries lost:\s+(\d+)"),
            "completed": grab(r"Queries completed:\s+(\d+)")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--names", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dataplane-"))
    started: list[object] = []
    try:
        records = {f"svc{i}.bench.svc.cluster.local": f"10.{100 + i // 62500}."
                   f"{i // 250 % 250}.{i % 250 + 1}" for i in range(args.names)}
        manifests = work / "m"
        manifests.mkdir()
        docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: bench, labels: "
                "{tenant: bench}}\n",
                "apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\nmetadata: "
                "{name: bench}\nspec:\n  namespaceSelector: {matchLabels: {tenant: bench}}\n"
                "  policy: {whitelist: ['*.bench.svc.cluster.local'], defaultAction: DENY}\n"]
        docs += [f"apiVersion: v1\nkind: Service\nmetadata: {{name: {n.split('.')[0]}, "
                 f"namespace: bench}}\nspec: {{clusterIP: {ip}}}\n" for n, ip in records.items()]
        (manifests / "bench.yaml").write_text("---\n".join(docs))
        cp = ControlPlane(manifests, work, extra_args=["--no-aaaa-mapped",
                                                       "--log-level", "warning"]).start()
        started.append(cp)
        envoy = Envoy(node_id="bench", namespace="bench", labels={}, xds_address=cp.xds_address,
                      workdir=work, concurrency=1)
        envoy_bin = find_tool("envoy")
        assert envoy_bin
        envoy.start(timeout=120)
        started.append(envoy)
        sample = random.Random(7).sample(sorted(records), min(1000, len(records)))
        wait_for(lambda: query(envoy.dns_port, sample[0])[1] == [records[sample[0]]],
                 timeout=60, what="Envoy to answer")
        hosts = work / "hosts"
        hosts.write_text("".join(f"{ip} {n}\n" for n, ip in records.items()))
        dm = Dnsmasq({}, work)
        dm.start()
        started.append(dm)
        # dnsmasq gets the same records from a hosts file (restart it with --addn-hosts).
        dm.stop()
        assert dm.process is not None
        dm.process.argv = [a for a in dm.process.argv if a != "--log-queries"] + [
            f"--addn-hosts={hosts}", "--cache-size=20000"]
        dm.process.start()
        wait_for(lambda: query(dm.port, sample[0])[1] == [records[sample[0]]], timeout=30,
                 what="dnsmasq to answer")
        qfile = work / "queries"
        qfile.write_text("".join(f"{n} A\n" for n in sample))
        results = {}
        for label, port in (("envoy", envoy.dns_port), ("dnsmasq", dm.port)):
            results[label] = dnsperf(port, qfile, args.seconds, args.clients)
        envoy_rss = rss_mb(envoy.process.pid) if envoy.process else float("nan")
        print(f"{args.names} names, dnsperf {args.seconds:.0f}s, {args.clients} clients, "
              "loopback, one worker each")
        print(f"{'server':>8} {'qps':>10} {'avg latency':>12} {'lost':>6} {'completed':>10}")
        for label, r in results.items():
            print(f"{label:>8} {r['qps']:>10.0f} {r['latency_ms']:>10.3f}ms {r['lost']:>6.0f} "
                  f"{r['completed']:>10.0f}")
        print(f"Envoy RSS with the table: {envoy_rss:.0f} MB")
    finally:
        for p in reversed(started):
            p.stop()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
