"""Tenant resolver ports: a port chosen free and taken by another process before the real
unbound or dnsdist binds it costs a retry on new ports, never a tenant without a resolver.

The neighbour is a real socket bound right after the pool chose the port (the pool's port
chooser is its boundary); the resolvers are the real binaries.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane.dns.views import Forwarding, Transport, Upstream, table_only
from controlplane.identity.certs import ServerTls, server_tls
from controlplane.resolvers.pool import RESOLVER_TLS_NAME, ResolverPool, TenantResolver
from controlplane.runtime.process import free_port, holds_port, port_holders
from controlplane.translate.unbound import ResolverPaths
from tests.tools import require_tool

TENANT = "acme"
UNREACHABLE = Upstream("127.0.0.1", 9)  # nothing answers: only the resolver's own zone does


class Neighbour:
    """Takes ports the pool chooses, right after it chose them, with a socket of ``kind``:
    the ``calls``-th ones (1: the first port chosen), every one when ``calls`` is None."""

    def __init__(self, kind: str, calls: tuple[int, ...] | None = (1,)) -> None:
        self.kind = kind
        self.calls = calls
        self.chosen = 0
        self.taken: list[int] = []
        self.sockets: list[socket.socket] = []

    def choose(self) -> int:
        port = free_port()
        self.chosen += 1
        if self.calls is None or self.chosen in self.calls:
            self.take(port)
        return port

    def take(self, port: int) -> None:
        tcp = self.kind == "tcp"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        if self.kind == "udp-reuseaddr":  # lets a second socket bind the port too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        if tcp:
            sock.listen()
        self.sockets.append(sock)
        self.taken.append(port)

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def pool_with(tmp_path: Path) -> Iterator[Callable[..., ResolverPool]]:
    require_tool("unbound", "apt-get install unbound")
    pools: list[ResolverPool] = []
    neighbours: list[Neighbour] = []

    def make(neighbour: Neighbour, *, hop_tls: ServerTls | None = None) -> ResolverPool:
        neighbours.append(neighbour)
        pools.append(ResolverPool(tmp_path / f"pool{len(pools)}", choose_port=neighbour.choose,
                                  hop_tls=hop_tls))
        return pools[-1]

    yield make
    for pool in pools:
        pool.stop_all()
    for neighbour in neighbours:
        neighbour.close()


def answers_its_zone(address: Upstream) -> bool:
    """The resolver at ``address`` answers a name in its own zone (NXDOMAIN, no upstream)."""
    reply = dns.query.udp(dns.message.make_query("nothing-here.cluster.local", "A"),
                          address.host, port=address.port, timeout=2)
    return reply.rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("kind", ["udp", "tcp", "udp-reuseaddr"])
def test_unbound_port_taken_between_choice_and_start(
        kind: str, pool_with: Callable[..., ResolverPool]) -> None:
    neighbour = Neighbour(kind)
    pool = pool_with(neighbour)
    addresses = pool.apply({TENANT: Forwarding(UNREACHABLE)})
    assert pool.errors == {}
    assert neighbour.taken and addresses[TENANT].port not in neighbour.taken
    assert pool.resolvers[TENANT].alive()
    assert answers_its_zone(addresses[TENANT])


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_dnsdist_port_taken_between_choice_and_start(
        kind: str, pool_with: Callable[..., ResolverPool]) -> None:
    require_tool("dnsdist", "apt-get install dnsdist")
    neighbour = Neighbour(kind)  # the DoH proxy's port is the first one chosen
    pool = pool_with(neighbour)
    addresses = pool.apply({TENANT: Forwarding(UNREACHABLE, transport=Transport.HTTPS)})
    assert pool.errors == {}
    res = pool.resolvers[TENANT]
    assert res.paths.doh_proxy is not None and res.dnsdist is not None
    assert res.paths.doh_proxy.port not in neighbour.taken
    assert res.alive() and holds_port(res.dnsdist.pid, res.paths.doh_proxy.port, udp=True)
    assert answers_its_zone(addresses[TENANT])


def test_tls_port_taken_between_choice_and_start(
        pool_with: Callable[..., ResolverPool], tmp_path: Path) -> None:
    neighbour = Neighbour("tcp", calls=(2,))  # unbound's port, then its TLS port
    pool = pool_with(neighbour, hop_tls=server_tls(tmp_path / "hop", RESOLVER_TLS_NAME))
    addresses = pool.apply({TENANT: Forwarding(UNREACHABLE)})
    assert pool.errors == {}
    res = pool.resolvers[TENANT]
    assert neighbour.taken and res.paths.tls_port not in neighbour.taken
    assert addresses[TENANT].port == res.paths.tls_port  # sidecars use the TLS port
    assert res.alive() and holds_port(res.unbound.pid, res.paths.tls_port, udp=False)


def test_a_restart_whose_port_was_taken_moves_to_new_ports(
        pool_with: Callable[..., ResolverPool]) -> None:
    neighbour = Neighbour("udp", calls=())
    pool = pool_with(neighbour)
    before = pool.apply({TENANT: Forwarding(UNREACHABLE)})[TENANT]
    old = pool.resolvers[TENANT]
    old.unbound.kill()
    neighbour.take(before.port)  # someone binds the dead resolver's port
    assert pool.supervise() == [TENANT]
    fresh = pool.resolvers[TENANT]
    assert fresh.paths.listen.port != before.port and fresh.alive()
    assert not Path(old.paths.directory).exists()
    after = pool.apply({TENANT: Forwarding(UNREACHABLE)})[TENANT]  # what the hub does next
    assert after == fresh.paths.listen and answers_its_zone(after)


def test_retries_are_bounded(pool_with: Callable[..., ResolverPool]) -> None:
    neighbour = Neighbour("udp", calls=None)  # every port it chooses is taken
    pool = pool_with(neighbour)
    assert pool.apply({TENANT: Forwarding(UNREACHABLE)}) == {}
    assert len(neighbour.taken) == pool.port_attempts
    assert "could not bind its port" in pool.errors[TENANT]
    assert f"{pool.port_attempts} attempts" in pool.errors[TENANT]
    assert TENANT not in pool.resolvers


def restarted(tmp_path: Path, forwards: dict[str, Forwarding], *,
              between: Callable[[dict[str, Upstream]], None] = lambda _: None,
              hop_tls: ServerTls | None = None
              ) -> tuple[dict[str, Upstream], dict[str, Upstream], ResolverPool]:
    """The addresses of a pool (process lifetime, an explicit directory) and of the next
    one on the same directory, after the first stopped (its resolvers gone with it)."""
    require_tool("unbound", "apt-get install unbound")
    first = ResolverPool(tmp_path / "resolvers", hop_tls=hop_tls)
    try:
        before = first.apply(forwards)
    finally:
        first.stop_all()
    assert before.keys() == forwards.keys()
    between(before)
    second = ResolverPool(tmp_path / "resolvers", hop_tls=hop_tls)
    return before, second.apply(forwards), second


def test_a_restarted_control_plane_starts_each_resolver_on_its_previous_ports(
        tmp_path: Path) -> None:
    """The sidecars keep the addresses they have: a forwarding tenant's and a table-only
    tenant's resolver come back on the ports (unbound's, the TLS hop's) the previous
    control plane's had; their old directories are gone, no directory name is reused."""
    forwards = {TENANT: Forwarding(UNREACHABLE), "beta": table_only("cluster.local")}
    tls = server_tls(tmp_path / "hop", RESOLVER_TLS_NAME)
    old_dirs: list[str] = []
    before, after, pool = restarted(tmp_path, forwards, hop_tls=tls, between=lambda _: (
        old_dirs.extend(p.name for p in (tmp_path / "resolvers").iterdir() if p.is_dir())))
    try:
        assert after == before and pool.errors == {}
        assert all(a.port == pool.resolvers[t].paths.tls_port for t, a in after.items())
        for res in pool.resolvers.values():
            assert res.alive() and holds_port(res.unbound.pid, res.paths.tls_port, udp=False)
            assert res.generation > len(forwards)  # after the previous pool's generations
        dirs = {p.name for p in (tmp_path / "resolvers").iterdir() if p.is_dir()}
        assert dirs == {Path(r.paths.directory).name for r in pool.resolvers.values()}
        assert len(old_dirs) == len(forwards) and not dirs & set(old_dirs)
        for res in pool.resolvers.values():
            assert answers_its_zone(res.paths.listen)
    finally:
        pool.stop_all()


