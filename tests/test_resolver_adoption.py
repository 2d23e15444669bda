"""Persistent tenant resolvers: a pool that ends without stopping them (a crashed control
plane) leaves them answering, and the next pool on the same directory adopts them: same
process, same port, so the listener the sidecars hold stays right. Then the usual
reconciliation: triggers reload live, another server replaces, a dead one comes back on
its own port, an orphan goes.

The resolvers and their upstreams (dnsmasq) are the real binaries; a "crash" is dropping
the pool object without ``stop_all``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import Dnsmasq, wait_for
from controlplane.core.errors import ConfigError, ResolverError
from controlplane.core.settings import ResolverLifetime, ResolverSettings
from controlplane.dns.records import NameRecord
from controlplane.dns.views import Forwarding, TableEntry, Trigger, Upstream
from controlplane.policy.selection import Action
from controlplane.resolvers.pool import ResolverPool
from controlplane.resolvers.state import STATE_FILE
from controlplane.runtime.process import running
from tests.tools import require_tool

TENANT = "acme"
NAME = "www.example.com"


def crash(pool: ResolverPool) -> None:
    """What a control plane's death takes with it besides the pool: its sockets (the
    table zones' primary, ``--resolver-table-updates ixfr``)."""
    if pool.primary is not None:
        pool.primary.close()


def ask(upstream: Upstream, name: str = NAME) -> tuple[int, list[str]]:
    """rcode and A records of ``name`` from the resolver at ``upstream``."""
    reply = dns.query.udp(dns.message.make_query(name, "A"), upstream.host,
                          port=upstream.port, timeout=3)
    return reply.rcode(), sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


def states(workdir: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(workdir.glob(f"*/{STATE_FILE}"))]


@pytest.fixture
def upstreams(tmp_path: Path) -> Iterator[Callable[[str], Upstream]]:
    require_tool("dnsmasq", "apt-get install dnsmasq")
    started: list[Dnsmasq] = []

    def start(address: str) -> Upstream:
        d = Dnsmasq({NAME: address}, tmp_path / f"dnsmasq{len(started)}")
        d.workdir.mkdir()
        started.append(d.start())
        return Upstream("127.0.0.1", d.port)

    yield start
    for d in started:
        d.stop()


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., ResolverPool]]:
    """Pools on one persistent directory; at the end every resolver any state file names
    is stopped by its pid (the dropped pools never stop theirs)."""
    require_tool("unbound", "apt-get install unbound")
    workdir = tmp_path / "resolvers"
    made: list[ResolverPool] = []

    def make(**settings: Any) -> ResolverPool:
        made.append(ResolverPool(workdir, persistent=True, **{
            "grace_seconds": 0.0, "adoption_seconds": 0.0, **settings}))
        return made[-1]

    yield make
    pids = {pid for pool in made for res in [*pool.resolvers.values(),
                                              *(r for _, r in pool.retiring)]
            for pid in (res.unbound.pid,)}
    pids |= {int(str(s["unbound_pid"])) for s in states(workdir)}
    for pool in made:
        pool.stop_all(detach=False)
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_new_pool_adopts_what_a_crashed_one_left(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream],
        tmp_path: Path) -> None:
    fwd = Forwarding(upstreams("203.0.113.10"))
    first = pools()
    address = first.apply({TENANT: fwd})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    assert os.getsid(pid) == pid  # its own session: no terminal's or group's signals
    [state] = states(tmp_path / "resolvers")
    assert state["tenant"] == TENANT and state["unbound_pid"] == pid
    assert state["paths"]["listen"]["port"] == address.port  # type: ignore[index]
    assert state["generation"] == 1 and state["server_key"]
    crash(first)  # the control plane crashed: nobody stopped the resolver
    del first

    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    second = pools()
    assert second.apply({TENANT: fwd}) == {TENANT: address}
    adopted = second.resolvers[TENANT]
    assert adopted.adopted and adopted.unbound.pid == pid and second.reloads == 0
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    second.stop_all()  # persistent: a graceful exit leaves it running too
    assert running(pid)
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])


