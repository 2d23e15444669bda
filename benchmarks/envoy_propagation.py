"""With one real Envoy: time from a manifest file write to the new DNS answer.

    .venv/bin/python benchmarks/envoy_propagation.py [--edits 20] [--debounce 0.05]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controlplane.localrun import ControlPlane, Envoy, wait_for  # noqa: E402
from e2e.conftest import query  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    parser.add_argument("--debounce", type=float, default=0.05)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="prop-"))
    manifests = work / "m"
    shutil.copytree(ROOT / "examples", manifests)
    cp = ControlPlane(manifests, work, extra_args=["--debounce", str(args.debounce),
                                                   "--log-level", "warning"]).start()
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=work)
    try:
        envoy.start()
        times = []
        for i in range(args.edits):
            ip = f"10.66.{i // 250}.{i % 250 + 1}"
            started = time.monotonic()
            (manifests / "prop.yaml").write_text(
                "apiVersion: v1\nkind: Service\nmetadata: {name: prop, namespace: acme}\n"
                f"spec: {{clusterIP: {ip}}}\n")
            wait_for(lambda ip=ip: query(envoy.dns_port, "prop.acme.svc.cluster.local",
                                         timeout=0.3) == ("NOERROR", [ip]),
                     timeout=20, interval=0.002, what="the new answer")
            times.append((time.monotonic() - started) * 1000)
        times.sort()
        print(f"file write -> new answer from a real Envoy, {args.edits} edits, debounce "
              f"{args.debounce * 1000:.0f} ms (+ the file watcher's 50 ms): "
              f"p50 {statistics.median(times):.0f} ms, max {times[-1]:.0f} ms")
    finally:
        envoy.stop()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
