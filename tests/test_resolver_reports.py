"""The tenant resolvers' query reports, without unbound: the dnstap/Frame Streams parser
(``resolvers/dnstap.py``) against built frames and garbage, the reader on a real unix
socket with this test as the writer (``resolvers/reports.py``), and what the reports
become (``telemetry/resolver_reports.py``: query-log records, counters, metrics)."""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane._kit.localrun import wait_for
from controlplane.policy.selection import CompiledPolicy
from controlplane.resolvers.dnstap import (
    ACCEPT,
    FINISH,
    MAX_FRAME,
    READY,
    START,
    STOP,
    FrameReader,
    ResolverReply,
    decode,
)
from controlplane.resolvers.reports import ReportReader
from controlplane.telemetry.querylog import QueryLog
from controlplane.telemetry.resolver_reports import (
    RESOLVER_NODE,
    ReportsCollector,
    ResolverReports,
    Source,
    SourceIndex,
    peer_address,
)
from controlplane.telemetry.traffic import KINDS, DnsTraffic
from tests.factories import policy

# -- a dnstap writer, as unbound's (the protobuf by hand, like the decoder) ---------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def response(name: str, rdtype: str, rcode: int = 0, *, id_: int | None = None) -> bytes:
    query = dns.message.make_query(name, rdtype)
    if id_ is not None:
        query.id = id_
    msg = dns.message.make_response(query)
    msg.set_rcode(rcode)
    return msg.to_wire()


def dnstap(wire: bytes, *, address: str = "127.0.0.1", kind: int = 6, protocol: int = 1,
           sent: int = 1_800_000_000, port: int = 53000) -> bytes:
    ip = ipaddress.ip_address(address)
    message = (_field(1, kind) + _field(2, 1 if ip.version == 4 else 2) + _field(3, protocol)
               + _field(4, ip.packed) + _field(6, port)
               + _varint(13 << 3 | 5) + struct.pack("<I", 7)  # a fixed32 field, skipped
               + _field(12, sent) + _field(14, wire))
    return _field(14, message) + _field(15, 1)


def data_frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def control(kind: int) -> bytes:
    body = struct.pack(">I", kind) + struct.pack(">II", 1, 22) + b"protobuf:dnstap.Dnstap"
    return struct.pack(">II", 0, len(body)) + body


# -- the parser -------------------------------------------------------------------------


def test_a_client_response_is_decoded() -> None:
    reply = decode(dnstap(response("X.Bad.Example.", "MX", dns.rcode.NXDOMAIN),
                          address="10.1.2.3", protocol=2))
    assert reply is not None
    assert reply == ResolverReply(time=1_800_000_000.0, source="10.1.2.3", tcp=True,
                                  name="X.Bad.Example", type="MX", rcode="NXDOMAIN",
                                  port=53000, id=reply.id)
    v6 = decode(dnstap(response("www.example.com.", "TYPE65534"), address="fd00::5"))
    assert v6 is not None and (v6.source, v6.tcp, v6.type, v6.rcode) == (
        "fd00::5", False, "TYPE65534", "NOERROR")
    assert decode(dnstap(response(".", "NS")))  is not None
    # the DNS front asks HINFO for a client's ANY (RFC 8482): named, not TYPE13
    hinfo = decode(dnstap(response("blocked.example.", "HINFO", dns.rcode.NXDOMAIN)))
    assert hinfo is not None and (hinfo.type, hinfo.rcode) == ("HINFO", "NXDOMAIN")


def test_other_messages_and_broken_ones_are_none() -> None:
    wire = response("a.example.", "A")
    assert decode(dnstap(wire, kind=5)) is None  # CLIENT_QUERY
    assert decode(dnstap(wire)[:-5]) is None
    assert decode(dnstap(wire[:11])) is None  # shorter than a DNS header
    no_question = bytearray(wire)
    no_question[4:6] = b"\0\0"
    assert decode(dnstap(bytes(no_question))) is None
    assert decode(b"") is None
    assert decode(b"\xff" * 20) is None


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_garbage_never_raises(data: bytes) -> None:
    assert decode(data) is None or isinstance(decode(data), ResolverReply)


