"""No stall while tenant resolvers start, move and restart: the event loop's longest block.

    .venv/bin/python benchmarks/resolver_stall.py [--tenants 20] [--code DIR]

The control plane serves ``examples/`` from a manifest directory. Then three phases,
each starting ``--tenants`` tenant resolvers (one unbound each):

1. ``start``: a file with ``--tenants`` namespaces and forwarding DnsPolicies appears
   (every tenant's first resolver start);
2. ``move``: every policy's server address changes (make-before-break: a new resolver
   per tenant on new ports, the old ones retired after the grace period);
3. ``restart``: every tenant resolver's unbound is killed (SIGKILL); supervision
   restarts each on its own ports.

Throughout, from this process: ``GET /healthz`` every 10 ms (its latency is what an
admin request, or an ADS stream, waits while the loop is held). Each phase ends when
``/api/v1/resolvers`` shows every tenant's resolver up (again). The control plane's
own event-loop lag (``dnscp_event_loop_lag_seconds``, a 10 ms timer: samples later than
50 ms) is read from /metrics before and after each phase. Server CPU (the control plane
and its resolvers) and client CPU (this process) are reported apart, with the load
average. ``--code DIR`` runs the control plane from another checkout (e.g.
``git archive HEAD | tar -x -C DIR``) for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.checkout import start_control_plane  # noqa: E402
from benchmarks.procstat import cpu_seconds, load_average, own_cpu_seconds  # noqa: E402
from benchmarks.stall import lag_metrics, lag_summary, percentile  # noqa: E402
from controlplane._kit.localrun import ControlPlane, children, http_json, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tenants_yaml(n: int, server: str) -> str:
    docs = []
    for i in range(n):
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: rs{i}, labels: "
                    f"{{tenant: rs{i}}}}}\n")
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: rs{i}}}"
                    f"\nspec: {{clusterIP: 10.88.{i // 250}.{i % 250 + 1}}}\n")
        docs.append("apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
                    f"metadata: {{name: rs{i}}}\nspec:\n  namespaceSelector: {{matchLabels: "
                    f"{{tenant: rs{i}}}}}\n  server: {{address: '{server}'}}\n"
                    "  policy: {defaultAction: ALLOW}\n")
    return "---\n".join(docs)


class HealthProbe:
    """``GET /healthz`` every 10 ms in a thread: (wall time, seconds) of each."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as resp:  # noqa: S310
                    resp.read()
            except OSError:
                self.failures += 1
            self.samples.append((time.time(), time.perf_counter() - t0))
            self._stop.wait(0.01)


def resolvers(cp: ControlPlane) -> list[dict[str, Any]]:
    return [r for r in http_json(f"{cp.admin_url}/api/v1/resolvers")["resolvers"]
            if str(r["tenant"]).startswith("rs")]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenants", type=int, default=20)
    parser.add_argument("--code", default="", help="run the control plane from this checkout")
    args = parser.parse_args()
    print(f"resolver stall benchmark: {args.tenants} tenant resolvers per phase, code "
          f"{args.code or 'this checkout'}; 2 cores shared by every process; load average at "
          f"start {load_average()}")
    work = Path(tempfile.mkdtemp(prefix="rstall-"))
    manifests = work / "m"
    shutil.copytree(ROOT / "examples", manifests)
    cp = start_control_plane(manifests, work, code=args.code,
                             extra_args=["--log-level", "warning"])
    assert cp.process is not None
    cp_pid = cp.process.pid
    probe = HealthProbe(f"{cp.admin_url}/healthz").start()
    n = args.tenants
    worst = 0.0

    def up(server: str | None = None, pids: set[int] | None = None) -> bool:
        rs = resolvers(cp)
        return len(rs) == n and all(
            (server is None or r["server"] == server)
            and (pids is None or r["pid"] not in pids) for r in rs)

    def server_cpu() -> float:
        return sum(cpu_seconds(p) for p in [cp_pid, *children(cp_pid)])

    def phase(name: str, act: Any, done: Any) -> None:
        nonlocal worst
        time.sleep(1.0)  # quiet before
        lag0, cpu0, own0 = lag_metrics(cp), server_cpu(), own_cpu_seconds()
        t0 = time.time()
        act()
        wait_for(done, timeout=120, interval=0.05, what=f"{name}: every resolver up")
        t1 = time.time()
        time.sleep(0.5)  # the rebuild that follows
        lag1 = lag_metrics(cp)
        latencies = [s for t, s in probe.samples if t0 <= t <= t1 + 0.5]
        worst = max(worst, max(latencies, default=0.0))
        print(f"{name}: {n} resolvers up in {t1 - t0:.2f} s; /healthz over {len(latencies)} "
              f"requests: p50 {percentile(latencies, 0.5) * 1000:.1f} ms, p99 "
              f"{percentile(latencies, 0.99) * 1000:.1f} ms, max "
              f"{max(latencies, default=0.0) * 1000:.1f} ms; {lag_summary(lag0, lag1)}; cpu: "
              f"server {server_cpu() - cpu0:.2f} s, client {own_cpu_seconds() - own0:.2f} s; "
              f"load average {load_average()}")

    try:
        phase("start", lambda: (manifests / "rs.yaml").write_text(
            tenants_yaml(n, "127.0.0.1:5399")), lambda: up("127.0.0.1:5399"))
        phase("move", lambda: (manifests / "rs.yaml").write_text(
            tenants_yaml(n, "127.0.0.2:5399")), lambda: up("127.0.0.2:5399"))
        old = {int(r["pid"]) for r in resolvers(cp)}

        def kill() -> None:
            for pid in old:
                os.kill(pid, signal.SIGKILL)
        phase("restart", kill, lambda: up(pids=old))
        print(f"worst /healthz latency over the phases: {worst * 1000:.1f} ms; "
              f"{probe.failures} failed requests")
    finally:
        probe.stop()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
