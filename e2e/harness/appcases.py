"""The lookups every real application client makes in the e2e tests, and what a correct
server (unbound, CoreDNS) makes each client see: shared by the reference run
(``e2e/test_app_clients_e2e.py``) and the runs through a sidecar's DNS front
(``e2e/test_sidecar_clients_e2e.py``). ``RECORDS`` and ``ZONES`` are the reference
server's data; a sidecar's tenant gets the same names from its Services and its own DNS
server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from e2e.harness.appclients import CLIENTS, ErrorKind, Lookup, Transport

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


__all__ = ["CASES", "Case", "HEADLESS_IPS", "TCP", "UDP", "Expect", "RECORDS", "ZONES", "expected", "NS", "SVC",
           "CANNOT_FORCE_TCP", "RETRY_TC_OVER_TCP"]
