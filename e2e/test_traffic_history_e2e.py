"""The console's traffic history survives a control-plane restart (issue 22, the chart:
"history starts at the control plane's start"): ``serve --traffic-history FILE`` writes
each tenant's rate history with every coarse point and at stop, and the next control plane
reads it back. A real Envoy's counters make the rates; the restart is a SIGTERM."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query

from controlplane._kit.localrun import ControlPlane, Envoy, wait_for

ACME = """
apiVersion: v1
kind: Namespace
metadata: {name: acme, labels: {tenant: acme}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: acme}
spec: {clusterIP: 10.96.0.10}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {name: acme}
spec:
  namespaceSelector: {matchLabels: {tenant: acme}}
  policy: {defaultAction: DENY, whitelist: ["*.acme.svc.cluster.local"]}
"""


def history(cp: ControlPlane) -> list[list[float]]:
    """acme's 2 s points: [time, queries/s, local, forwarded, nxdomain, denied, warn]."""
    got = cp.get("/api/v1/traffic?" + urllib.parse.urlencode({"tenant": "acme",
                                                               "history": "true"}))
    points: list[list[float]] = got["tenants"][0]["history"]
    return points


def busy_points(cp: ControlPlane) -> list[list[float]]:
    return [p for p in history(cp) if p[1] > 0]


def test_the_chart_history_survives_a_restart(
        tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy]) -> None:
    source = tmp_path / "m"
    source.mkdir()
    (source / "acme.yaml").write_text(ACME)
    kept = tmp_path / "traffic-history.json"
    cp = start_control_plane(source, "--traffic-history", str(kept))
    envoy = start_envoy(cp, "sleep.acme", "acme")
    query = dns.message.make_query("web.acme.svc.cluster.local", "A")

    def asked_and_charted() -> list[list[float]]:
        dns.query.udp(query, "127.0.0.1", port=envoy.dns_port, timeout=2)
        return busy_points(cp)
    before = wait_for(asked_and_charted, timeout=60, interval=0.2,
                      what="a history point with acme's queries")
    assert cp.process is not None
    cp.stop()  # SIGTERM: the history is written at stop
    stopped = time.time()
    assert kept.exists()
    again = start_control_plane(source, "--traffic-history", str(kept))
    after = wait_for(lambda: busy_points(again), timeout=10,
                     what="acme's history read back")
    old = [p for p in after if p[0] < stopped]
    assert old, after
    assert {p[0] for p in before} <= {p[0] for p in old}
    # a new point follows the restored ones, later than the restart
    wait_for(lambda: max(p[0] for p in history(again)) > stopped, timeout=10,
             what="a point after the restart")
