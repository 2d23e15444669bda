"""Tenant views: names, forwarding to the tenant resolver, its triggers, notes."""

from __future__ import annotations

import pytest

from controlplane.core.errors import BadAddress, BadUpstream, InvalidValue, MissingService
from controlplane.core.inventory import Inventory
from controlplane.core.model import (
    DefaultAction,
    Endpoint,
    EndpointSlice,
    Service,
    ServiceEntry,
    ServicePort,
)
from controlplane.core.settings import DefaultView, DnsSettings
from controlplane.dns.views import (
    Forwarding,
    Transport,
    Upstream,
    build_tenant_view,
    cluster_records,
    resolve_upstream,
    with_resolver,
)
from tests.factories import policy

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
    ("missing.dns.svc", (MissingService, "names Service dns/missing, which does not exist")),
    ("a.b.c.example.com", (BadUpstream, "neither an IP address nor a Service name")),
    ("10.0.0.1:99999", (BadAddress, "invalid port")),
])
def test_resolve_upstream(address: str,
                          expected: Upstream | tuple[type[InvalidValue], str]) -> None:
    if isinstance(expected, Upstream):
        assert resolve_upstream(address, INV, zone="cluster.local") == expected
        return
    error, text = expected
    with pytest.raises(error, match=text) as info:
        resolve_upstream(address, INV, zone="cluster.local")
    assert type(info.value) is error


def test_deny_policy_without_external_whitelist_never_forwards() -> None:
    view, err = build_tenant_view(policy(server_address="10.0.0.53", whitelist=("*.acme.svc.cluster.local",),
                                      default_action=DefaultAction.DENY),
                                  cluster_records(INV, zone="cluster.local"), INV, DnsSettings())
    assert err is None
    # A resolver that holds the table and denies everything else (no server to ask).
    assert view.forward is not None and view.forward.server is None and view.upstreams == ()
    assert [(t.name, t.deny) for t in view.forward.triggers] == [("*", True)]
    assert {e.record.name for e in view.entries} == {
        "web.acme.svc.cluster.local", "db.acme.svc.cluster.local",
        "db-0.db.acme.svc.cluster.local"}


def test_deny_policy_with_external_whitelist_forwards_only_those() -> None:
    view, err = build_tenant_view(policy(server_address="10.0.0.53",
                                      whitelist=("www.example.com", "*.acme.svc.cluster.local"),
                                      default_action=DefaultAction.DENY),
                                  cluster_records(INV, zone="cluster.local"), INV, DnsSettings())
    assert err is None and view.forward is not None and view.unenforced == ()
    triggers = {t.name: t.deny for t in view.forward.triggers}
    # Cluster-zone patterns are left to the resolver's own zone (NXDOMAIN when unknown);
    # every ancestor of a trigger gets its own (unbound matches them as DNS wildcards).
    assert triggers == {"*": True, "www.example.com": False, "*.www.example.com": True,
                        "example.com": True, "*.example.com": True, "com": True,
                        "*.com": True}


def test_forwarding_view_carries_policy_triggers() -> None:
    forwarding = policy(server_address="tenant-1.dns.svc", whitelist=("*.ok.partner.com",),
                        blacklist=("*.svc.cluster.local", "*.partner.com", "*.net"))
    view, err = build_tenant_view(forwarding, cluster_records(INV, zone="cluster.local"), INV,
                                  DnsSettings())
    assert err is None and view.forward is not None
    assert view.forward.server == Upstream("10.0.9.53", 53)
    assert view.forward.transport is Transport.UDP
    assert {t.name: (t.deny, t.rule) for t in view.forward.triggers} == {
        "*.partner.com": (True, "blacklist *.partner.com"),
        "*.ok.partner.com": (False, "whitelist *.ok.partner.com"),
        "ok.partner.com": (True, "blacklist *.partner.com"),
        "partner.com": (False, "defaultAction ALLOW"),
        "*.com": (False, "defaultAction ALLOW"),
        "com": (False, "defaultAction ALLOW"),
        "*.net": (True, "blacklist *.net"),
        "net": (False, "defaultAction ALLOW"),
    }
    assert view.unenforced == ()
    assert view.upstreams == ()  # the hub points it at the running resolver
    running = with_resolver(view, Upstream("127.0.0.1", 5300))
    assert running.upstreams == (Upstream("127.0.0.1", 5300),)
    stopped = with_resolver(view, None)
    assert stopped.upstreams == () and any("no tenant resolver" in n for n in stopped.notes)


