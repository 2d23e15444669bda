"""The DNS table's domains written directly (domain_wire.py) are the messages' bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.dns.records import ClusterTarget, NameRecord, SrvRecord
from controlplane.translate import domain_wire
from controlplane.translate.dns_table import address_domain_message, srv_domain_message

texts = st.text(min_size=0, max_size=140)  # over 127 bytes: two-byte lengths
numbers = st.one_of(st.integers(0, 3), st.integers(0, (1 << 32) - 1))
srv_records = st.builds(SrvRecord, service=st.sampled_from(["", "http", "grpc", "x" * 200]),
                        protocol=st.sampled_from(["", "tcp", "udp"]), port=numbers,
                        target=texts, priority=numbers, weight=numbers)
records = st.builds(
    NameRecord, name=texts,
    ipv4=st.lists(st.sampled_from(["10.0.0.1", "192.168.100.200", ""]), max_size=9).map(tuple),
    ipv6=st.lists(st.sampled_from(["fd00::1", "::ffff:10.0.0.1"]), max_size=9).map(tuple),
    srv=st.lists(srv_records, max_size=12).map(tuple),
    cluster=st.lists(st.builds(ClusterTarget, host=texts, port=numbers), max_size=2).map(tuple),
    ttl=st.one_of(st.integers(-3, 3), st.integers(-(1 << 63), (1 << 63) - 1)))


@settings(max_examples=400, deadline=None)
@given(records)
def test_written_domains_are_the_serialised_messages(rec: NameRecord) -> None:
    assert domain_wire.address_domain(rec) == address_domain_message(rec)
    assert domain_wire.srv_domain(rec) == srv_domain_message(rec)


def test_the_common_shapes() -> None:
    plain = NameRecord(name="a.ns.svc.cluster.local", ipv4=("10.0.0.1",),
                       ipv6=("::ffff:10.0.0.1",),
                       srv=(SrvRecord("http", "tcp", 80, "a.ns.svc.cluster.local"),
                            SrvRecord("http", "tcp", 8080, "b.a.ns.svc.cluster.local"),
                            SrvRecord("dns", "udp", 53, "a.ns.svc.cluster.local")))
    external = NameRecord(name="ext.ns.svc.cluster.local", kind="externalname",
                          cluster=(ClusterTarget("example.com", 443),))
    empty = NameRecord(name="none.x")
    for rec in (plain, external, empty):
        assert domain_wire.address_domain(rec) == address_domain_message(rec)
        assert domain_wire.srv_domain(rec) == srv_domain_message(rec)
    assert domain_wire.address_domain(empty) == b""


def test_what_the_fast_path_does_not_write_is_left_to_the_messages() -> None:
    huge_ttl = NameRecord(name="a.x", ipv4=("10.0.0.1",), ttl=1 << 63,
                          srv=(SrvRecord("http", "tcp", 80, "a.x"),))
    assert domain_wire.address_domain(huge_ttl) is None
    assert domain_wire.srv_domain(huge_ttl) is None
    big_port = NameRecord(name="a.x", srv=(SrvRecord("http", "tcp", 1 << 32, "a.x"),))
    assert domain_wire.srv_domain(big_port) is None
    surrogate = NameRecord(name="a\udc80.x", ipv4=("10.0.0.1",))
    assert domain_wire.address_domain(surrogate) is None


def test_the_filter_config_written_around_the_table_is_the_packed_message() -> None:
    from google.protobuf.any_pb2 import Any

    from controlplane.dns.views import TableEntry, TenantView, Upstream
    from controlplane.policy.selection import Action
    from controlplane.translate.listeners import (
        DNS_FILTER_CONFIG_TYPE,
        dns_filter_config,
        dns_filter_config_bytes,
    )

    rec = NameRecord(name="a.ns.svc.cluster.local", ipv4=("10.0.0.1",),
                     srv=(SrvRecord("http", "tcp", 80, "a.ns.svc.cluster.local"),))
    for entries in ((), (TableEntry(rec, Action.ALLOW, "default"),)):
        for log_queries in (False, True):
            view = TenantView(tenant="t", policy="p", upstreams=(), ttl_seconds=30,
                              entries=entries, log_queries=log_queries)
            for servers in (None, (), (Upstream("127.0.0.1", 5300),)):
                packed = Any()
                packed.Pack(dns_filter_config(view, servers=servers))
                assert packed.type_url == DNS_FILTER_CONFIG_TYPE
                assert dns_filter_config_bytes(view, servers=servers) == packed.value


own_srv = st.lists(st.tuples(st.sampled_from(["", "http", "grpc", "x" * 200]),
                             st.sampled_from(["", "tcp", "udp"]), numbers, numbers, numbers),
                   min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(name=texts, ports=own_srv,
       ttl=st.one_of(st.integers(-3, 3), st.integers(-(1 << 64), 1 << 64)),
       ipv4=st.lists(st.sampled_from(["10.0.0.1", "192.168.100.200"]), max_size=2).map(tuple))
def test_srv_records_that_name_their_own_record_are_the_serialised_message(
        name: str, ports: list[tuple[str, str, int, int, int]], ttl: int,
        ipv4: tuple[str, ...]) -> None:
    """Every target the record's own name (a ClusterIP Service's SRV records: written from
    a template of the ports and the name's length), the message's bytes; None (the message
    is built instead) outside uint32 / int64."""
    rec = NameRecord(name=name, ipv4=ipv4, ttl=ttl, srv=tuple(
        SrvRecord(service, protocol, port, name, priority=priority, weight=weight)
        for service, protocol, port, priority, weight in ports))
    outside = (not -(1 << 63) <= ttl < 1 << 63
               or any(not 0 <= n < 1 << 32 for p in ports for n in p[2:]))
    for _ in range(2):  # the template made, then found
        if outside:
            assert domain_wire.srv_domain(rec) is None
        else:
            assert domain_wire.srv_domain(rec) == srv_domain_message(rec)