@given(st.lists(st.from_regex(r"[A-Za-z0-9_*-]{1,20}", fullmatch=True), min_size=1,
                max_size=5),
       st.sampled_from(["A", "AAAA", "TXT", "MX", "SRV", "PTR", "CAA", "HTTPS", "ANY"]),
       st.sampled_from([0, 2, 3, 5]), st.integers(0, 2**63), st.booleans())
@settings(max_examples=200, deadline=None)
def test_any_response_round_trips(labels: list[str], rdtype: str, rcode: int, flipped: int,
                                  tcp: bool) -> None:
    name = ".".join(labels)
    payload = dnstap(response(name + ".", rdtype, rcode), protocol=2 if tcp else 1)
    reply = decode(payload)
    assert reply is not None
    assert (reply.name, reply.type, reply.rcode, reply.tcp) == (
        name, rdtype, dns.rcode.to_text(rcode), tcp)
    # A flipped byte anywhere: a reply or None, never an exception.
    broken = bytearray(payload)
    broken[flipped % len(broken)] ^= 0xFF
    assert decode(bytes(broken)) is None or isinstance(decode(bytes(broken)), ResolverReply)


@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
@settings(max_examples=200, deadline=None)
def test_frames_come_out_whole_however_the_stream_is_cut(
        payloads: list[bytes], data: st.DataObject) -> None:
    stream = control(READY) + control(START) + b"".join(
        data_frame(p) for p in payloads if p) + control(STOP)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader()
    got = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += reader.feed(stream[start:end])
    assert got == [(READY, b""), (START, b""), *((0, p) for p in payloads if p), (STOP, b"")]
    assert reader.pending == 0


