"""Forwarding to a tenant's own DNS server through its tenant resolver, and denied names
never reaching that server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy, free_port, wait_for
from e2e.harness.dnsquery import query

UPSTREAM = {
    "www.example.com": "203.0.113.10",
    "ads.tracker.example": "203.0.113.66",
    "httpbin.acme.svc.cluster.local": "198.51.100.1",  # an upstream that would leak
    "search.globex.svc.cluster.local": "198.51.100.2",
    "www.acme.com": "198.51.100.3",
}


def test_forwarding_and_deny(manifests: Path, start_control_plane: Callable[..., ControlPlane],
                             start_envoy: Callable[..., Envoy],
                             start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq(UPSTREAM)
    globex = manifests / "globex.yaml"
    globex.write_text(globex.read_text().replace("127.0.0.1:15353", f"127.0.0.1:{upstream.port}"))
    cp = start_control_plane(manifests)
    envoy = start_envoy(cp, "sleep.globex", "globex")
    port = envoy.dns_port
    # Cluster names the policy allows: answered locally, never forwarded.
    assert query(port, "api.globex.svc.cluster.local") == ("NOERROR", ["10.96.40.10"])
    assert query(port, "db.globex.svc.cluster.local", "AAAA") == ("NOERROR", ["fd00:10:96::20"])
    assert query(port, "_grpc._tcp.api.globex.svc.cluster.local", "SRV") == (
        "NOERROR", ["0 100 9090 api.globex.svc.cluster.local."])
    assert query(port, "pay.partner.example") == ("NOERROR", ["192.0.2.80", "192.0.2.81"])
    # External names the policy allows: forwarded to the tenant's server.
    assert query(port, "www.example.com") == ("NOERROR", ["203.0.113.10"])
    # Blacklisted: NXDOMAIN for A and AAAA, in any case, never reaching the server.
    for name in ("ads.tracker.example", "x.ads.tracker.example", "ADS.Tracker.EXAMPLE"):
        for rdtype in ("A", "AAAA"):
            assert query(port, name, rdtype) == ("NXDOMAIN", []), (name, rdtype)
    # Another namespace's Service, and any unknown cluster name (a search-list expansion
    # among them): NXDOMAIN from the tenant resolver, which never asks the server.
    assert query(port, "httpbin.acme.svc.cluster.local") == ("NXDOMAIN", [])
    assert query(port, "search.globex.svc.cluster.local") == ("NXDOMAIN", [])
    assert query(port, "www.example.com.globex.svc.cluster.local", "AAAA") == ("NXDOMAIN", [])
    asked = upstream.queries()
    assert "www.example.com" in asked
    assert not any(q.endswith("tracker.example") for q in asked), asked
    assert not any(q.endswith("cluster.local") for q in asked), asked
    stats = envoy.stats()
    assert stats["dns_filter.tenant.globex.externally_resolved_queries"] >= 2
    assert stats["listener_manager.lds.update_rejected"] == 0


def test_deny_tenant_forwards_nothing(manifests: Path,
                                      start_control_plane: Callable[..., ControlPlane],
                                      start_envoy: Callable[..., Envoy],
                                      start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq(UPSTREAM)
    demo = manifests / "demo-two-tenants.yaml"
    # acme's DENY policy names a server, and whitelists only *.acme.com outside the cluster:
    # nothing else reaches that server.
    demo.write_text(demo.read_text().replace(
        "  namespaceSelector: {matchLabels: {tenant: acme}}\n",
        "  namespaceSelector: {matchLabels: {tenant: acme}}\n"
        f"  server: {{address: '127.0.0.1:{upstream.port}'}}\n"))
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    assert query(acme.dns_port, "www.example.com") == ("NXDOMAIN", [])
    assert query(acme.dns_port, "WWW.EXAMPLE.COM", "AAAA") == ("NXDOMAIN", [])
    assert query(acme.dns_port, "httpbin.foo.com") == ("NXDOMAIN", [])
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    assert upstream.queries() == []
    # A whitelisted external name under *.acme.com is forwarded.
    assert query(acme.dns_port, "www.acme.com") == ("NOERROR", ["198.51.100.3"])
    assert upstream.queries() == ["www.acme.com"]


def test_many_sidecars_of_one_tenant_share_one_serialisation(
        manifests: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy]) -> None:
    """N Envoys of one tenant (same listen address, as in N pods): one build per change."""
    cp = start_control_plane(manifests)
    # Envoy binds listeners with SO_REUSEPORT, so all can share the ports, as N pods would.
    port, stats_port = free_port(), free_port()
    n = 4
    envoys = [start_envoy(cp, f"sleep-{i}.acme", "acme", dns_port=port, stats_port=stats_port)
              for i in range(n)]

    def serialisations() -> int:
        for line in _metrics(cp).splitlines():
            if line.startswith("dnscp_snapshot_serializations_total"):
                return int(float(line.split()[1]))
        raise AssertionError("metric missing")

    nodes = cp.get("/api/v1/nodes")
    assert len({n["view"] for n in nodes}) == 1 and len(nodes) == n
    before = serialisations()
    (manifests / "new.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: new, namespace: acme}\n"
        "spec: {clusterIP: 10.55.0.1}\n")

    def all_acked() -> bool:
        versions = {n["types"]["lds"]["acked_version"] for n in cp.get("/api/v1/nodes")}
        return len(versions) == 1 and versions != {None} and serialisations() > before

    wait_for(all_acked, timeout=20, what="every sidecar to ack the new version")
    wait_for(lambda: query(port, "new.acme.svc.cluster.local") == ("NOERROR", ["10.55.0.1"]),
             timeout=10, what="the new name")
    built = serialisations() - before
    print(f"\n{n} Envoys of tenant acme: {built} serialisation(s) for one change")
    assert built == 1
    for e in envoys:
        assert e.stats()["listener_manager.lds.update_rejected"] == 0


def _metrics(cp: ControlPlane) -> str:
    from controlplane._kit.localrun import http_text

    return http_text(f"{cp.admin_url}/metrics")