def test_unresolvable_server_keeps_last_good_upstream() -> None:
    records = cluster_records(INV, zone="cluster.local")
    unresolvable = policy(server_address="gone.dns.svc")
    view, err = build_tenant_view(unresolvable, records, INV, DnsSettings())
    assert err and "does not exist" in err
    assert view.forward is not None and view.forward.server is None  # fail closed: table only
    view, err = build_tenant_view(unresolvable, records, INV, DnsSettings(),
                                  last_good_upstream=Upstream("10.0.9.53", 53))
    assert err and view.forward is not None and view.forward.server == Upstream("10.0.9.53", 53)
    assert any("keeps serving" in n for n in view.notes)


@pytest.mark.parametrize(("kw", "expected"), [
    (dict(server_address="tenant-1-encrypted.dns.svc", upgrade=True, upgrade_type="dns-over-tls"),
     Forwarding(Upstream("10.0.9.99", 853), Transport.TLS, "tenant-1-encrypted.dns.svc")),
    (dict(server_address="tenant-1-encrypted.dns.svc", upgrade=True, upgrade_type="dns-over-https"),
     Forwarding(Upstream("10.0.9.99", 443), Transport.HTTPS, "tenant-1-encrypted.dns.svc")),
    (dict(server_address="10.0.0.53:8853", upgrade=True, upgrade_type="dns-over-tls",
          tls_server_name="DNS.Example", tls_ca_bundle="-----BEGIN CERTIFICATE-----x"),
     Forwarding(Upstream("10.0.0.53", 8853), Transport.TLS, "dns.example",
                ca_bundle="-----BEGIN CERTIFICATE-----x")),
])
def test_upgrade_forwards_encrypted_with_a_verified_name(kw: dict[str, object],
                                                          expected: Forwarding) -> None:
    inv = Inventory.of([*INV.services.values(),
                        Service("dns", "tenant-1-encrypted", cluster_ips=("10.0.9.99",))])
    view, err = build_tenant_view(policy(**kw), cluster_records(inv, zone="cluster.local"), inv,
                                  DnsSettings())
    assert err is None and view.forward is not None
    got = view.forward
    assert (got.server, got.transport, got.tls_name, got.ca_bundle) == (
        expected.server, expected.transport, expected.tls_name, expected.ca_bundle)


def test_upgrade_to_an_ip_without_server_name_fails_closed() -> None:
    view, err = build_tenant_view(policy(server_address="10.0.0.53", upgrade=True,
                                      upgrade_type="dns-over-tls"),
                                  cluster_records(INV, zone="cluster.local"), INV, DnsSettings())
    assert view.forward is not None and view.forward.server is None and view.upstreams == ()
    assert err and "serverName" in err


def test_default_views() -> None:
    records = cluster_records(INV, zone="cluster.local")
    deny, _ = build_tenant_view(None, records, INV, DnsSettings())
    assert deny.entries == () and deny.forward is None
    cluster, _ = build_tenant_view(None, records, INV, DnsSettings(
        default_view=DefaultView.CLUSTER, default_upstream="10.0.0.10"))
    assert len(cluster.entries) == len(records)
    assert cluster.forward is not None and cluster.forward.server == Upstream("10.0.0.10", 53)


def test_default_action_missing_means_allow_with_default_upstream() -> None:
    view, _ = build_tenant_view(policy(), cluster_records(INV, zone="cluster.local"), INV,
                                DnsSettings(default_upstream="10.0.0.10:5353"))
    assert view.forward is not None and view.forward.server == Upstream("10.0.0.10", 5353)
    assert len(view.entries) == len(cluster_records(INV, zone="cluster.local"))
