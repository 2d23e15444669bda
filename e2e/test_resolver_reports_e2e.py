"""Queries that reach the tenant resolver past Envoy's DNS filter (what the DNS front sends
it: every type Envoy cannot answer, every name outside the table) are in the query log,
the tenant's traffic and ``/metrics``, classified by the tenant's policy: a blacklisted
name is denied for every type, WARN is logged for every type (issue 18, item 1).

``controlplane serve`` with the seed filtering policy; the test asks the tenant resolver
directly, at the address ``GET /api/v1/resolvers`` gives, as a fronted sidecar's hop
would; no Envoy is connected, so the records name the node ``resolver``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode

from controlplane._kit.localrun import ControlPlane, Dnsmasq, http_text, wait_for
from e2e.harness.paths import SEEDS
from e2e.test_query_log_e2e import EXTRA

TENANT = "dns-policy"


def ask(port: int, name: str, rdtype: str, *, tcp: bool) -> str:
    q = dns.message.make_query(name, rdtype)
    r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=5)
    return dns.rcode.to_text(r.rcode())


def metrics(cp: ControlPlane, prefix: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in http_text(f"{cp.admin_url}/metrics").splitlines()
            if line.startswith(prefix)}


def test_resolver_answers_become_warn_and_deny_records(
        tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq({"www.example.com": "203.0.113.10"})
    manifests = tmp_path / "m"
    manifests.mkdir()
    seed = (SEEDS / "dnspolicy-filtering.yaml").read_text().replace(
        "address: tenant-1.dns.svc", f"address: tenant-1.dns.svc:{upstream.port}")
    (manifests / "policy.yaml").write_text(seed + EXTRA.format(port=upstream.port))
    cp = start_control_plane(manifests)
    (resolver,) = wait_for(lambda: cp.get("/api/v1/resolvers")["resolvers"] or None,
                           timeout=20, what="the tenant resolver")
    assert resolver["tenant"] == TENANT
    port = int(str(resolver["listen"]).rsplit(":", 1)[1])

    denied = [("api.foo.com", "TXT", False), ("api.foo.com", "MX", True),
              ("x.FOO.com", "AAAA", False), ("mail.foo.com", "CAA", True)]
    for name, rdtype, tcp in denied:
        assert ask(port, name, rdtype, tcp=tcp) == "NXDOMAIN", (name, rdtype)
    warned = [("www.example.com", "TXT", False), ("www.example.com", "MX", True),
              ("www.example.com", "A", False)]
    for name, rdtype, tcp in warned:
        assert ask(port, name, rdtype, tcp=tcp) == "NOERROR", (name, rdtype)
    # Whitelisted (a table name the resolver answers itself): counted as allowed only.
    assert ask(port, "checkout.payments.svc.cluster.local", "A", tcp=False) == "NOERROR"
    assert ask(port, "nope.payments.svc.cluster.local", "TXT", tcp=True) == "NXDOMAIN"
    assert not any(q.endswith("foo.com") for q in upstream.queries())

    def records() -> list[dict[str, Any]] | None:
        got = cp.get("/api/v1/queries?" + urllib.parse.urlencode({"tenant": TENANT}))
        recs: list[dict[str, Any]] = got["records"]
        return recs if len(recs) >= 7 else None

    recs = wait_for(records, timeout=20, what="7 query records")
    assert sorted((r["action"], r["name"], r["type"], r["rcode"], r["rule"], r["node"])
                  for r in recs) == sorted([
        *(("deny", n, t, "NXDOMAIN", "blacklist *.foo.com", "resolver") for n, t, _ in denied),
        *(("warn", n, t, "NOERROR", "defaultAction WARN", "resolver") for n, t, _ in warned)])
    deny_only = cp.get("/api/v1/queries?" + urllib.parse.urlencode(
        {"tenant": TENANT, "action": "deny"}))["records"]
    assert len(deny_only) == 4

    wait_for(lambda: metrics(cp, "dnscp_policy_queries_total").get(
        f'dnscp_policy_queries_total{{action="allow",tenant="{TENANT}"}}') == 2.0,
        timeout=20, what="the allowed ones counted")
    assert metrics(cp, "dnscp_policy_queries_total") == {
        f'dnscp_policy_queries_total{{action="allow",tenant="{TENANT}"}}': 2.0,
        f'dnscp_policy_queries_total{{action="deny",tenant="{TENANT}"}}': 4.0,
        f'dnscp_policy_queries_total{{action="warn",tenant="{TENANT}"}}': 3.0,
    }
    assert metrics(cp, "dnscp_resolver_reports_total") == {
        f'dnscp_resolver_reports_total{{rcode="NOERROR",tenant="{TENANT}"}}': 4.0,
        f'dnscp_resolver_reports_total{{rcode="NXDOMAIN",tenant="{TENANT}"}}': 5.0,
    }
    # The console's per-tenant traffic: every answer is a forwarded query.
    assert metrics(cp, f'dnscp_dns_forwarded_total{{tenant="{TENANT}"}}') == {
        f'dnscp_dns_forwarded_total{{tenant="{TENANT}"}}': 9.0}
    (traffic,) = cp.get("/api/v1/traffic?" + urllib.parse.urlencode({"tenant": TENANT}))[
        "tenants"]
    assert traffic["totals"] == {"queries": 9.0, "local": 0.0, "forwarded": 9.0,
                                 "nxdomain": 5.0, "denied": 4.0, "warn": 3.0}
    log = cp.process.log()  # type: ignore[union-attr]
    assert '"msg": "dns warn: www.example.com TXT NOERROR (defaultAction WARN)"' in log
