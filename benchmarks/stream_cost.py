"""What one ADS connection costs the control plane: memory and CPU per stream.

    .venv/bin/python benchmarks/stream_cost.py [--steps 1000 2000] [--services 1000]
        [--tenants 10] [--processes 2] [--storms 1] [--extensions N] [--code DIR]

Starts the control plane on examples/ plus --services Services over --tenants
namespaces (one DENY tenant each, as ``streams.py --tenants``), then connects the
simulated sidecars of ``ads_client.py`` (each on its own TCP connection) in steps up
to each of --steps, waiting after each until every stream has its listener and the
server is idle. Per step: control-plane RSS, anonymous memory (``smaps_rollup``),
the server CPU the step's connects took, and both per stream. Then kills every
client, waits until the server has seen every stream go (RSS after the drop) and
reconnects them all at once --storms times (a storm: time until all are served
again, server CPU per stream, RSS peak). Server and client CPU apart, with the load
average. Small enough to compare two checkouts (--code) on a shared machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.checkout import start_control_plane  # noqa: E402
from benchmarks.procstat import cpu_seconds, load_average  # noqa: E402
from controlplane._kit.localrun import ControlPlane, http_text, rss_mb, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Group:
    """Client processes for streams [first, first + count), and how many are served."""

    def __init__(self, address: str, first: int, count: int, processes: int,
                 namespaces: str, extensions: int = 0) -> None:
        per = -(-count // processes)
        self.served: set[str] = set()
        self.lock = threading.Lock()
        self.procs = []
        for i in range(processes):
            n = min(per, first + count - (first + i * per))
            if n <= 0:
                break
            self.procs.append(subprocess.Popen(
                [sys.executable, str(ROOT / "benchmarks" / "ads_client.py"), "--address",
                 address, "--first", str(first + i * per), "--count", str(n), "--seconds",
                 "600", "--namespaces", namespaces, "--extensions", str(extensions)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in self.procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"c"' in line:
                cid = line.split('"c": "', 1)[1].split('"', 1)[0]
                with self.lock:
                    self.served.add(cid)

    def count(self) -> int:
        with self.lock:
            return len(self.served)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def idle(pid: int, *, quiet: float = 0.05, window: float = 1.0) -> None:
    """Wait until the server used under ``quiet`` of a core over ``window`` seconds."""
    def calm() -> bool:
        before = cpu_seconds(pid)
        time.sleep(window)
        return cpu_seconds(pid) - before <= quiet * window
    wait_for(calm, timeout=120, interval=0.0, what="the server to go idle")


def connected(cp: ControlPlane) -> float:
    return sum(float(line.rsplit(" ", 1)[1])
               for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith("dnscp_connected_proxies"))


def manifests_for(work: Path, services: int, tenants: int) -> tuple[Path, str]:
    manifests = work / "manifests"
    shutil.copytree(ROOT / "examples", manifests)
    (manifests / "bulk.yaml").write_text("---\n".join(
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: bulk{i % tenants}}}\n"
        f"spec: {{clusterIP: 10.{200 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}}}\n"
        for i in range(services)))
    (manifests / "wide.yaml").write_text("---\n".join(
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: w{t}, labels: {{tenant: w{t}}}}}\n"
        "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
        f"metadata: {{name: w{t}}}\nspec:\n  namespaceSelector: {{matchLabels: {{tenant: w{t}}}}}\n"
        f'  policy: {{whitelist: ["*.bulk{t}.svc.cluster.local"], defaultAction: DENY}}\n'
        for t in range(tenants)))
    return manifests, ",".join(f"w{t}" for t in range(tenants))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 2000])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--storms", type=int, default=1)
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    parser.add_argument("--extensions", type=int, default=0,
                        help="entries in each simulated node's extensions list (a real "
                        "Envoy 1.40 sends 516: 60 KB; ads_client.py)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="stream-cost-"))
    manifests, namespaces = manifests_for(work, args.services, args.tenants)
    print(f"stream cost: {args.services} Services, {args.tenants} tenants, {args.extensions} "
          f"extensions per node; 2 shared cores; "
          f"load average at start {load_average()}; code {args.code or ROOT}")
    cp = start_control_plane(manifests, work, code=args.code,
                             extra_args=["--log-level", "warning"])
    assert cp.process is not None
    pid = cp.process.pid
    groups: list[Group] = []
    try:
        idle(pid)
        rss0, anon0 = rss_mb(pid), anon_mb(pid)
        print(f"idle: RSS {rss0:.0f} MB, anonymous {anon0:.0f} MB")
        have = 0
        for target in args.steps:
            cpu0, t0 = cpu_seconds(pid), time.time()
            group = Group(cp.xds_address, have, target - have, args.processes, namespaces,
                          args.extensions)
            groups.append(group)
            wait_for(lambda g=group, n=target - have: g.count() >= n, timeout=300,
                     interval=0.1, what=f"{target} streams served")
            took = time.time() - t0
            idle(pid)
            cpu = cpu_seconds(pid) - cpu0
            rss, anon = rss_mb(pid), anon_mb(pid)
            print(f"{target} streams: served in {took:.1f} s; server CPU for {target - have} "
                  f"connects {cpu:.2f} s ({cpu / (target - have) * 1000:.2f} ms each); RSS "
                  f"{rss:.0f} MB, anonymous {anon:.0f} MB: {(rss - rss0) * 1024 / target:.1f} / "
                  f"{(anon - anon0) * 1024 / target:.1f} KB per stream over idle; clients "
                  f"{sum(g.cpu() for g in groups):.1f} s CPU in all")
            have = target
        for storm in range(args.storms):
            for g in groups:
                g.kill()
            wait_for(lambda: connected(cp) == 0, timeout=120, what="every stream gone")
            idle(pid)
            drop = rss_mb(pid)
            peak = [drop]
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.05):
                    peak.append(rss_mb(pid))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            cpu0, t0 = cpu_seconds(pid), time.time()
            groups = [Group(cp.xds_address, 0, have, args.processes, namespaces,
                            args.extensions)]
            wait_for(lambda: groups[0].count() >= have, timeout=300, interval=0.1,
                     what="the storm's streams served")
            took = time.time() - t0
            cpu = cpu_seconds(pid) - cpu0
            clients = groups[0].cpu()
            stop.set()
            sampler.join()
            print(f"storm {storm + 1} of {have}: all served again in {took:.1f} s; server CPU "
                  f"{cpu:.2f} s ({cpu / have * 1000:.2f} ms per stream), clients {clients:.1f} s;"
                  f" RSS after the drop {drop:.0f} MB, peak {max(peak):.0f} MB")
        print(f"load average at end {load_average()}")
    finally:
        for g in groups:
            g.kill()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
