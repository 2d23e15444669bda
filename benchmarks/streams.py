"""Propagation and memory with many ADS streams, and a reconnect storm.

    .venv/bin/python benchmarks/streams.py [--streams 1000] [--processes 4] [--debounce 0.05]
        [--services 10000] [--heavy | --tenants 10] [--code DIR]

Starts the control plane on examples/ (file source), connects --streams
simulated sidecars from --processes client processes (benchmarks/ads_client.py,
bounded in time), then: writes one Service into acme and measures, for every
stream whose view changed, the time from the write to its ACK of the new
listener version (p50/p99/max; the debounce window is included and stated);
control-plane RSS; LDS bytes pushed for the change; then kills every client
at once and reconnects them all (a storm), sampling RSS throughout. Server CPU
(the control plane) and client CPU (the client processes) are printed apart,
with the load average. ``--heavy``: the third tenant sees every bulk Service
(a large listener for a third of the streams); ``--code DIR``: the control
plane from another checkout (before/after). ``--tenants T``: the --services
Services spread over T namespaces, and T tenants that each see one of them (at
100,000 Services and 10 tenants, ~10,000 names and a 1.6 MB listener each); the
streams are spread over the T tenants and the change lands in the first.
Each simulated sidecar has its own TCP connection and reconnects after an
Envoy-like back-off when the server ends its stream; the endings are counted
by gRPC status.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.procstat import CpuMeter, cpu_seconds, load_average  # noqa: E402
from controlplane._kit.localrun import ControlPlane, http_text, rss_mb, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class Clients:
    def __init__(self, address: str, streams: int, processes: int, seconds: float,
                 namespaces: str = "") -> None:
        self.events: list[dict[str, object]] = []
        self.endings: dict[str, int] = {}
        self.lock = threading.Lock()
        per = streams // processes
        more = ["--namespaces", namespaces] if namespaces else []
        self.procs = [subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "ads_client.py"), "--address", address,
             "--first", str(i * per), "--count", str(per), "--seconds", str(seconds), *more],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for i in range(processes)]
        for p in self.procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            with self.lock:
                if "e" in event:
                    self.endings[str(event["e"])] = self.endings.get(str(event["e"]), 0) + 1
                else:
                    self.events.append(event)

    def latest(self) -> dict[str, tuple[str, float]]:
        with self.lock:
            out: dict[str, tuple[str, float]] = {}
            for e in self.events:
                out[str(e["c"])] = (str(e["v"]), float(e["t"]))  # type: ignore[arg-type]
            return out

    def kill(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


class RssPeak:
    """The highest RSS of a process, sampled every 50 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def metric(cp: ControlPlane, name: str, contains: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1])
               for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith(name) and contains in line)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--debounce", type=float, default=0.05)
    parser.add_argument("--services", type=int, default=0,
                        help="extra Services in namespace 'bulk' (every tenant's policy "
                        "decides about them)")
    parser.add_argument("--heavy", action="store_true",
                        help="a third of the streams (tenant 'wide') see every bulk Service: "
                        "a large listener pushed to each of them")
    parser.add_argument("--tenants", type=int, default=0,
                        help="spread the --services over this many namespaces, one tenant "
                        "seeing each (the streams spread over these tenants)")
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="streams-"))
    manifests = work / "manifests"
    shutil.copytree(ROOT / "examples", manifests)
    if args.services:
        def bulk(i: int) -> str:
            return f"bulk{i % args.tenants}" if args.tenants else "bulk"

        (manifests / "bulk.yaml").write_text("---\n".join(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {bulk(i)}}}\n"
            f"spec: {{clusterIP: 10.{200 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}}}\n"
            for i in range(args.services)))
    namespaces = "acme,foo,globex"
    if args.heavy:
        namespaces = "acme,foo,wide"
        (manifests / "wide.yaml").write_text(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: wide, labels: {tenant: wide}}\n"
            "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
            "metadata: {name: wide}\nspec:\n  namespaceSelector: {matchLabels: {tenant: wide}}\n"
            '  policy: {whitelist: ["*.bulk.svc.cluster.local"], defaultAction: DENY}\n')
    change_ns, stride = "acme", 3
    if args.tenants:
        namespaces = ",".join(f"w{t}" for t in range(args.tenants))
        change_ns, stride = "bulk0", args.tenants
        (manifests / "wide.yaml").write_text("---\n".join(
            f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: w{t}, labels: {{tenant: w{t}}}}}\n"
            "---\napiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
            f"metadata: {{name: w{t}}}\nspec:\n  namespaceSelector: {{matchLabels: {{tenant: w{t}}}}}\n"
            f'  policy: {{whitelist: ["*.bulk{t}.svc.cluster.local"], defaultAction: DENY}}\n'
            for t in range(args.tenants)))
    print(f"streams benchmark: 2 cores shared by every process; load average at start "
          f"{load_average()}")
    here = Path.cwd()
    if args.code:  # python -m controlplane finds the package in its working directory first
        os.chdir(Path(args.code).resolve())
    try:
        cp = ControlPlane(manifests, work, extra_args=["--debounce", str(args.debounce),
                                                       "--log-level", "warning"]).start(
            timeout=120)
    finally:
        os.chdir(here)
    assert cp.process is not None
    pid = cp.process.pid
    idle = rss_mb(pid)
    clients = Clients(cp.xds_address, args.streams, args.processes, seconds=300,
                      namespaces=namespaces)
    meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
    connect_peak = RssPeak(pid)
    try:
        started = time.time()
        try:
            wait_for(lambda: len(clients.latest()) >= args.streams, timeout=180, interval=0.2,
                     what=f"{args.streams} streams to get their first listener")
        except TimeoutError:
            print(f"NOT SERVED: {len(clients.latest())} of {args.streams} streams had a listener "
                  f"after 180 s; streams the server ended meanwhile, by status: "
                  f"{clients.endings or 'none'}; control-plane RSS {rss_mb(pid):.0f} MB "
                  f"(peak {connect_peak.stop():.0f} MB); load average {load_average()}")
            raise
        connect = time.time() - started
        connected_rss = rss_mb(pid)
        connect_peak_mb = connect_peak.stop()
        connect_cpu = meter.stop()
        meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
        before = clients.latest()
        pushed_before = metric(cp, "dnscp_pushes_total", 'type="lds"')
        serial_before = metric(cp, "dnscp_snapshot_serializations_total")
        t0 = time.time()
        (manifests / "bench-change.yaml").write_text(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: bench, namespace: {change_ns}}}\n"
            "spec: {clusterIP: 10.123.0.1}\n")
        # The acme streams (i % 3 == 0) see the new Service; foo and globex do not (globex
        # blacklists *.svc.cluster.local: its tenant resolver denies those, not its table).
        # --tenants: the streams of tenant w0 (i % T == 0) see bulk0.
        affected = [c for c in before if int(c[1:]) % stride == 0]

        def all_updated() -> bool:
            now = clients.latest()
            return all(now[c][0] != before[c][0] for c in affected)

        wait_for(all_updated, timeout=120, interval=0.05, what="every affected stream")
        now = clients.latest()
        lat = sorted((now[c][1] - t0) * 1000 for c in affected)
        unaffected_changed = sum(1 for c in before if c not in affected
                                 and now[c][0] != before[c][0])
        pushes = metric(cp, "dnscp_pushes_total", 'type="lds"') - pushed_before
        serials = metric(cp, "dnscp_snapshot_serializations_total") - serial_before
        bytes_acme = metric(cp, "dnscp_snapshot_bytes", "w0@" if args.tenants else "acme@")
        bytes_globex = metric(cp, "dnscp_snapshot_bytes", f"{namespaces.rsplit(',', 1)[1]}@")
        print(f"streams: {args.streams} from {args.processes} processes, "
              f"{args.services} extra Services, connected and served in {connect:.1f}s; "
              f"streams the server ended meanwhile, by status: {clients.endings or 'none'}")
        print(f"change -> ACK for {len(affected)} affected streams (debounce "
              f"{args.debounce * 1000:.0f} ms included): p50 {statistics.median(lat):.0f} ms, "
              f"p99 {lat[int(len(lat) * 0.99) - 1]:.0f} ms, max {lat[-1]:.0f} ms; "
              f"unaffected streams that got a push: {unaffected_changed}")
        print(f"LDS responses pushed for the change: {pushes:.0f}; snapshots serialised: "
              f"{serials:.0f}; snapshot bytes: acme {bytes_acme:.0f}, {namespaces.rsplit(',', 1)[1]} "
              f"{bytes_globex:.0f}; bytes pushed in all: {pushes * bytes_acme:.0f}")
        change_cpu = meter.stop()
        print(f"control-plane RSS: idle {idle:.0f} MB, with {args.streams} streams "
              f"{connected_rss:.0f} MB (peak while they connected {connect_peak_mb:.0f} MB)")
        print(f"cpu: connecting {connect_cpu[0]:.1f} s server, {connect_cpu[1]:.1f} s clients; "
              f"the change {change_cpu[0]:.2f} s server, {change_cpu[1]:.2f} s clients")
        # Reconnect storm: every client dies at once, then all reconnect at once.
        clients.kill()
        wait_for(lambda: metric(cp, "dnscp_connected_proxies") == 0, timeout=60,
                 what="all streams gone")
        after_drop = rss_mb(pid)
        peak = [after_drop]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak.append(rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t1 = time.time()
        server_cpu = cpu_seconds(pid)
        clients = Clients(cp.xds_address, args.streams, args.processes, seconds=300,
                          namespaces=namespaces)
        meter = CpuMeter(pid, [p.pid for p in clients.procs]).start()
        wait_for(lambda: len(clients.latest()) >= args.streams, timeout=180, interval=0.2,
                 what="the storm to reconnect")
        storm = time.time() - t1
        storm_cpu = meter.stop()
        sampling.set()
        sampler.join()
        print(f"streams the server ended during the storm, by status: {clients.endings or 'none'}")
        print(f"reconnect storm of {args.streams}: all served again in {storm:.1f}s; RSS after "
              f"the drop {after_drop:.0f} MB, peak during the storm {max(peak):.0f} MB, after "
              f"{rss_mb(pid):.0f} MB")
        print(f"cpu during the storm: server {cpu_seconds(pid) - server_cpu:.1f} s, clients "
              f"{storm_cpu[1]:.1f} s (the {args.processes} client processes start then); load "
              f"average at end {load_average()}")
    finally:
        clients.kill()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