@given(st.binary(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_a_garbage_stream_is_refused_or_held_within_bounds(data: bytes) -> None:
    reader = FrameReader()
    try:
        frames = reader.feed(data)
    except ValueError:
        return  # out of step: the reader drops the connection
    assert all(len(p) <= MAX_FRAME for _, p in frames)
    assert reader.pending <= MAX_FRAME + 8


def test_an_oversized_frame_drops_the_stream() -> None:
    with pytest.raises(ValueError):
        FrameReader().feed(struct.pack(">I", MAX_FRAME + 1) + b"x")


# -- the reader, on a real socket --------------------------------------------------------


class Sink:
    def __init__(self) -> None:
        self.got: list[tuple[str, ResolverReply]] = []
        self.lock = threading.Lock()

    def __call__(self, tenant: str, reply: ResolverReply) -> None:
        with self.lock:
            self.got.append((tenant, reply))


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[tuple[ReportReader, Sink]]:
    sink = Sink()
    r = ReportReader("t1", str(tmp_path / "dnstap.sock"), sink, since=1_700_000_000,
                     poll=0.05).start()
    yield r, sink
    r.stop()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.settimeout(5)
    return s


def _frames_of(s: socket.socket) -> list[tuple[int, bytes]]:
    return FrameReader().feed(s.recv(4096))


def test_the_reader_speaks_frame_streams_and_hands_over_replies(
        reader: tuple[ReportReader, Sink]) -> None:
    r, sink = reader
    s = _connect(r.path)
    s.sendall(control(READY))
    assert _frames_of(s) == [(ACCEPT, b"")]
    wire = response("api.foo.com.", "TXT", dns.rcode.NXDOMAIN, id_=7)
    stream = (control(START) + data_frame(dnstap(wire)) + data_frame(b"\x01garbage")
              + data_frame(dnstap(wire, sent=1_600_000_000))  # before the reader started
              + data_frame(dnstap(wire, sent=1_800_000_001))  # the same answer again
              + data_frame(dnstap(wire, port=53001))  # another client's query
              + data_frame(dnstap(response("www.example.com.", "A"))))
    for i in range(0, len(stream), 7):  # in pieces: frames are put back together
        s.sendall(stream[i:i + 7])
    wait_for(lambda: len(sink.got) == 3 and r.skipped == 1, timeout=10, what="three replies")
    assert [(t, x.name, x.type, x.rcode, x.port) for t, x in sink.got] == [
        ("t1", "api.foo.com", "TXT", "NXDOMAIN", 53000),
        ("t1", "api.foo.com", "TXT", "NXDOMAIN", 53001),
        ("t1", "www.example.com", "A", "NOERROR", 53000)]
    assert (r.malformed, r.duplicates) == (1, 1)
    s.sendall(control(STOP))
    assert _frames_of(s) == [(FINISH, b"")]
    s.close()
    # unbound reconnects (a restart, a broken stream): the reader takes the next connection.
    again = _connect(r.path)
    again.sendall(struct.pack(">I", MAX_FRAME + 5) + b"junk")  # out of step: dropped
    wait_for(lambda: again.recv(10) == b"", timeout=10, what="the broken stream closed")
    again.close()
    third = _connect(r.path)
    third.sendall(control(READY))
    assert _frames_of(third) == [(ACCEPT, b"")]
    third.sendall(control(START) + data_frame(dnstap(response("b.foo.com.", "AAAA"))))
    wait_for(lambda: len(sink.got) == 4, timeout=10, what="a reply on the third connection")
    assert r.connections == 3
    third.close()


def test_a_failing_sink_does_not_end_the_reader(tmp_path: Path) -> None:
    calls: list[str] = []

    def sink(tenant: str, reply: ResolverReply) -> None:
        calls.append(reply.name)
        raise RuntimeError("bug")

    r = ReportReader("t", str(tmp_path / "s.sock"), sink, since=0, poll=0.05).start()
    try:
        s = _connect(r.path)
        s.sendall(control(READY))
        _frames_of(s)
        s.sendall(control(START) + data_frame(dnstap(response("a.x.", "A")))
                  + data_frame(dnstap(response("b.x.", "A"))))
        wait_for(lambda: calls == ["a.x", "b.x"], timeout=10,
                 what="both replies despite the bug")
        s.close()
    finally:
        r.stop()
    assert not Path(r.path).exists()


# -- what the reports become ------------------------------------------------------------


def _query_log() -> QueryLog:
    compiled = {"t1": CompiledPolicy.of(policy("p", {}, blacklist=("*.foo.com",),
                                               whitelist=("*.svc.cluster.local",)))}
    from controlplane.core.model import DefaultAction
    compiled["t2"] = CompiledPolicy.of(policy("q", {}, default_action=DefaultAction.WARN))
    return QueryLog(lambda: compiled, clock=lambda: 5.0)


def test_reports_become_the_envoy_paths_records_and_counters() -> None:
    qlog = _query_log()
    kept: list[str] = []
    sources = {("t1", "10.0.0.7"): Source("sleep.a", envoy_logs=False),
               ("t1", "10.0.0.8"): Source("old.a", envoy_logs=True)}
    reports = ResolverReports(qlog, sources=lambda t, a: sources.get((t, a),
                                                                     Source(RESOLVER_NODE)),
                              on_record=lambda r: kept.append(r.name))
    for qtype in ("TXT", "MX", "AAAA", "A"):  # a blacklisted name, every type: denied
        reports.answer(tenant="t1", source="10.0.0.7", name="Api.Foo.com", qtype=qtype,
                       rcode="NXDOMAIN")
    reports.answer(tenant="t1", source="10.9.9.9", name="www.example.com", qtype="TXT",
                   rcode="NOERROR")  # allowed: counted, not kept
    # A sidecar whose Envoy forwards A/AAAA itself logged those already: not twice.
    reports.answer(tenant="t1", source="10.0.0.8", name="x.foo.com", qtype="A",
                   rcode="NXDOMAIN")
    reports.answer(tenant="t1", source="10.0.0.8", name="x.foo.com", qtype="TXT",
                   rcode="NXDOMAIN")
    reports.answer(tenant="t2", source="127.0.0.1", name="www.example.com", qtype="SRV",
                   rcode="NOERROR")
    recs = qlog.recent(limit=100)
    assert sorted((r["tenant"], r["node"], r["name"], r["type"], r["rcode"], r["action"],
                   r["rule"]) for r in recs) == sorted([
        *(("t1", "sleep.a", "Api.Foo.com", t, "NXDOMAIN", "deny", "blacklist *.foo.com")
          for t in ("TXT", "MX", "AAAA", "A")),
        ("t1", "old.a", "x.foo.com", "TXT", "NXDOMAIN", "deny", "blacklist *.foo.com"),
        ("t2", RESOLVER_NODE, "www.example.com", "SRV", "NOERROR", "warn",
         "defaultAction WARN")])
    assert len(kept) == 6
    assert qlog.counts[("t1", "deny")] == 5 and qlog.counts[("t1", "allow")] == 1
    assert reports.tenant_counts() == {"t1": (6.0, 5.0), "t2": (1.0, 0.0)}
    assert reports.snapshot()[1] == {"t1": 1}

    traffic = DnsTraffic()
    traffic.resolver_counts = reports.tenant_counts
    totals = traffic.tenant_totals(qlog.counts)
    t1 = dict(zip(KINDS, totals["t1"], strict=True))
    assert t1 == {"queries": 6.0, "local": 0.0, "forwarded": 6.0, "nxdomain": 5.0,
                  "denied": 5.0, "warn": 0.0}
    traffic.sample(now=100.0)
    for _ in range(4):
        reports.answer(tenant="t2", source="", name="a.b", qtype="A", rcode="NXDOMAIN")
    traffic.sample(now=102.0)
    t2 = dict(zip(KINDS, traffic.tenant_rates(now=102.0)["t2"], strict=True))
    assert (t2["queries"], t2["forwarded"], t2["nxdomain"]) == (2.0, 2.0, 2.0)
    assert [len(traffic.tenants[t].history) for t in ("t1", "t2")] == [2, 2]

    families = {f.name: f for f in ReportsCollector(reports).collect()}
    samples = {(s.labels["tenant"], s.labels["rcode"]): s.value
               for s in families["dnscp_resolver_reports"].samples
               if s.name.endswith("_total")}
    assert samples == {("t1", "NXDOMAIN"): 5, ("t1", "NOERROR"): 1,
                       ("t2", "NOERROR"): 1, ("t2", "NXDOMAIN"): 4}


def test_peer_addresses() -> None:
    assert peer_address("ipv4:10.1.2.3:5000") == "10.1.2.3"
    assert peer_address("ipv6:[fd00::1]:5000") == "fd00::1"
    assert peer_address("ipv6:[::ffff:127.0.0.1]:5000") == "127.0.0.1"
    assert peer_address("unix:/tmp/x") == ""


def test_sources_are_looked_up_in_an_index_rebuilt_on_a_miss() -> None:
    now = [0.0]
    sidecars = [("t1", "10.0.0.7", "sleep.a", False), ("t1", "10.0.0.8", "old.a", True),
                ("t1", "10.0.0.9", "one.a", False), ("t1", "10.0.0.9", "two.a", True),
                ("t2", "10.0.0.7", "other", True), ("t1", "", "unix.a", True)]
    walks = [0]

    def listing() -> list[tuple[str, str, str, bool]]:
        walks[0] += 1
        return list(sidecars)

    index = SourceIndex(listing, max_age=5.0, miss_interval=0.1, clock=lambda: now[0])
    assert index("t1", "10.0.0.7") == Source("sleep.a", envoy_logs=False)
    assert index("t1", "10.0.0.8") == Source("old.a", envoy_logs=True)
    # Two sidecars on one address (a shared host): no node, and A/AAAA skipped if either's
    # Envoy logs them.
    assert index("t1", "10.0.0.9") == Source(RESOLVER_NODE, envoy_logs=True)
    assert index("t2", "10.0.0.7") == Source("other", envoy_logs=True)
    assert walks[0] == 1
    assert index("t1", "10.9.9.9") == Source(RESOLVER_NODE)  # a miss, too soon to look again
    assert walks[0] == 1
    sidecars.append(("t1", "10.9.9.9", "new.a", False))  # a sidecar connects
    now[0] = 0.2
    assert index("t1", "10.9.9.9") == Source("new.a")
    assert walks[0] == 2
    sidecars.pop(0)  # ... and one leaves: forgotten once the index is old
    now[0] = 1.0
    assert index("t1", "10.0.0.7") == Source("sleep.a")
    now[0] = 6.0
    assert index("t1", "10.0.0.7") == Source(RESOLVER_NODE)