def test_a_previous_port_taken_meanwhile_means_new_ports(tmp_path: Path) -> None:
    neighbour = Neighbour("udp", calls=())
    before, after, pool = restarted(tmp_path, {TENANT: Forwarding(UNREACHABLE)},
                                    between=lambda b: neighbour.take(b[TENANT].port))
    try:
        assert after[TENANT].port != before[TENANT].port and pool.errors == {}
        assert answers_its_zone(after[TENANT])
    finally:
        pool.stop_all()
        neighbour.close()


class SpyPool(ResolverPool):
    """Records when each resolver is spawned and when it is waited for."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.events: list[tuple[str, str]] = []

    def _spawn(self, tenant: str, fwd: Forwarding, paths: ResolverPaths, *,
               restarts: int = 0) -> TenantResolver:
        self.events.append(("spawn", tenant))
        return super()._spawn(tenant, fwd, paths, restarts=restarts)

    def _await_up(self, res: TenantResolver) -> TenantResolver:
        self.events.append(("up", res.tenant))
        return super()._await_up(res)


def test_a_first_apply_spawns_every_resolver_before_waiting_for_any(tmp_path: Path) -> None:
    """Every DnsPolicy tenant has a resolver: a control plane's first apply starts them all
    at once instead of one after another (its readiness waits for that apply); one whose
    port was taken meanwhile starts again on its own, on new ports."""
    require_tool("unbound", "apt-get install unbound")
    neighbour = Neighbour("udp", calls=(2,))  # the second tenant's port
    tenants = ("a", "b", "c")
    pool = SpyPool(tmp_path / "resolvers", choose_port=neighbour.choose)
    try:
        got = pool.apply({t: table_only("cluster.local") for t in tenants})
        assert pool.errors == {} and sorted(got) == list(tenants)
        assert pool.events[:6] == [*(("spawn", t) for t in tenants),
                                   *(("up", t) for t in tenants)]
        assert pool.events[6:] == [("spawn", "b"), ("up", "b")]  # alone, on a new port
        assert got["b"].port not in neighbour.taken
        assert all(answers_its_zone(a) for a in got.values())
        pool.events.clear()
        pool.apply({t: table_only("cluster.local") for t in tenants})
        assert pool.events == []  # nothing new to start
    finally:
        pool.stop_all()
        neighbour.close()


def test_port_holders_names_the_process() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        command = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
        assert port_holders(port, udp=True) == [f"pid {os.getpid()} ({command})"]
        assert port_holders(port, udp=True, besides=os.getpid()) == []
        assert port_holders(port, udp=False) == []
        assert holds_port(os.getpid(), port, udp=True)