def test_changed_triggers_reload_the_adopted_resolver_live(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream]) -> None:
    fwd = Forwarding(upstreams("203.0.113.10"))
    first = pools()
    address = first.apply({TENANT: fwd})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    crash(first)
    del first

    second = pools()
    deny = Forwarding(fwd.server, triggers=(Trigger(NAME, True, f"blacklist {NAME}"),))
    assert second.apply({TENANT: deny}) == {TENANT: address}
    assert second.reloads == 1 and second.resolvers[TENANT].unbound.pid == pid
    assert ask(address)[0] == dns.rcode.NXDOMAIN
    crash(second)
    del second

    third = pools()  # the reload was written down: nothing to do for the same triggers
    assert third.apply({TENANT: deny}) == {TENANT: address}
    assert third.reloads == 0 and third.resolvers[TENANT].unbound.pid == pid


def _table(*records: NameRecord) -> tuple[TableEntry, ...]:
    return tuple(TableEntry(r, Action.ALLOW, "test") for r in records)


def test_an_adopted_resolver_is_brought_to_the_new_table(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream]) -> None:
    """The next pool knows nothing of the table the resolver holds (its files are made by
    the names that changed since the last one it made): every zone is loaded again."""
    server = upstreams("203.0.113.10")
    web = NameRecord("web.a.svc.cluster.local", ipv4=("10.96.0.10",))
    old = NameRecord("old.a.svc.cluster.local", ipv4=("10.96.0.11",))
    first = pools()
    address = first.apply({TENANT: Forwarding(server, table=_table(web, old))})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    assert ask(address, web.name) == (dns.rcode.NOERROR, ["10.96.0.10"])
    crash(first)  # crashed; meanwhile web moved, old went, new came (same zones)
    del first

    second = pools()
    moved = NameRecord("web.a.svc.cluster.local", ipv4=("10.96.0.20",))
    new = NameRecord("new.a.svc.cluster.local", ipv4=("10.96.0.21",))
    assert second.apply({TENANT: Forwarding(server, table=_table(moved, new))}) == {
        TENANT: address}
    assert second.resolvers[TENANT].unbound.pid == pid and second.table_reloads >= 2
    assert ask(address, web.name) == (dns.rcode.NOERROR, ["10.96.0.20"])
    assert ask(address, new.name) == (dns.rcode.NOERROR, ["10.96.0.21"])
    assert ask(address, old.name)[0] == dns.rcode.NXDOMAIN
    ptr = dns.query.udp(dns.message.make_query("20.0.96.10.in-addr.arpa.", "PTR"),
                        address.host, port=address.port, timeout=3)
    assert [rr.to_text() for rrset in ptr.answer for rr in rrset] == [f"{web.name}."]


def test_another_server_replaces_the_adopted_resolver_after_the_grace_period(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream]) -> None:
    first = pools()
    old = first.apply({TENANT: Forwarding(upstreams("203.0.113.10"))})[TENANT]
    old_res = first.resolvers[TENANT]
    crash(first)
    del first

    second = pools()
    new = second.apply({TENANT: Forwarding(upstreams("198.51.100.7"))})[TENANT]
    assert new != old and second.resolvers[TENANT].unbound.pid != old_res.unbound.pid
    assert ask(new) == (dns.rcode.NOERROR, ["198.51.100.7"])
    assert ask(old) == (dns.rcode.NOERROR, ["203.0.113.10"])  # still, for the grace period
    second.supervise()  # the grace period (0 s here) is over: the old one goes
    assert not running(old_res.unbound.pid)
    assert not Path(old_res.paths.directory).exists()


