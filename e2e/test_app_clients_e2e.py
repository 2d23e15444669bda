"""The application-resolver harness (``e2e/harness/appclients.py``) against a correct server.

A reference unbound on a pod's nameserver address (``127.0.0.X:53``, UDP and TCP,
UDP answers capped at 512 bytes) serves a fake cluster zone. Every client asks every
case it can, over UDP and over TCP, in a private mount namespace with the pod's
resolv.conf; the table below says, row by row, what the client must make of
unbound's answer, including what a client cannot do. Each (client, transport) runs
once for the module (one process for all its names where the client can batch), and
unbound's counters around that batch prove the transport it used.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from e2e.harness.appclients import (
    CLIENTS,
    AppAnswer,
    AppClients,
    ErrorKind,
    Lookup,
    Transport,
    require_app_client_tools,
)
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns, TransportCounts
from tests.tools import require_tool

NS = "acme"
SVC = f"{NS}.svc.cluster.local"
WEB_IP, DUAL_IP, DUAL_IP6 = "10.96.0.10", "10.96.0.11", "fd00::11"
HEADLESS_IPS = tuple(f"10.244.0.{i}" for i in range(1, 31))  # 30 A records: > 512 bytes
LONG_TXT = ("a" * 200, "b" * 200, "c" * 200)  # one TXT record of three strings: > 512 bytes
SRV = f"0 100 80 web.{SVC}"

RECORDS = [
    f"web.{SVC}. 30 IN A {WEB_IP}",  # a Service: IPv4 only, so AAAA is NODATA
    f"dual.{SVC}. 30 IN A {DUAL_IP}", f"dual.{SVC}. 30 IN AAAA {DUAL_IP6}",
    *(f"headless.{SVC}. 30 IN A {ip}" for ip in HEADLESS_IPS),
    f"_http._tcp.web.{SVC}. 30 IN SRV {SRV}.",  # the named port "http"
    f"10.0.96.10.in-addr.arpa. 30 IN PTR web.{SVC}.",
    'dns-version.cluster.local. 30 IN TXT "1.1.0"',
    "example.com. 30 IN MX 10 mail.example.com.",
    'example.com. 30 IN TXT "v=spf1 -all"',
    f"alias.example.com. 30 IN CNAME web.{SVC}.",
    "long.example.com. 30 IN TXT " + " ".join(f'"{s}"' for s in LONG_TXT),
]
ZONES = ["cluster.local", "example.com", "in-addr.arpa"]

UDP, TCP = Transport.UDP, Transport.TCP
NXDOMAIN, NODATA, NOT_FOUND = ErrorKind.NXDOMAIN, ErrorKind.NODATA, ErrorKind.NOT_FOUND
# Clients no resolv.conf option or flag moves to TCP (they never use it, or only after TC).
CANNOT_FORCE_TCP = {
    "musl": "musl 1.2.3 (Debian bookworm) has no DNS over TCP at all",
    "busybox": "busybox nslookup sends UDP only",
    "java-jndi": "JNDI DNS has no TCP switch: UDP, TCP only after a truncated answer",
}
# Clients that retry a truncated UDP answer over TCP (the others keep the empty TC answer).
RETRY_TC_OVER_TCP = {"glibc", "getent", "go", "node-lookup", "node-cares", "java-inet",
                     "java-jndi", "dig"}


@dataclass(frozen=True)
class Expect:
    ok: bool
    error: ErrorKind | None = None
    addresses: tuple[str, ...] = ()
    records: tuple[str, ...] = ()


def addrs(*ips: str) -> Expect:
    return Expect(True, addresses=tuple(sorted(ips)))


def recs(*data: str) -> Expect:
    return Expect(True, records=tuple(sorted(data)))


def fail(kind: ErrorKind) -> Expect:
    return Expect(False, kind)


UNSUPPORTED = fail(ErrorKind.UNSUPPORTED)

# How each client reports unbound's NXDOMAIN and NODATA (default: as such).
NOT_FOUND_WORDS: dict[str, dict[ErrorKind, ErrorKind]] = {
    "musl": {NODATA: NXDOMAIN},  # "Name does not resolve" for both
    "getent": {NXDOMAIN: NOT_FOUND, NODATA: NOT_FOUND},  # exit 2
    "go": {NXDOMAIN: NOT_FOUND, NODATA: NOT_FOUND},  # "no such host"
    "node-lookup": {NXDOMAIN: NOT_FOUND, NODATA: NOT_FOUND},  # ENOTFOUND
    "java-inet": {NXDOMAIN: NOT_FOUND, NODATA: NOT_FOUND},  # UnknownHostException
}


@dataclass(frozen=True)
class Case:
    """A lookup, what unbound answers, and the clients that see something else (why)."""

    id: str
    lookup: Lookup
    reference: Expect
    views: dict[str, Expect] = field(default_factory=dict)


_NO_SEARCH = fail(NXDOMAIN)  # c-ares resolve* and JNDI do not apply the search list
CASES = [
    Case("short-name", Lookup("web"), addrs(WEB_IP)),
    Case("short-name-A", Lookup("web", "A"), addrs(WEB_IP),
         {"node-cares": _NO_SEARCH, "java-jndi": _NO_SEARCH}),
    Case("service-A", Lookup(f"web.{SVC}", "A"), addrs(WEB_IP)),
    Case("ipv4-only-AAAA", Lookup(f"web.{SVC}", "AAAA"), fail(NODATA),
         {"getent": addrs(f"::ffff:{WEB_IP}")}),  # ahostsv6 asks with AI_V4MAPPED
    Case("dual-stack", Lookup("dual"), addrs(DUAL_IP, DUAL_IP6)),
    Case("dual-stack-AAAA", Lookup(f"dual.{SVC}", "AAAA"), addrs(DUAL_IP6)),
    # 30 addresses: TC over UDP, the whole answer over TCP. musl and busybox keep the
    # empty truncated answer: musl goes on down the search list to NXDOMAIN, busybox
    # prints the other expansions' NXDOMAIN (short name) or nothing (FQDN).
    Case("headless", Lookup("headless"), addrs(*HEADLESS_IPS),
         {"musl": fail(NXDOMAIN), "busybox": fail(NXDOMAIN)}),
    Case("headless-A", Lookup(f"headless.{SVC}", "A"), addrs(*HEADLESS_IPS),
         {"musl": fail(NXDOMAIN), "busybox": fail(NODATA)}),
    Case("named-port-SRV", Lookup(f"_http._tcp.web.{SVC}", "SRV"), recs(SRV)),
    Case("cluster-ip-PTR", Lookup(WEB_IP, "PTR"), recs(f"web.{SVC}")),
    Case("dns-version-TXT", Lookup("dns-version.cluster.local", "TXT"), recs("1.1.0")),
    Case("external-MX", Lookup("example.com", "MX"), recs("10 mail.example.com")),
    Case("external-TXT", Lookup("example.com", "TXT"), recs("v=spf1 -all")),
    Case("long-TXT", Lookup("long.example.com", "TXT"), recs("".join(LONG_TXT)),
         {"busybox": fail(NODATA)}),  # the truncated answer: nothing printed
    # unbound does not chase a CNAME into another local zone: A of the alias is the CNAME
    # alone. Go 1.19's LookupCNAME asks A/AAAA and wants addresses at the end of the chain.
    Case("alias-CNAME", Lookup("alias.example.com", "CNAME"), recs(f"web.{SVC}"),
         {"go": fail(NOT_FOUND)}),
    Case("missing", Lookup("missing"), fail(NXDOMAIN)),
    Case("missing-A", Lookup(f"missing.{SVC}", "A"), fail(NXDOMAIN)),
]


def expected(client: str, case: Case, transport: Transport) -> Expect:
    spec = CLIENTS[client]
    if case.lookup.rdtype not in spec.types:
        return UNSUPPORTED
    if transport is TCP and client in CANNOT_FORCE_TCP:
        return UNSUPPORTED
    if client in case.views:
        return case.views[client]
    ref = case.reference
    if not ref.ok and ref.error is not None:
        return fail(NOT_FOUND_WORDS.get(client, {}).get(ref.error, ref.error))
    return ref


ROWS = [(client, case, transport) for transport in Transport for client in CLIENTS
        for case in CASES]


@dataclass(frozen=True)
class Batch:
    answers: dict[str, AppAnswer]  # by case id
    counts: TransportCounts  # what unbound received during the batch


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceDns]:
    require_app_client_tools()
    require_tool("unbound", "apt-get install unbound")
    workdir = tmp_path_factory.mktemp("app-clients-reference")
    server = ReferenceDns(records=RECORDS, local_zones=ZONES,
                          address=reserve_loopback_dns_address(), workdir=workdir)
    try:
        yield server.start()
    finally:
        server.stop()
        server.address.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def batches(reference: ReferenceDns, tmp_path_factory: pytest.TempPathFactory,
            pytestconfig: pytest.Config) -> Iterator[dict[tuple[str, Transport], Batch]]:
    """Every client's answers to every case, per transport: one run each."""
    workdir = tmp_path_factory.mktemp("app-clients")
    cache = Path(pytestconfig.cache.mkdir("app-clients")) if pytestconfig.cache else workdir
    clients = AppClients(nameserver=reference.address.host, namespace=NS, cache_dir=cache,
                         workdir=workdir)
    print(f"\npod resolv.conf:\n{clients.resolv_conf(UDP).read_text()}")
    out = {}
    for transport in Transport:
        for client in CLIENTS:
            before = reference.transport_counts()
            got = clients.lookup(client, [case.lookup for case in CASES], transport=transport)
            counts = reference.transport_counts() - before
            out[(client, transport)] = Batch({c.id: a for c, a in zip(CASES, got, strict=True)},
                                             counts)
            print(f"  {client:11} {transport.value}: unbound saw {counts}")
    yield out
    shutil.rmtree(workdir, ignore_errors=True)


