"""The application-resolver harness (``e2e/harness/appclients.py``) against a correct server.

A reference unbound on a pod's nameserver address (``127.0.0.X:53``, UDP and TCP,
UDP answers capped at 512 bytes) serves a fake cluster zone. Every client asks every
case it can, over UDP and over TCP, in a private mount namespace with the pod's
resolv.conf; the table (``e2e/harness/appcases.py``, shared with the runs through a sidecar) says,
row by row, what the client must make of unbound's answer, including what a client
cannot do. Each (client, transport) runs
once for the module (one process for all its names where the client can batch), and
unbound's counters around that batch prove the transport it used.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import pytest

from e2e.harness.appcases import (
    CANNOT_FORCE_TCP,
    CASES,
    NS,
    RECORDS,
    RETRY_TC_OVER_TCP,
    SVC,
    TCP,
    UDP,
    ZONES,
    Case,
    expected,
)
from e2e.harness.appclients import (
    CLIENTS,
    AppAnswer,
    AppClients,
    ErrorKind,
    Transport,
    require_app_client_tools,
)
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns, TransportCounts
from tests.tools import require_tool

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
