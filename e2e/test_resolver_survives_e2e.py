"""Forwarded names keep resolving while the control plane is dead, and after a new one
starts: the tenant resolver (``--resolver-lifetime persistent`` on an explicit
``--resolver-dir``) outlives a SIGKILLed control plane, and the next one adopts it on the
same port, so the listener it pushes is the one the sidecar already has.

Real processes: the control plane, a real Envoy sidecar started apart from it (as in a
cluster), the tenant's server (dnsmasq), the real unbound. DNS load of a forwarded name
and a table name through Envoy, paced at ~50 queries/s, across three phases: before the
kill, while no control plane runs (~10 s), and after a new one started (~5 s).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import pytest

from controlplane._kit.localrun import (
    ControlPlane,
    Dnsmasq,
    Envoy,
    ResolverHost,
    children,
    http_json,
    wait_for,
)
from controlplane.runtime.process import running
from e2e.harness.dnsquery import query
from e2e.harness.examples import point_globex_at
from e2e.harness.persistent import resolver_states

FORWARDED = ("www.example.com", ("NOERROR", ["203.0.113.10"]))
TABLE = ("api.globex.svc.cluster.local", ("NOERROR", ["10.96.40.10"]))
RATE = 50.0  # queries per second, the two names in turn
PHASES = ("before", "down", "after")


@dataclass
class Tally:
    sent: int = 0
    lost: int = 0  # no answer within the timeout
    wrong: int = 0  # another rcode or other addresses
    samples: list[str] = field(default_factory=list)


class Load:
    """Queries the sidecar in a thread, counting by phase and by kind of name."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.phase = PHASES[0]
        self.tallies = {(p, kind): Tally() for p in PHASES for kind in ("forwarded", "table")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        due = time.monotonic()
        turn = 0
        while not self._stop.is_set():
            kind, (name, expected) = (("forwarded", FORWARDED) if turn % 2 == 0
                                      else ("table", TABLE))
            turn += 1
            tally = self.tallies[(self.phase, kind)]
            tally.sent += 1
            try:
                got = query(self.port, name, timeout=1.0)
            except (dns.exception.Timeout, OSError) as exc:
                tally.lost += 1
                tally.samples.append(f"{name}: {exc!r}")
            else:
                if got != expected:
                    tally.wrong += 1
                    tally.samples.append(f"{name}: {got}")
            due += 1 / RATE
            self._stop.wait(max(0.0, due - time.monotonic()))

    def report(self) -> str:
        return "\n".join(f"{phase:>6} {kind:>9}: sent {t.sent} lost {t.lost} wrong {t.wrong}"
                         for (phase, kind), t in self.tallies.items())


def listener(envoy: Envoy) -> Any:
    dump = http_json(f"{envoy.admin_url}/config_dump?resource=dynamic_listeners")
    [active] = [c["active_state"]["listener"] for c in dump["configs"]
                if c["name"].startswith("dns:")]
    return active


@pytest.mark.parametrize("hosted", [False, True], ids=["own-session", "resolver-host"])
def test_forwarded_names_survive_a_killed_control_plane(
        hosted: bool, manifests: Path, tmp_path: Path, resolver_dir: Path,
        processes: list[object], start_envoy: Callable[..., Envoy],
        start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    """``hosted``: the resolvers are started by ``controlplane resolver-host`` (as the
    resolvers container of deploy/ does), not by the control plane itself."""
    point_globex_at(manifests, start_dnsmasq(dict([(FORWARDED[0], "203.0.113.10")])))
    args = ["--debounce", "0.02", "--resolver-dir", str(resolver_dir),
            "--resolver-lifetime", "persistent"]
    host = None
    if hosted:
        host = ResolverHost(tmp_path / "spool", tmp_path / "host.log").start()
        processes.append(host)
        args += ["--resolver-host-spool", str(host.spool)]
    first = ControlPlane(manifests, tmp_path / "cp1", extra_args=args)
    (tmp_path / "cp1").mkdir()
    processes.append(first)
    first.start()
    envoy = start_envoy(first, "sleep.globex", "globex")
    assert query(envoy.dns_port, *FORWARDED[:1]) == FORWARDED[1]
    [before] = resolver_states(resolver_dir, "globex")
    if host is not None:  # the host's child, not the control plane's
        assert before["unbound_pid"] in children(host.pid)
    listener_before = listener(envoy)
    updates_before = envoy.stats()["listener_manager.lds.update_success"]

    with Load(envoy.dns_port) as load:
        wait_for(lambda: load.tallies[("before", "forwarded")].sent >= 100, timeout=10,
                 what="load before the kill")
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)  # the control plane's process, by pid
        first.process.stop()  # reaps it
        load.phase = "down"
        wait_for(lambda: load.tallies[("down", "forwarded")].sent >= 10 * RATE / 2,
                 timeout=30, what="10 s of load with no control plane")
        second = ControlPlane(manifests, tmp_path / "cp2", extra_args=args,
                              xds_port=first.xds_port, admin_port=first.admin_port)
        (tmp_path / "cp2").mkdir()
        processes.append(second)
        load.phase = "after"
        second.start()
        wait_for(lambda: envoy.stats().get("control_plane.connected_state") == 1, timeout=60,
                 what="the sidecar back on the new control plane")
        wait_for(lambda: envoy.stats()["listener_manager.lds.update_success"] > updates_before,
                 timeout=30, what="the new control plane's listener at the sidecar")
        wait_for(lambda: load.tallies[("after", "forwarded")].sent >= 5 * RATE / 2,
                 timeout=30, what="5 s of load after the restart")
    print("\n" + load.report())

    [after] = resolver_states(resolver_dir, "globex")
    assert after["unbound_pid"] == before["unbound_pid"]
    assert after["paths"] == before["paths"]
    [described] = [r for r in second.get("/api/v1/resolvers")["resolvers"]
                   if r["tenant"] == "globex"]
    assert described["adopted"] is True and described["pid"] == before["unbound_pid"]
    assert listener(envoy) == listener_before  # what the new control plane pushed
    assert envoy.stats()["listener_manager.lds.update_rejected"] == 0
    for (phase, kind), tally in load.tallies.items():
        assert tally.sent > 0, (phase, kind)
        assert (tally.lost, tally.wrong) == (0, 0), (phase, kind, tally.samples[:5])

    assert second.stop() == 0  # a graceful exit (SIGTERM) leaves the resolver serving too
    assert running(before["unbound_pid"])
    assert query(envoy.dns_port, FORWARDED[0]) == FORWARDED[1]
