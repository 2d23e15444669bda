"""The Grafana dashboard for per-tenant DNS, as data: `python -m` this file prints its JSON.

deploy/grafana/dns-tenants.json is its output (a test keeps them equal), and
render_preview.py draws the same panels from a real run.
"""

from __future__ import annotations

import json

RATE = "$__rate_interval"

# (title, unit, [(legend, PromQL)]) -- the single source for the dashboard and the preview.
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("DNS queries per second", "reqps", [
        ("{{tenant}}", 'sum by (tenant) (rate(envoy_dns_filter_downstream_rx_queries'
                       f'{{tenant=~"$tenant"}}[{RATE}]))'),
    ]),
    ("Answered locally vs forwarded", "reqps", [
        ("{{tenant}} local", 'sum by (tenant) (rate(envoy_dns_filter_local_a_record_answers'
                             f'{{tenant=~"$tenant"}}[{RATE}]) + rate('
                             'envoy_dns_filter_local_aaaa_record_answers'
                             f'{{tenant=~"$tenant"}}[{RATE}]))'),
        ("{{tenant}} forwarded", 'sum by (tenant) (rate('
                                 'envoy_dns_filter_externally_resolved_queries'
                                 f'{{tenant=~"$tenant"}}[{RATE}]))'),
    ]),
    ("NXDOMAIN (unanswered)", "reqps", [
        ("{{tenant}}", 'sum by (tenant) (rate(envoy_dns_filter_unanswered_queries'
                       f'{{tenant=~"$tenant"}}[{RATE}]))'),
    ]),
    ("Denied and WARN queries", "reqps", [
        ("{{tenant}} {{action}}", 'sum by (tenant, action) (rate(dnscp_policy_queries_total'
                                  f'{{tenant=~"$tenant",action=~"deny|warn"}}[{RATE}]))'),
    ]),
    ("Tenant resolver: forwarded queries, cache hits, denied", "reqps", [
        ("{{tenant}} queries", 'sum by (tenant) (rate(dnscp_resolver_queries_total'
                               f'{{tenant=~"$tenant"}}[{RATE}]))'),
        ("{{tenant}} cache hits", 'sum by (tenant) (rate(dnscp_resolver_cache_hits_total'
                                  f'{{tenant=~"$tenant"}}[{RATE}]))'),
        ("{{tenant}} denied", 'sum by (tenant) (rate(dnscp_resolver_policy_denied_total'
                              f'{{tenant=~"$tenant"}}[{RATE}]))'),
    ]),
    ("Tenant resolver: server failures and latency", "short", [
        ("{{tenant}} SERVFAIL/s", 'sum by (tenant) (rate(dnscp_resolver_answers_total'
                                  f'{{tenant=~"$tenant",rcode="SERVFAIL"}}[{RATE}]))'),
        ("{{tenant}} server latency (s)", 'max by (tenant) (dnscp_resolver_upstream_seconds'
                                          '{tenant=~"$tenant"})'),
    ]),
    ("Control plane: input change to ACK", "s", [
        ("p50", f"histogram_quantile(0.5, sum by (le) (rate(dnscp_push_latency_seconds_bucket"
                f"[{RATE}])))"),
        ("p99", f"histogram_quantile(0.99, sum by (le) (rate(dnscp_push_latency_seconds_bucket"
                f"[{RATE}])))"),
    ]),
    ("Control plane: connected sidecars and NACKs", "short", [
        ("{{tenant}} sidecars", "sum by (tenant) (dnscp_connected_proxies)"),
        ("NACKs {{type}}", f"sum by (type) (increase(dnscp_nacks_total[{RATE}]))"),
    ]),
]


def dashboard() -> dict[str, object]:
    panels = []
    for i, (title, unit, targets) in enumerate(PANELS):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": expr, "legendFormat": legend,
                         "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                        for j, (legend, expr) in enumerate(targets)],
        })
    return {
        "title": "DNS per tenant", "uid": "dns-controlplane-tenants", "schemaVersion": 39,
        "tags": ["dns", "envoy"], "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "tenant", "type": "query", "includeAll": True, "multi": True,
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": "label_values(envoy_dns_filter_downstream_rx_queries, tenant)",
             "current": {"text": "All", "value": "$__all"}},
        ]},
        "panels": panels,
    }


if __name__ == "__main__":
    print(json.dumps(dashboard(), indent=2))
