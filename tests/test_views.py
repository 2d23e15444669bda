"""Tenant views: names, forwarding, deny entries, notes."""

from __future__ import annotations

import pytest

from controlplane.inventory import Inventory
from controlplane.model import (
    DefaultAction,
    DnsPolicy,
    Endpoint,
    EndpointSlice,
    LabelSelector,
    Service,
    ServiceEntry,
    ServicePort,
)
from controlplane.names import Pattern
from controlplane.settings import DefaultView, Settings
from controlplane.views import (
    Upstream,
    build_tenant_view,
    cluster_records,
    is_search_level,
    resolve_upstream,
)

INV = Inventory.of([
    Service("acme", "web", cluster_ips=("10.0.0.1",), ports=(ServicePort("http", 80),
                                                             ServicePort("", 81))),
    Service("foo", "web", cluster_ips=("10.0.1.1",)),
    Service("dns", "tenant-1", cluster_ips=("10.0.9.53",)),
    Service("acme", "db", headless=True),
    EndpointSlice("acme", "db-1", "db", endpoints=(
        Endpoint(("10.1.0.1",), ready=True, hostname="db-0"),
        Endpoint(("10.1.0.2",), ready=False, hostname="db-1"))),
    ServiceEntry("acme", "ext", hosts=("api.partner.com",), endpoints=(), addresses=("192.0.2.1",)),
])


def pol(**kw: object) -> DnsPolicy:
    return DnsPolicy(name="t", namespace_selector=LabelSelector(), **kw)  # type: ignore[arg-type]


def test_cluster_records() -> None:
    recs = {r.name: r for r in cluster_records(INV, zone="cluster.local")}
    web = recs["web.acme.svc.cluster.local"]
    assert web.ipv4 == ("10.0.0.1",)
    assert [(s.service, s.port) for s in web.srv] == [("http", 80)]  # unnamed port: no SRV
    assert recs["db.acme.svc.cluster.local"].ipv4 == ("10.1.0.1",)  # ready endpoints only
    assert recs["db-0.db.acme.svc.cluster.local"].ipv4 == ("10.1.0.1",)
    assert "db-1.db.acme.svc.cluster.local" not in recs
    assert recs["api.partner.com"].sources == ("ServiceEntry acme/ext",)


@pytest.mark.parametrize(("address", "expected"), [
    ("10.0.0.53", Upstream("10.0.0.53", 53)),
    ("10.0.0.53:5353", Upstream("10.0.0.53", 5353)),
    ("[fd00::53]:54", Upstream("fd00::53", 54)),
    ("tenant-1.dns.svc", Upstream("10.0.9.53", 53)),
    ("tenant-1.dns", Upstream("10.0.9.53", 53)),
    ("tenant-1.dns.svc.cluster.local:5300", Upstream("10.0.9.53", 5300)),
    ("missing.dns.svc", "names Service dns/missing, which does not exist"),
    ("a.b.c.example.com", "neither an IP address nor a Service name"),
    ("10.0.0.1:99999", "invalid port"),
])
def test_resolve_upstream(address: str, expected: Upstream | str) -> None:
    got = resolve_upstream(address, INV, zone="cluster.local")
    if isinstance(expected, str):
        assert isinstance(got, str) and expected in got
    else:
        assert got == expected


def test_deny_policy_never_forwards() -> None:
    view, err = build_tenant_view(pol(server_address="10.0.0.53", whitelist=("*.acme.svc.cluster.local",),
                                      default_action=DefaultAction.DENY),
                                  cluster_records(INV, zone="cluster.local"), INV, Settings())
    assert err is None
    assert view.upstreams == () and view.deny == ()
    assert {e.record.name for e in view.entries} == {
        "web.acme.svc.cluster.local", "db.acme.svc.cluster.local",
        "db-0.db.acme.svc.cluster.local"}


def test_forwarding_view_expands_search_level_blacklist() -> None:
    policy = pol(server_address="tenant-1.dns.svc", whitelist=("*.acme.svc.cluster.local",),
                 blacklist=("*.svc.cluster.local", "*.partner.com"))
    view, err = build_tenant_view(policy, cluster_records(INV, zone="cluster.local"), INV,
                                  Settings())
    assert err is None and view.upstreams == (Upstream("10.0.9.53", 53),)
    deny = {d.pattern: d.rule for d in view.deny}
    # *.svc.cluster.local becomes exact names (search-list expansions stay forwardable);
    # *.partner.com is not at a search level and stays a wildcard.
    assert deny == {
        "*.partner.com": "blacklist *.partner.com",
        "web.foo.svc.cluster.local": "blacklist *.svc.cluster.local",
        "tenant-1.dns.svc.cluster.local": "blacklist *.svc.cluster.local",
    }


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*.cluster.local", True), ("*.svc.cluster.local", True), ("*.ns.svc.cluster.local", True),
    ("*.local", True), ("*.api.ns.svc.cluster.local", False), ("*.foo.com", False),
    ("web.svc.cluster.local", False),
])
def test_search_level(pattern: str, expected: bool) -> None:
    assert is_search_level(Pattern(pattern), "cluster.local") is expected


def test_unresolvable_server_keeps_last_good_upstream() -> None:
    records = cluster_records(INV, zone="cluster.local")
    policy = pol(server_address="gone.dns.svc")
    view, err = build_tenant_view(policy, records, INV, Settings())
    assert err and "does not exist" in err
    assert view.upstreams == ()  # fail closed: nothing forwarded
    view, err = build_tenant_view(policy, records, INV, Settings(),
                                  last_good_upstream=Upstream("10.0.9.53", 53))
    assert err and view.upstreams == (Upstream("10.0.9.53", 53),)
    assert any("keeps serving" in n for n in view.notes)


def test_upgrade_is_never_sent_in_cleartext() -> None:
    view, _ = build_tenant_view(pol(server_address="10.0.0.53", upgrade=True,
                                    upgrade_type="dns-over-tls"),
                                cluster_records(INV, zone="cluster.local"), INV, Settings())
    assert view.upstreams == ()
    assert any("dns-over-tls" in n for n in view.notes)


def test_default_views() -> None:
    records = cluster_records(INV, zone="cluster.local")
    deny, _ = build_tenant_view(None, records, INV, Settings())
    assert deny.entries == () and deny.upstreams == ()
    cluster, _ = build_tenant_view(None, records, INV, Settings(
        default_view=DefaultView.CLUSTER, default_upstream="10.0.0.10"))
    assert len(cluster.entries) == len(records)
    assert cluster.upstreams == (Upstream("10.0.0.10", 53),)


def test_default_action_missing_means_allow_with_default_upstream() -> None:
    view, _ = build_tenant_view(pol(), cluster_records(INV, zone="cluster.local"), INV,
                                Settings(default_upstream="10.0.0.10:5353"))
    assert view.upstreams == (Upstream("10.0.0.10", 5353),)
    assert len(view.entries) == len(cluster_records(INV, zone="cluster.local"))
