"""A tenant that may forward nothing still has a tenant resolver (``Forwarding.server``
None): the real unbound, started by the real ResolverPool, answers the tenant's table as a
forwarding tenant's does (every type, UDP and TCP, PTR, dns-version) and NXDOMAIN for
every other name, for every type, without ever asking anyone: it has no forward-zone, its
RPZ denies ``*`` and its iterator may query no address. Were a name to reach the
iterator it could only fail (SERVFAIL), so NXDOMAIN here is the RPZ's own answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service, ServiceEntry, ServicePort
from controlplane.core.settings import DnsSettings
from controlplane.dns.views import Forwarding, build_tenant_view, cluster_records
from controlplane.resolvers.pool import ResolverPool
from tests.factories import policy
from tests.tools import require_tool

ZONE = "cluster.local"


def inventory() -> Inventory:
    return Inventory.of([
        Namespace("a", (("tenant", "a"),)), Namespace("b", (("tenant", "b"),)),
        Service("a", "api", cluster_ips=("10.96.1.10",), ports=(ServicePort("http", 80),)),
        Service("b", "secret", cluster_ips=("10.96.1.20",)),
        ServiceEntry("a", "partner", hosts=("api.partner.example",), addresses=("192.0.2.10",)),
        # DENY with cluster names only, and ALLOW with no server: nothing to forward to.
        policy("a", {"tenant": "a"}, default_action=DefaultAction.DENY,
               whitelist=(f"*.a.svc.{ZONE}", "api.partner.example")),
        policy("b", {"tenant": "b"}),
    ])


def forwards(inv: Inventory) -> dict[str, Forwarding]:
    settings = DnsSettings()
    records = cluster_records(inv, zone=settings.zone)
    out = {}
    for p in inv.policies.values():
        view = build_tenant_view(p, records, inv, settings)[0]
        assert view.forward is not None and view.forward.server is None, view
        out[view.tenant] = view.forward
    return out


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ResolverPool]:
    require_tool("unbound", "apt-get install unbound")
    p = ResolverPool(tmp_path / "pool")
    yield p
    p.stop_all()


def ask(port: int, name: str, rdtype: str, *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def answers(msg: dns.message.Message, rdtype: str) -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(r.to_text() for rrset in msg.answer if rrset.rdtype == t for r in rrset)


def nodata(msg: dns.message.Message) -> bool:
    return msg.rcode() == dns.rcode.NOERROR and not msg.answer


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_table_only_resolver_answers_the_table_and_nothing_else(
        pool: ResolverPool, tcp: bool) -> None:
    ports = {t: a.port for t, a in pool.apply(forwards(inventory())).items()}
    assert set(ports) == {"a", "b"}
    port = ports["a"]
    api = f"api.a.svc.{ZONE}"
    assert answers(ask(port, api, "A", tcp=tcp), "A") == ["10.96.1.10"]
    for rdtype in ("AAAA", "TXT", "MX"):
        assert nodata(ask(port, api, rdtype, tcp=tcp)), rdtype  # no ::ffff, no NOTIMP
    ptr = ask(port, dns.reversename.from_address("10.96.1.10").to_text(), "PTR", tcp=tcp)
    assert answers(ptr, "PTR") == [f"{api}."]
    srv = ask(port, f"_http._tcp.{api}", "SRV", tcp=tcp)
    assert answers(srv, "SRV") == [f"0 100 80 {api}."]
    assert answers(ask(port, f"dns-version.{ZONE}", "TXT", tcp=tcp), "TXT") == ['"1.1.0"']
    assert answers(ask(port, "api.partner.example", "A", tcp=tcp), "A") == ["192.0.2.10"]
    assert nodata(ask(port, "api.partner.example", "AAAA", tcp=tcp))
    # Everything else: NXDOMAIN from the resolver itself, for every type, never SERVFAIL
    # (which is what the iterator, allowed no address, would answer).
    for tenant in ("a", "b"):
        for name in ("www.example.com", "example.com", "com", "other.partner.example",
                     f"secret.b.svc.{ZONE}" if tenant == "a" else f"nope.b.svc.{ZONE}",
                     dns.reversename.from_address("192.0.2.1").to_text(),
                     dns.reversename.from_address("10.96.9.9").to_text()):
            for rdtype in ("A", "AAAA", "TXT", "MX", "PTR", "SRV", "NS"):
                got = ask(ports[tenant], name, rdtype, tcp=tcp)
                assert got.rcode() == dns.rcode.NXDOMAIN, (tenant, name, rdtype, got)
    assert answers(ask(ports["b"], f"secret.b.svc.{ZONE}", "A", tcp=tcp), "A") == ["10.96.1.20"]
    # The root itself is the RPZ's apex, which no trigger covers: it reaches the iterator,
    # which may ask no address (do-not-query-address), so SERVFAIL and nothing sent.
    assert ask(port, ".", "NS", tcp=tcp).rcode() == dns.rcode.SERVFAIL
    for tenant, stats in pool.stats().items():
        sent = stats.get("num.query.udpout", 0) + stats.get("num.query.tcpout", 0)
        assert "num.query.udpout" in stats and sent == 0, (tenant, stats)