def test_a_dead_resolver_comes_back_on_its_own_port(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream]) -> None:
    fwd = Forwarding(upstreams("203.0.113.10"))
    first = pools()
    address = first.apply({TENANT: fwd})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    crash(first)
    del first
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not running(pid), timeout=10, what="the resolver's end")

    second = pools()  # found dead on adoption: restarted on its own port
    assert second.apply({TENANT: fwd}) == {TENANT: address}
    restarted = second.resolvers[TENANT]
    assert restarted.unbound.pid != pid and restarted.restarts == 1
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    crash(second)
    del second

    third = pools()  # supervision of an adopted resolver: it is polled, not waited for
    third.apply({TENANT: fwd})
    adopted = third.resolvers[TENANT]
    assert adopted.adopted and adopted.unbound.pid == restarted.unbound.pid
    os.kill(adopted.unbound.pid, signal.SIGKILL)
    wait_for(lambda: not adopted.alive(), timeout=10, what="the adopted resolver's end")
    assert third.supervise() == [TENANT]
    assert third.resolvers[TENANT].paths.listen == address
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])


def test_orphans_are_removed(pools: Callable[..., ResolverPool],
                             upstreams: Callable[[str], Upstream], tmp_path: Path) -> None:
    server = upstreams("203.0.113.10")
    first = pools()
    first.apply({TENANT: Forwarding(server), "gone": Forwarding(server)})
    cut_short = first.resolvers[TENANT]  # a start cut short before its state was written
    gone = first.resolvers["gone"]
    crash(first)
    del first
    (Path(cut_short.paths.directory) / STATE_FILE).unlink()

    second = pools()
    address = second.apply({TENANT: Forwarding(server)})[TENANT]
    assert not running(cut_short.unbound.pid)  # nothing knew its port: killed, removed
    assert not Path(cut_short.paths.directory).exists()
    assert address != cut_short.paths.listen
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    second.supervise()  # "gone" no longer forwards: retired after the grace period
    assert not running(gone.unbound.pid)
    assert not Path(gone.paths.directory).exists()
    assert [s["tenant"] for s in states(tmp_path / "resolvers")] == [TENANT]


def test_an_adopted_resolver_waits_for_a_late_first_load(
        pools: Callable[..., ResolverPool], upstreams: Callable[[str], Upstream]) -> None:
    """A restarted control plane applies before its first full load: the adopted resolver
    of a tenant that partial load lacks is kept for ``adoption_seconds``, and taken back
    (same process, same port) when the full load names it."""
    fwd = Forwarding(upstreams("203.0.113.10"))
    first = pools()
    address = first.apply({TENANT: fwd})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    crash(first)
    del first

    now = [0.0]
    second = pools(adoption_seconds=60.0, grace_seconds=10.0, clock=lambda: now[0])
    assert second.apply({}) == {}  # the partial load
    now[0] = 59.0
    assert second.supervise() == [] and running(pid)
    assert second.apply({TENANT: fwd}) == {TENANT: address}
    assert second.resolvers[TENANT].unbound.pid == pid and not second.retiring

    assert second.apply({}) == {}  # named once: it is the tenant's, the grace period holds
    now[0] = 70.0
    second.supervise()
    assert not running(pid)


def test_persistent_resolvers_need_a_directory_of_their_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--resolver-dir"):
        ResolverSettings(lifetime=ResolverLifetime.PERSISTENT)
    assert ResolverSettings(dir=str(tmp_path), lifetime=ResolverLifetime.PERSISTENT).dir
    require_tool("unbound", "apt-get install unbound")
    with pytest.raises(ResolverError, match="temporary"):
        ResolverPool(tmp_path, persistent=True, owns_workdir=True)


def test_a_resolver_of_a_process_lifetime_pool_dies_with_stop_all(
        tmp_path: Path, upstreams: Callable[[str], Upstream]) -> None:
    require_tool("unbound", "apt-get install unbound")
    pool = ResolverPool(tmp_path / "resolvers")
    try:
        pool.apply({TENANT: Forwarding(upstreams("203.0.113.10"))})
        pid = pool.resolvers[TENANT].unbound.pid
    finally:
        pool.stop_all()
    assert not running(pid)
