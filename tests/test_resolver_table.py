"""The tenant resolver answers the tenant's table itself (translate/unbound_table.py),
as CoreDNS would: the real unbound, started and reloaded by the real ResolverPool, from
views built by ``build_tenant_view`` out of an inventory; asked with dnspython over UDP
and TCP. The tenant's own server is unreachable: every answer here is the resolver's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import pytest

from controlplane._kit.localrun import wait_for
from controlplane.core.inventory import Inventory
from controlplane.core.model import (
    DefaultAction,
    Endpoint,
    EndpointSlice,
    Namespace,
    Pod,
    Service,
    ServiceEntry,
    ServicePort,
)
from controlplane.core.settings import DnsSettings
from controlplane.dns.views import Forwarding, TenantView, build_tenant_view, cluster_records
from controlplane.resolvers.pool import ResolverPool
from controlplane.translate.unbound_table import table_zones
from tests.factories import policy
from tests.tools import require_tool

UNREACHABLE = "127.0.0.1:9"  # the tenant's server: nothing answers there
ZONE = "cluster.local"


PARTNER = ServiceEntry("a", "partner", hosts=("api.partner.example",),
                       addresses=("192.0.2.10",))


def inventory(*extra: object, partner: ServiceEntry = PARTNER) -> Inventory:
    db = Service("a", "db", headless=True, ports=(ServicePort("pg", 5432),))
    eps = EndpointSlice("a", "db", "db", ports=(ServicePort("pg", 5432),), endpoints=tuple(
        Endpoint((f"10.1.0.{i}",), ready=True) for i in range(1, 31)))
    return Inventory.of([
        Namespace("a", (("tenant", "a"),)), Namespace("b", (("tenant", "b"),)),
        Service("a", "web", cluster_ips=("10.96.0.10",), ports=(ServicePort("http", 80),)),
        Service("a", "dual", cluster_ips=("10.96.0.11", "fd00:10:96::11")),
        Service("b", "secret", cluster_ips=("10.96.0.20",)),
        Pod("a", "p1", ips=("10.2.0.5",)),
        db, eps, partner,
        # DENY: the RPZ holds a "*" deny trigger; the table's zones must pass it.
        policy("a", {"tenant": "a"}, server_address=UNREACHABLE,
               default_action=DefaultAction.DENY,
               whitelist=(f"*.a.svc.{ZONE}", f"*.a.pod.{ZONE}", "*.partner.example")),
        policy("b", {"tenant": "b"}, server_address=UNREACHABLE),
        *extra,  # type: ignore[list-item]
    ])


def forwards(inv: Inventory) -> dict[str, Forwarding]:
    settings = DnsSettings()
    records = cluster_records(inv, zone=settings.zone)
    out = {}
    for p in inv.policies.values():
        view: TenantView = build_tenant_view(p, records, inv, settings)[0]
        assert view.forward is not None, view.notes
        out[view.tenant] = view.forward
    return out


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ResolverPool]:
    require_tool("unbound", "apt-get install unbound")
    p = ResolverPool(tmp_path / "pool")
    yield p
    p.stop_all()


def ask(port: int, name: str, rdtype: str, *, tcp: bool = False,
        payload: int | None = None) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=payload is not None,
                               payload=payload or 512)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def answers(msg: dns.message.Message, rdtype: str) -> list[str]:
    t = dns.rdatatype.from_text(rdtype)
    return sorted(r.to_text() for rrset in msg.answer if rrset.rdtype == t for r in rrset)


def soa_in_authority(msg: dns.message.Message) -> bool:
    return any(r.rdtype == dns.rdatatype.SOA and r.name.to_text() == f"{ZONE}."
               for r in msg.authority)


def test_the_resolver_answers_the_table_as_coredns_would(pool: ResolverPool) -> None:
    port = pool.apply(forwards(inventory()))["a"].port
    db = f"db.a.svc.{ZONE}"
    # 30 endpoints: all over TCP; over UDP (512 bytes) truncated, so clients retry on TCP.
    full = ask(port, db, "A", tcp=True)
    assert answers(full, "A") == sorted(f"10.1.0.{i}" for i in range(1, 31))
    udp = ask(port, db, "A")
    assert udp.flags & dns.flags.TC
    # AAAA of an IPv4-only name: NOERROR, no records (no ::ffff stand-in), the zone's SOA.
    for name in (db, f"web.a.svc.{ZONE}"):
        nodata = ask(port, name, "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer, nodata
        assert soa_in_authority(nodata)
    # PTR of a cluster IP and of a pod IP the view has.
    ptr = ask(port, dns.reversename.from_address("10.96.0.10").to_text(), "PTR")
    assert answers(ptr, "PTR") == [f"web.a.svc.{ZONE}."]
    pod = ask(port, dns.reversename.from_address("10.2.0.5").to_text(), "PTR", tcp=True)
    assert answers(pod, "PTR") == [f"10-2-0-5.a.pod.{ZONE}."]
    # IPv6: the reverse zone sits under unbound's default empty zone for fd00::/8.
    dual = ask(port, f"dual.a.svc.{ZONE}", "AAAA")
    assert answers(dual, "AAAA") == ["fd00:10:96::11"]
    ptr6 = ask(port, dns.reversename.from_address("fd00:10:96::11").to_text(), "PTR")
    assert answers(ptr6, "PTR") == [f"dual.a.svc.{ZONE}."]
    # A ServiceEntry host outside the zone: its address; NODATA for AAAA.
    assert answers(ask(port, "api.partner.example", "A"), "A") == ["192.0.2.10"]
    partner6 = ask(port, "API.partner.example", "AAAA", tcp=True)
    assert partner6.rcode() == dns.rcode.NOERROR and not partner6.answer
    txt = ask(port, f"dns-version.{ZONE}", "TXT")
    assert answers(txt, "TXT") == ['"1.1.0"']
    srv = ask(port, f"_http._tcp.web.a.svc.{ZONE}", "SRV")
    assert answers(srv, "SRV") == [f"0 100 80 web.a.svc.{ZONE}."]
    assert len(answers(ask(port, f"_pg._tcp.{db}", "SRV", tcp=True), "SRV")) == 30
    # In any case (unbound matches names case-insensitively).
    assert answers(ask(port, f"WEB.A.svc.{ZONE}", "A"), "A") == ["10.96.0.10"]
    # A missing name in the zone, and a name of another tenant: NXDOMAIN with the SOA.
    for name in (f"nope.a.svc.{ZONE}", f"secret.b.svc.{ZONE}"):
        nx = ask(port, name, "A")
        assert nx.rcode() == dns.rcode.NXDOMAIN and soa_in_authority(nx), nx
    other = ask(port, dns.reversename.from_address("10.96.0.20").to_text(), "PTR")
    assert other.rcode() == dns.rcode.NXDOMAIN
    # ... while tenant b's resolver answers it.
    port_b = pool.apply(forwards(inventory()))["b"].port
    assert answers(ask(port_b, f"secret.b.svc.{ZONE}", "A"), "A") == ["10.96.0.20"]


def test_a_new_service_is_answered_after_a_live_reload(pool: ResolverPool) -> None:
    port = pool.apply(forwards(inventory()))["a"].port
    pid = pool.resolvers["a"].unbound.pid
    name = f"new.a.svc.{ZONE}"
    assert ask(port, name, "A").rcode() == dns.rcode.NXDOMAIN
    new = Service("a", "new", cluster_ips=("10.96.0.30",), ports=(ServicePort("dns", 53, "UDP"),))
    assert pool.apply(forwards(inventory(new)))["a"].port == port
    # with --resolver-table-updates ixfr apply returns before unbound has the change
    wait_for(lambda: answers(ask(port, name, "A", tcp=True), "A") == ["10.96.0.30"],
             timeout=10, what="the new name")
    wait_for(lambda: answers(ask(port, f"_dns._udp.{name}", "SRV"), "SRV")
             == [f"0 100 53 {name}."], timeout=10, what="its SRV")
    ptr = dns.reversename.from_address("10.96.0.30").to_text()
    wait_for(lambda: answers(ask(port, ptr, "PTR"), "PTR") == [f"{name}."], timeout=10,
             what="its PTR")
    # A ServiceEntry outside the zone: a new host, and new addresses for the old one.
    moved = ServiceEntry("a", "partner", hosts=("api.partner.example",),
                         addresses=("192.0.2.11", "192.0.2.12"))
    other = ServiceEntry("a", "other", hosts=("db.partner.example",), addresses=("192.0.2.20",))
    pool.apply(forwards(inventory(new, other, partner=moved)))
    assert answers(ask(port, "api.partner.example", "A"), "A") == ["192.0.2.11", "192.0.2.12"]
    assert answers(ask(port, "db.partner.example", "A"), "A") == ["192.0.2.20"]
    pool.apply(forwards(inventory(new, partner=moved)))  # "other" deleted
    gone = ask(port, "db.partner.example", "A")
    assert gone.rcode() != dns.rcode.NOERROR or not gone.answer, gone
    assert pool.resolvers["a"].unbound.pid == pid  # reloaded, not restarted
    # the cluster zone and the 10/8 reverse zone, reloaded or sent by IXFR
    assert pool.table_reloads + pool.table_transfers >= 2
    # The same table again: nothing rewritten.
    before = (pool.table_reloads, pool.table_transfers)
    pool.apply(forwards(inventory(new, partner=moved)))
    assert (pool.table_reloads, pool.table_transfers) == before


def test_an_empty_table_follows_its_ttl(pool: ResolverPool) -> None:
    """Every empty table is the one tuple ``()``: a TTL change alone still reaches the
    zones' heads (the SOA, NS and dns-version records carry the view's TTL)."""
    empty = replace(forwards(inventory())["a"], table=(), table_ttl=30)
    port = pool.apply({"a": empty})["a"].port

    def version_ttl() -> int:
        reply = ask(port, f"dns-version.{ZONE}", "TXT")
        return int(reply.answer[0].ttl) if reply.answer else -1
    wait_for(lambda: version_ttl() == 30, timeout=10, what="TTL 30")
    pool.apply({"a": replace(empty, table_ttl=60)})
    wait_for(lambda: version_ttl() == 60, timeout=10, what="TTL 60 with the same empty table")


def test_zone_text_holds_every_address_and_no_mapped_aaaa() -> None:
    zone = table_zones(forwards(inventory())["a"])[f"{ZONE}."]
    assert sum(line.startswith(f"db.a.svc.{ZONE}. 30 IN A ")
               for line in zone.splitlines()) == 30
    assert "::ffff" not in zone
    assert "secret.b" not in zone
