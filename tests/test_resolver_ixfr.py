"""``--resolver-table-updates ixfr``: a change of a tenant's table reaches the real unbound
by IXFR from the pool's loopback primary (resolvers/primary.py), not by reading its whole
zone file again; the file stays the zone's copy across a resolver's restart without the
control plane; an adopted resolver, or one that asks from a serial the primary's
history lacks, is resynced by its file and ``auth_zone_reload``. ``reload`` names no
primary and has the change when ``apply`` returns.

``apply`` returns before unbound has the change: every check waits for the answer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import pytest

from controlplane._kit.localrun import wait_for
from controlplane.core.settings import ResolverTableUpdates
from controlplane.dns.records import NameRecord
from controlplane.dns.views import Forwarding, TableEntry, Upstream
from controlplane.policy.selection import Action
from controlplane.resolvers.pool import ResolverPool
from controlplane.resolvers.primary import EXPIRE, REFRESH, ZonePrimary
from controlplane.runtime.process import running
from tests.tools import require_tool

TENANT = "acme"
ZONE = "cluster.local."
WEB = NameRecord("web.a.svc.cluster.local", ipv4=("10.96.0.10",), kind="service")
DB = NameRecord("db.a.svc.cluster.local", ipv4=("10.96.0.11",), kind="service")


def forward(*records: NameRecord) -> Forwarding:
    return Forwarding(server=None, table=tuple(TableEntry(r, Action.ALLOW, "test")
                                               for r in records))


def ask(upstream: Upstream, name: str, rdtype: str = "A") -> list[str]:
    reply = dns.query.udp(dns.message.make_query(name, rdtype), upstream.host,
                          port=upstream.port, timeout=3)
    return sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


def answers(upstream: Upstream, name: str, want: list[str], *, rdtype: str = "A",
            also: Callable[[], object] | None = None) -> None:
    """Wait until ``name`` answers ``want`` (``also`` run between tries)."""
    def check() -> bool:
        if also is not None:
            also()
        return ask(upstream, name, rdtype) == want
    wait_for(check, timeout=10, what=f"{name} {rdtype} -> {want}")


def serials(pool: ResolverPool) -> dict[str, int]:
    text = pool._control(pool.resolvers[TENANT], "list_auth_zones") or ""  # noqa: SLF001
    return {f[0]: int(f[2]) for f in (line.split() for line in text.splitlines())
            if len(f) >= 3 and f[1] == "serial"}


def file_soa(pool: ResolverPool, res_dir: str) -> list[str]:
    text = (Path(res_dir) / "table-cluster.local.zone").read_text()
    return next(line for line in text.splitlines() if " SOA " in line or "\tSOA\t" in line).split()


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., ResolverPool]]:
    """IXFR pools on one directory; every resolver a state file names is stopped at the
    end, and every unbound a test started itself."""
    require_tool("unbound", "apt-get install unbound")
    made: list[ResolverPool] = []
    pids: list[int] = []

    def make(**settings: Any) -> ResolverPool:
        made.append(ResolverPool(tmp_path / "resolvers",
                                 table_updates=ResolverTableUpdates.IXFR,
                                 **{"grace_seconds": 0.0, "adoption_seconds": 0.0, **settings}))
        return made[-1]

    make.pids = pids  # type: ignore[attr-defined]
    yield make
    for pool in made:
        pids += [r.unbound.pid for r in pool.resolvers.values()]
        pool.stop_all(detach=False)
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_change_arrives_by_ixfr(pools: Callable[..., ResolverPool]) -> None:
    pool = pools()
    address = pool.apply({TENANT: forward(WEB, DB)})[TENANT]
    res = pool.resolvers[TENANT]
    conf = Path(res.conf_path).read_text()
    assert f"primary: 127.0.0.1@{res.paths.primary_port}" in conf
    assert "num-threads: 2" in conf
    assert serials(pool)[ZONE] == 1
    moved = replace(WEB, ipv4=("10.96.0.20",))
    pool.prepare({TENANT: forward(moved, DB)})
    pool.apply({TENANT: forward(moved, DB)})
    answers(address, WEB.name, ["10.96.0.20"])
    answers(address, "20.0.96.10.in-addr.arpa.", [f"{WEB.name}."], rdtype="PTR")
    assert pool.table_reloads == 0 and pool.table_transfers == 2  # the zone and its PTR
    assert pool.primary is not None and pool.primary.served["ixfr"] >= 2
    wait_for(lambda: serials(pool).get(ZONE) == 2, timeout=10, what="serial 2")
    # unbound wrote the zone back to its file, SOA timers and all
    wait_for(lambda: file_soa(pool, res.paths.directory)[6] == "2", timeout=10,
             what="the file's serial 2")
    assert file_soa(pool, res.paths.directory)[7:10] == [str(REFRESH), "10", str(EXPIRE)]
    # a name removed, one added: the next serial, still no reload
    gone = forward(moved)
    pool.apply({TENANT: gone})
    answers(address, DB.name, [])
    assert pool.table_reloads == 0


def test_a_resolver_restarted_without_its_primary_answers_from_its_file(
        pools: Callable[..., ResolverPool]) -> None:
    pool = pools(persistent=True)
    pool.apply({TENANT: forward(WEB)})
    res = pool.resolvers[TENANT]
    moved = replace(WEB, ipv4=("10.96.0.30",))
    pool.apply({TENANT: forward(moved)})
    answers(res.paths.listen, WEB.name, ["10.96.0.30"])
    wait_for(lambda: file_soa(pool, res.paths.directory)[6] == "2", timeout=10,
             what="the file written by unbound")
    assert pool.primary is not None
    pool.primary.close()  # the control plane is gone, and then the resolver
    res.unbound.stop(timeout=5)
    again = subprocess.Popen(["unbound", "-d", "-c", res.conf_path],  # noqa: S603,S607
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pools.pids.append(again.pid)  # type: ignore[attr-defined]
    answers(res.paths.listen, WEB.name, ["10.96.0.30"])
    soa = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1",
                        port=res.paths.listen.port, timeout=3).answer[0][0]
    assert soa.rdtype == dns.rdatatype.SOA and soa.expire == EXPIRE and soa.serial == 2
    again.kill()
    again.wait()


def test_an_adopted_resolver_is_resynced_then_takes_changes_by_ixfr(
        pools: Callable[..., ResolverPool]) -> None:
    first = pools(persistent=True)
    address = first.apply({TENANT: forward(WEB, DB)})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    port = first.resolvers[TENANT].paths.primary_port
    first.apply({TENANT: forward(replace(WEB, ipv4=("10.96.0.40",)), DB)})
    answers(address, WEB.name, ["10.96.0.40"])
    assert first.primary is not None
    first.primary.close()  # the control plane dies; the resolver keeps its serial 2

    second = pools(persistent=True)
    table = forward(replace(WEB, ipv4=("10.96.0.41",)), DB)
    assert second.apply({TENANT: table}) == {TENANT: address}
    res = second.resolvers[TENANT]
    assert res.unbound.pid == pid and res.paths.primary_port == port
    assert second.table_reloads >= 1 and second.table_transfers == 0  # the resync
    answers(address, WEB.name, ["10.96.0.41"])
    assert serials(second)[ZONE] >= 3  # above the one it had
    reloads = second.table_reloads
    second.prepare({TENANT: forward(replace(WEB, ipv4=("10.96.0.42",)), DB)})
    second.apply({TENANT: forward(replace(WEB, ipv4=("10.96.0.42",)), DB)})
    answers(address, WEB.name, ["10.96.0.42"])
    assert second.table_reloads == reloads and second.table_transfers >= 1


def test_a_serial_the_history_lacks_is_resynced_by_the_file(
        pools: Callable[..., ResolverPool]) -> None:
    pool = pools()
    address = pool.apply({TENANT: forward(WEB, DB)})[TENANT]
    res = pool.resolvers[TENANT]
    assert pool.primary is not None
    # the primary loses its history (as after 64 changes the resolver missed): serial 50
    pool.primary.load(res.paths.primary_port, ZONE, res.table_texts[ZONE], serial=50)
    pool.apply({TENANT: forward(replace(WEB, ipv4=("10.96.0.50",)), DB)})
    # unbound asks IXFR from 1: the primary answers its SOA and asks for a resync, which
    # the pool's supervision makes (file + auth_zone_reload)
    answers(address, WEB.name, ["10.96.0.50"], also=pool.supervise)
    assert pool.primary.served["gap"] >= 1 and pool.table_reloads >= 1
    assert serials(pool)[ZONE] > 50
    reloads = pool.table_reloads
    pool.apply({TENANT: forward(replace(WEB, ipv4=("10.96.0.51",)), DB)})
    answers(address, WEB.name, ["10.96.0.51"])
    assert pool.table_reloads == reloads


def test_reload_names_no_primary(tmp_path: Path) -> None:
    require_tool("unbound", "apt-get install unbound")
    pool = ResolverPool(tmp_path / "pool", table_updates=ResolverTableUpdates.RELOAD)
    try:
        address = pool.apply({TENANT: forward(WEB)})[TENANT]
        res = pool.resolvers[TENANT]
        assert pool.primary is None and res.paths.primary_port == 0
        assert "primary:" not in Path(res.conf_path).read_text()
        pool.apply({TENANT: forward(replace(WEB, ipv4=("10.96.0.60",)))})
        assert ask(address, WEB.name) == ["10.96.0.60"]  # reloaded before apply returned
    finally:
        pool.stop_all()


def test_a_closed_primary_leaves_no_socket_open() -> None:
    """close() closes every socket, also those of a port released just before (its thread
    had not closed them yet): the ports are free again."""
    primary = ZonePrimary()
    kept, released = primary.bind(0), primary.bind(0)
    primary.release(released)
    primary.close()
    for port in (kept, released):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))  # nothing of the primary holds it
