"""``serve --resolver-host-spool`` when the resolver host comes up late (the pod's two
containers start together, in any order): the forwarding tenant's resolver fails to
start, the tenant is reported with the reason, and the control plane tries again (5 s,
then doubling) until the host answers; then the tenant's forwarded names resolve.

Real processes: the control plane on the examples, the host (``controlplane
resolver-host``), unbound, globex's server (dnsmasq).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from controlplane._kit.localrun import ControlPlane, Dnsmasq, ResolverHost, children, wait_for
from e2e.harness.examples import point_globex_at

NAME = "www.example.com"


def test_the_control_plane_retries_until_the_resolver_host_is_up(
        manifests: Path, tmp_path: Path, resolver_dir: Path, processes: list[object],
        start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    point_globex_at(manifests, start_dnsmasq({NAME: "203.0.113.10"}))
    spool = tmp_path / "spool"
    cp = ControlPlane(manifests, tmp_path / "cp", extra_args=[
        "--debounce", "0.02", "--resolver-dir", str(resolver_dir),
        "--resolver-lifetime", "persistent", "--resolver-host-spool", str(spool)])
    (tmp_path / "cp").mkdir()
    processes.append(cp)
    cp.start()

    def globex_error() -> str:
        errors = cp.get("/api/v1/errors")
        rows = errors if isinstance(errors, list) else errors.get("errors", [])
        return next((str(e) for e in rows if "globex" in str(e)), "")

    reason = wait_for(globex_error, timeout=30, what="globex's resolver error")
    assert "no resolver host runs on" in reason and str(spool) in reason

    host = ResolverHost(spool, tmp_path / "host.log").start()
    processes.append(host)

    def globex_resolver() -> dict[str, object] | None:
        rows = cp.get("/api/v1/resolvers")["resolvers"]
        return next((r for r in rows if r["tenant"] == "globex" and r["alive"]), None)

    resolver = wait_for(globex_resolver, timeout=30, what="globex's resolver, retried")
    assert int(str(resolver["pid"])) in children(host.pid)
    address, port = str(resolver["listen"]).rsplit(":", 1)
    reply = dns.query.udp(dns.message.make_query(NAME, "A"), address, port=int(port),
                          timeout=3)
    assert reply.rcode() == dns.rcode.NOERROR
    assert [rr.to_text() for rrset in reply.answer for rr in rrset] == ["203.0.113.10"]
    wait_for(lambda: not globex_error(), timeout=10, what="the error gone")
