"""The real unbound, started by the real ResolverPool, reports its answers (dnstap) and
they become query-log records with the policy's action: a blacklisted name is denied for
every type and WARN is logged for every type, as issue 18 asks of queries that reach the
tenant resolver past Envoy's DNS filter (the DNS front sends it every type)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import Dnsmasq, wait_for
from controlplane.core.inventory import Inventory
from controlplane.core.model import DefaultAction, Namespace, Service
from controlplane.core.settings import DnsSettings
from controlplane.dns.views import Forwarding, build_tenant_view, cluster_records
from controlplane.policy.selection import CompiledPolicy
from controlplane.resolvers.dnstap import ResolverReply
from controlplane.resolvers.pool import ResolverPool
from controlplane.telemetry.querylog import QueryLog
from controlplane.telemetry.resolver_reports import RESOLVER_NODE, ResolverReports
from tests.factories import policy
from tests.tools import require_tool

ZONE = "cluster.local"


def setup(server: str, **fields: object) -> tuple[dict[str, Forwarding],
                                                  dict[str, CompiledPolicy]]:
    pol = policy("a", {"tenant": "a"}, server_address=server, **fields)
    inv = Inventory.of([Namespace("a", (("tenant", "a"),)),
                        Service("a", "web", cluster_ips=("10.96.0.10",)), pol])
    view = build_tenant_view(pol, cluster_records(inv, zone=ZONE), inv, DnsSettings())[0]
    assert view.forward is not None, view.notes
    return {view.tenant: view.forward}, {view.tenant: CompiledPolicy.of(pol)}


def ask(port: int, name: str, rdtype: str, *, tcp: bool = False) -> str:
    q = dns.message.make_query(name, rdtype)
    r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=5)
    return dns.rcode.to_text(r.rcode())


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Dnsmasq]:
    require_tool("dnsmasq", "apt-get install dnsmasq")
    d = Dnsmasq({"www.example.com": "203.0.113.10"}, tmp_path).start()
    yield d
    d.stop()


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[ResolverPool]:
    require_tool("unbound", "apt-get install unbound")
    p = ResolverPool(tmp_path / "pool")
    yield p
    p.stop_all()


def test_blacklisted_names_are_denied_and_warn_logged_for_every_type(
        pool: ResolverPool, upstream: Dnsmasq) -> None:
    server = f"127.0.0.1:{upstream.port}"
    forwards, compiled = setup(server, default_action=DefaultAction.WARN,
                               blacklist=("*.foo.com",), whitelist=(f"*.a.svc.{ZONE}",))
    qlog = QueryLog(lambda: compiled)
    reports = ResolverReports(qlog)

    def sink(tenant: str, reply: ResolverReply) -> None:
        reports.answer(tenant=tenant, source=reply.source, name=reply.name,
                       qtype=reply.type, rcode=reply.rcode)

    pool.report_to(sink)
    port = pool.apply(forwards)["a"].port
    denied = [("api.foo.com", "TXT", False), ("api.foo.com", "MX", True),
              ("Api.FOO.com", "AAAA", False), ("x.y.foo.com", "A", True)]
    for name, rdtype, tcp in denied:
        assert ask(port, name, rdtype, tcp=tcp) == "NXDOMAIN", (name, rdtype)
    for rdtype, tcp in (("TXT", False), ("A", True), ("MX", False)):
        assert ask(port, "www.example.com", rdtype, tcp=tcp) == "NOERROR"
    assert ask(port, f"web.a.svc.{ZONE}", "A") == "NOERROR"  # whitelisted: counted only
    assert not any("foo.com" in q for q in upstream.queries())  # denied before the cache

    wait_for(lambda: len(qlog.recent(tenant="a")) >= 7, timeout=10, what="7 records")
    recs = qlog.recent(tenant="a")
    assert sorted((r["action"], r["name"], r["type"], r["rcode"], r["rule"], r["node"])
                  for r in recs) == sorted([
        *(("deny", n, t, "NXDOMAIN", "blacklist *.foo.com", RESOLVER_NODE)
          for n, t, _ in denied),
        *(("warn", "www.example.com", t, "NOERROR", "defaultAction WARN", RESOLVER_NODE)
          for t in ("TXT", "A", "MX"))])
    wait_for(lambda: qlog.counts[("a", "allow")] == 1, timeout=10, what="the allowed one")
    assert reports.tenant_counts() == {"a": (8.0, 4.0)}

    # The tenant stops logging (no blacklist, defaultAction ALLOW): same process, no reader,
    # nothing reported; it starts again: what unbound kept meanwhile is not reported.
    res = pool.resolvers["a"]
    pid = res.unbound.pid
    assert res.reports is not None
    quiet, _ = setup(server)
    assert not quiet["a"].log_queries
    pool.apply(quiet)
    assert pool.resolvers["a"].unbound.pid == pid and pool.resolvers["a"].reports is None
    assert ask(port, "www.example.com", "TXT") == "NOERROR"
    forwards, _ = setup(server, default_action=DefaultAction.WARN,
                        blacklist=("*.foo.com",), whitelist=(f"*.a.svc.{ZONE}",))
    pool.apply(forwards)
    assert pool.resolvers["a"].unbound.pid == pid and pool.resolvers["a"].reports is not None
    assert ask(port, "later.foo.com", "SRV") == "NXDOMAIN"
    wait_for(lambda: any(r["name"] == "later.foo.com" for r in qlog.recent(tenant="a")),
             timeout=10, what="the record after logging resumed")
    assert reports.tenant_counts()["a"][0] == 9.0  # the TXT asked while quiet: not counted

    # The resolver dies: restarted on its port, and it reports again.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not pool.resolvers["a"].unbound.alive(), timeout=10, what="death")
    assert pool.supervise() == ["a"]
    assert pool.resolvers["a"].paths.listen.port == port
    assert ask(port, "again.foo.com", "CAA", tcp=True) == "NXDOMAIN"
    wait_for(lambda: any(r["name"] == "again.foo.com" for r in qlog.recent(tenant="a")),
             timeout=10, what="a record from the restarted resolver")