def test_reference_truncates_large_answers_over_udp(reference: ReferenceDns) -> None:
    """The premise of the TCP rows: the headless and long-TXT answers do not fit UDP."""
    host = reference.address.host
    for name, rdtype, size in ((f"headless.{SVC}", "A", 30), ("long.example.com", "TXT", 1)):
        query = dns.message.make_query(name, rdtype)
        over_udp = dns.query.udp(query, host, timeout=2.0)
        assert over_udp.flags & dns.flags.TC, over_udp
        over_tcp = dns.query.tcp(query, host, timeout=2.0)
        assert not over_tcp.flags & dns.flags.TC
        assert sum(len(rrset) for rrset in over_tcp.answer) == size


@pytest.mark.parametrize(("client", "case", "transport"), ROWS,
                         ids=[f"{cl}-{ca.id}-{t.value}" for cl, ca, t in ROWS])
def test_client_sees_what_the_reference_answers(
        batches: dict[tuple[str, Transport], Batch], client: str, case: Case,
        transport: Transport) -> None:
    got = batches[(client, transport)].answers[case.id]
    want = expected(client, case, transport)
    print(got.line())
    if want.ok:
        assert got.ok, got
        assert (got.addresses, got.records) == (want.addresses, want.records), got
    else:
        assert not got.ok and got.error == want.error, got


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_forced_tcp_uses_only_tcp(batches: dict[tuple[str, Transport], Batch],
                                  client: str) -> None:
    counts = batches[(client, TCP)].counts
    assert (not CLIENTS[client].tcp) == (client in CANNOT_FORCE_TCP)
    if client in CANNOT_FORCE_TCP:  # nothing was run: every TCP row is "unsupported"
        assert counts == TransportCounts(0, 0), counts
        assert {a.error for a in batches[(client, TCP)].answers.values()} == {
            ErrorKind.UNSUPPORTED}
    else:
        assert counts.udp == 0 and counts.tcp > 0, counts


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_udp_retries_truncated_answers_over_tcp(
        batches: dict[tuple[str, Transport], Batch], client: str) -> None:
    """Over UDP every client meets the truncated headless answer; some retry over TCP."""
    counts = batches[(client, UDP)].counts
    assert counts.udp > 0, counts
    assert (counts.tcp > 0) == (client in RETRY_TC_OVER_TCP), counts
