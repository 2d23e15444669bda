"""What the DnsPolicy status walk costs the event loop with a fleet connected.

    .venv/bin/python benchmarks/status_walk.py [--streams 10000] [--pods 10000]
        [--tenants 10] [--code DIR]

The Kubernetes runner writes every DnsPolicy's status (``Hub.policy_statuses``) each
time the hub changes, debounced to one run per 0.2 s: while a fleet reconnects, a run
every 0.2 s, on the event loop. This builds a hub in process with --tenants DENY tenants
(one namespace each), --pods Pods and --streams attached streams spread over them (50
workloads' label sets), and times one walk with and without Pods watched (CPU time,
min and median of 5). ``--code DIR`` imports the control plane from another checkout
(``git archive REV | tar -x -C DIR``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--streams", type=int, default=10_000)
parser.add_argument("--pods", type=int, default=10_000)
parser.add_argument("--tenants", type=int, default=10)
parser.add_argument("--code", default="", help="import the control plane from this checkout")
args = parser.parse_args()
sys.path.insert(0, str(Path(args.code).resolve()) if args.code
                else str(Path(__file__).resolve().parents[1]))

from envoy.config.core.v3 import base_pb2  # noqa: E402
from envoy.service.discovery.v3 import discovery_pb2  # noqa: E402

from benchmarks.procstat import load_average  # noqa: E402
from controlplane.core.inventory import Inventory  # noqa: E402
from controlplane.core.model import (  # noqa: E402
    DefaultAction,
    DnsPolicy,
    LabelSelector,
    Namespace,
    Pod,
)
from controlplane.core.settings import Settings  # noqa: E402
from controlplane.hub.hub import Hub  # noqa: E402
from controlplane.translate.types import LISTENER_TYPE  # noqa: E402


def main() -> int:
    tenants = args.tenants
    objects: list[Any] = [Namespace(f"w{t}", (("tenant", f"w{t}"),)) for t in range(tenants)]
    objects += [DnsPolicy(name=f"w{t}", namespace_selector=LabelSelector(
        match_labels=(("tenant", f"w{t}"),)), default_action=DefaultAction.DENY)
        for t in range(tenants)]
    objects += [Pod(f"w{i % tenants}", f"p{i}", (("app", f"a{i % 50}"),
                                                 ("pod-template-hash", f"h{i % 50}")))
                for i in range(args.pods)]
    hub = Hub(Settings())
    hub.set_inventory(Inventory.of(objects))
    for i in range(args.streams):
        node = base_pb2.Node(id=f"n{i}")
        node.metadata.update({"NAMESPACE": f"w{i % tenants}", "LABELS": {
            "app": f"a{i % 50}", "pod-template-hash": f"h{i % 50}"}})
        conn = hub.open(peer="bench")
        conn.stream.receive(discovery_pb2.DiscoveryRequest(type_url=LISTENER_TYPE, node=node))
        hub.attach(conn)
    print(f"status walk: {args.streams} streams, {args.pods} pods, {tenants} tenants; "
          f"load average {load_average()}")
    for watched in (False, True):
        runs = []
        for _ in range(5):
            started = time.process_time()
            hub.policy_statuses(pods_watched=watched)
            runs.append(time.process_time() - started)
        runs.sort()
        print(f"  pods watched {str(watched).lower():5}: {runs[0] * 1000:.1f} ms per walk "
              f"(min of 5), median {runs[2] * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
