"""The primary's wire format (resolvers/zone_wire.py) read back by dnspython."""

from __future__ import annotations

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from controlplane.core.errors import WireError
from controlplane.resolvers.zone_wire import (
    IXFR,
    NOTAUTH,
    SOA,
    parse_query,
    response,
    rr_wire,
)

LINES = [
    "@ 30 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 7 60 10 2147483647 30",
    "@ 30 IN NS ns.dns.cluster.local.",
    'dns-version.cluster.local. 30 IN TXT "1.1.0"',
    "web.a.svc.cluster.local. 30 IN A 10.96.0.10",
    "web.a.svc.cluster.local. 30 IN AAAA fd00:10:96::10",
    "_http._tcp.web.a.svc.cluster.local. 30 IN SRV 0 100 80 web.a.svc.cluster.local.",
    "x.a.svc.cluster.local. 30 IN CNAME api.example.",
    "*.w.a.svc.cluster.local. 5 IN A 192.0.2.1",
    "10.0.96.10.in-addr.arpa. 30 IN PTR web.a.svc.cluster.local.",
]


def test_an_ixfr_query_and_its_answer_read_back() -> None:
    q = dns.message.make_query("cluster.local.", "IXFR")
    q.authority = [dns.rrset.from_text("cluster.local.", 0, "IN", "SOA",
                                       "a. b. 41 60 10 20 30")]
    query = parse_query(q.to_wire())
    assert (query.qname, query.qtype, query.serial, query.id) == ("cluster.local.", IXFR, 41,
                                                                   q.id)
    wires = response(query, [rr_wire(line, "cluster.local.") for line in LINES])
    assert len(wires) == 1
    got = dns.message.from_wire(wires[0], xfr=True, origin=None)
    assert got.id == q.id and got.rcode() == 0
    texts = [f"{rrset.name} {rrset.ttl} IN {dns.rdatatype.to_text(rrset.rdtype)} {rd}"
             for rrset in got.answer for rd in rrset]
    assert texts == [line.replace("@", "cluster.local.", 1) for line in LINES]


def test_a_large_answer_is_split_under_the_tcp_limit() -> None:
    query = parse_query(dns.message.make_query("cluster.local.", "IXFR").to_wire())
    rrs = [rr_wire(f"n{i}.a.svc.cluster.local. 30 IN A 10.0.{i // 250}.{i % 250}",
                   "cluster.local.") for i in range(4000)]
    wires = response(query, rrs)
    assert len(wires) > 1 and all(len(w) < 65535 for w in wires)
    assert sum(len(dns.message.from_wire(w).answer) for w in wires) == 4000


def test_soa_query_of_another_zone_and_bad_input() -> None:
    query = parse_query(dns.message.make_query("example.", "SOA").to_wire())
    assert query.qtype == SOA and query.serial is None
    refused = dns.message.from_wire(response(query, [], rcode=NOTAUTH)[0])
    assert refused.rcode() == NOTAUTH
    with pytest.raises(WireError):
        parse_query(b"\x00\x01")
    with pytest.raises(WireError):
        rr_wire("x.example. 30 IN MX 10 mail.example.", "example.")
