"""The seed filtering example with a real Envoy: WARN and denied queries become records.

Its comments say: the whitelist "can list local services", the blacklist "can
list external domains", and defaultAction WARN answers the rest and logs it.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy, http_text, wait_for
from e2e.harness.dnsquery import query
from e2e.harness.paths import SEEDS

EXTRA = """
---
apiVersion: v1
kind: Namespace
metadata: {{name: payments, labels: {{workload: payments}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: tenant-1, namespace: dns}}
spec: {{clusterIP: 127.0.0.1, ports: [{{name: dns, port: {port}, protocol: UDP}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: checkout, namespace: payments}}
spec: {{clusterIP: 10.50.0.1}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: other}}
spec: {{clusterIP: 10.60.0.1}}
"""


def test_seed_filtering_policy_logs_warn_and_deny(
        tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy], start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq({"www.example.com": "203.0.113.10", "api.foo.com": "203.0.113.9"})
    manifests = tmp_path / "m"
    manifests.mkdir()
    seed = (SEEDS / "dnspolicy-filtering.yaml").read_text().replace(
        "address: tenant-1.dns.svc", f"address: tenant-1.dns.svc:{upstream.port}")
    (manifests / "policy.yaml").write_text(seed + EXTRA.format(port=upstream.port))
    cp = start_control_plane(manifests)
    envoy = start_envoy(cp, "sleep.payments", "payments")
    port = envoy.dns_port
    # whitelist: local services, silently
    assert query(port, "checkout.payments.svc.cluster.local") == ("NOERROR", ["10.50.0.1"])
    # defaultAction WARN: answered (forwarded or local) and logged
    for _ in range(3):
        assert query(port, "www.example.com") == ("NOERROR", ["203.0.113.10"])
    assert query(port, "web.other.svc.cluster.local") == ("NOERROR", ["10.60.0.1"])
    # blacklist: external domains denied, never forwarded, logged
    assert query(port, "api.foo.com") == ("NXDOMAIN", [])
    assert query(port, "X.Foo.COM", "AAAA") == ("NXDOMAIN", [])  # denied by the tenant resolver
    assert not any(q.endswith("foo.com") for q in upstream.queries())

    def records() -> list[dict[str, object]] | None:
        got = cp.get("/api/v1/queries?" + urllib.parse.urlencode({"tenant": "dns-policy"}))
        return got["records"] if len(got["records"]) >= 6 else None

    recs = wait_for(records, timeout=20, what="6 query records")
    assert len(recs) == 6
    simplified = sorted((r["action"], r["name"], r["type"], r["rcode"], r["rule"], r["node"])
                        for r in recs)
    assert simplified == sorted([
        ("warn", "www.example.com", "A", "NOERROR", "defaultAction WARN", "sleep.payments"),
        ("warn", "www.example.com", "A", "NOERROR", "defaultAction WARN", "sleep.payments"),
        ("warn", "www.example.com", "A", "NOERROR", "defaultAction WARN", "sleep.payments"),
        ("warn", "web.other.svc.cluster.local", "A", "NOERROR", "defaultAction WARN",
         "sleep.payments"),
        ("deny", "api.foo.com", "A", "NXDOMAIN", "blacklist *.foo.com", "sleep.payments"),
        ("deny", "X.Foo.COM", "AAAA", "NXDOMAIN", "blacklist *.foo.com", "sleep.payments"),
    ])
    metrics = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
               for line in http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith("dnscp_policy_queries_total")}
    assert metrics == {
        'dnscp_policy_queries_total{action="allow",tenant="dns-policy"}': 1.0,
        'dnscp_policy_queries_total{action="deny",tenant="dns-policy"}': 2.0,
        'dnscp_policy_queries_total{action="warn",tenant="dns-policy"}': 4.0,
    }
    # The tenant resolver reported the queries Envoy forwarded to it (www.example.com A,
    # X.Foo.COM AAAA; dnstap), but this sidecar's Envoy logged them already: skipped, so
    # nothing above is counted twice.
    def reported(prefix: str) -> dict[str, float]:
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in http_text(f"{cp.admin_url}/metrics").splitlines()
                if line.startswith(prefix)}

    skipped = 'dnscp_resolver_reports_skipped_total{tenant="dns-policy"}'
    wait_for(lambda: reported(skipped).get(skipped, 0) >= 4, timeout=20,
             what="the resolver's reports of Envoy's forwards, skipped")
    assert reported("dnscp_resolver_reports_total") == {}
    log = cp.process.log()  # type: ignore[union-attr]
    assert '"msg": "dns warn: www.example.com A NOERROR (defaultAction WARN)"' in log
    assert '"tenant": "dns-policy"' in log
