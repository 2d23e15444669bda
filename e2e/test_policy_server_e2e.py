"""An external policy server decides what a tenant may resolve: the seed's
``dnspolicy-app-policy-server.yaml`` with the real Envoy, the tenant resolver, and a real
ext_authz gRPC server evaluating a real Rego policy (``examples/policy-server/dns.rego``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import (
    ControlPlane,
    Envoy,
    Process,
    free_port,
    http_json,
    http_text,
    wait_for,
)
from e2e.harness.dnsquery import query
from e2e.harness.dnsservers import UnboundServer
from e2e.harness.paths import SEEDS
from tests.tools import require_file, require_tool

ROOT = Path(__file__).resolve().parents[1]
REGO = ROOT / "examples" / "policy-server" / "dns.rego"

CLUSTER = """
---
apiVersion: v1
kind: Namespace
metadata: {{name: payments, labels: {{workload: payments}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: tenant-1, namespace: dns}}
spec: {{clusterIP: 127.0.0.1}}
---
apiVersion: v1
kind: Service
metadata: {{name: checkout, namespace: payments}}
spec: {{clusterIP: 10.50.0.1}}
---
apiVersion: v1
kind: Service
metadata: {{name: internal, namespace: payments}}
spec: {{clusterIP: 10.50.0.2}}
---
# The policy server's name, as the cluster knows it.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: policy-server, namespace: payments}}
spec: {{hosts: [policy-server.acme.com], addresses: [127.0.0.1], resolution: STATIC}}
"""
RECORDS = ["www.example.com. A 203.0.113.10", "evil.example.com. A 203.0.113.66",
           "api.partner.example. A 192.0.2.7", "late.partner.example. A 192.0.2.8"]


class PolicyServer:
    def __init__(self, workdir: Path, port: int, *extra: str) -> None:
        self.port = port
        self.extra = list(extra)
        self.log = workdir / "checks.log"
        self.process: Process | None = None
        self.workdir = workdir

    def start(self) -> PolicyServer:
        self.process = Process("policy-server", [
            sys.executable, "-m", "e2e.harness.policy_server", "--port", str(self.port), "--policy",
            str(REGO), "--log", str(self.log), *self.extra],
            self.workdir / "policy-server.out").start()
        wait_for(lambda: "serving" in self.process.log() if self.process else False,
                 timeout=20, what="policy server")
        return self

    def checks(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def stop(self) -> int | None:
        return self.process.stop() if self.process else None


@pytest.fixture
def setup(tmp_path: Path, processes: list[object],
          start_control_plane: Callable[..., ControlPlane]
          ) -> tuple[ControlPlane, Envoy, UnboundServer, PolicyServer]:
    require_tool("unbound", "apt-get install unbound")
    require_file(Path("/usr/lib/python3/dist-packages/unboundmodule.py"),
                 "apt-get install python3-unbound")
    import regopy  # noqa: F401 - the test extra installs it; e2e/harness/policy_server.py needs it
    upstream = UnboundServer(RECORDS, tmp_path).start()
    processes.append(upstream)
    ps = PolicyServer(tmp_path, free_port()).start()
    processes.append(ps)
    seed = (SEEDS / "dnspolicy-app-policy-server.yaml").read_text()
    seed = seed.replace("address: tenant-1.dns.svc", f"address: tenant-1.dns.svc:{upstream.port}")
    seed = seed.replace("address: policy-server.acme.com",
                        f"address: policy-server.acme.com:{ps.port}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "seed.yaml").write_text(seed + CLUSTER.format())
    cp = start_control_plane(src)
    envoy = Envoy(node_id="gw.payments", namespace="payments",
                  labels={"app": "payment-gateway"}, xds_address=cp.xds_address,
                  workdir=tmp_path)
    processes.append(envoy.start())
    return cp, envoy, upstream, ps


# The names of this tenant's table: the policy server decides each ahead of need.
TABLE_NAMES = {"checkout.payments.svc.cluster.local", "internal.payments.svc.cluster.local",
               "tenant-1.dns.svc.cluster.local", "policy-server.acme.com"}


def settled(cp: ControlPlane, envoy: Envoy, tenant: str = "dns-policy") -> bool:
    """Whether every table name is decided, the sidecar's active DNS listener forwards to
    the tenant's current resolver, and the sidecar acknowledged the last listeners sent.

    A sidecar without a front answers NXDOMAIN to the forwarded queries in flight when its
    DNS listener is replaced (Envoy destroys the old filter's c-ares channel, "Channel is
    being destroyed"; docs/dns-front.md), and at start each table decision that lands
    apart is a new listener, a reverse zone the table gains a new resolver on a new port.
    Forwarded names are asked once that is over: this test is about decisions, not about
    that Envoy limit (the fronted sidecar of e2e/test_policy_decisions_e2e.py has none)."""
    decided = {d["name"] for d in
               cp.get(f"/api/v1/views/{tenant}/dns-table")["policy_server"]["decisions"]}
    if not decided >= TABLE_NAMES:
        return False
    current = [r for r in cp.get("/api/v1/resolvers")["resolvers"] if r["tenant"] == tenant]
    if len(current) != 1 or "listen" not in current[0]:
        return False
    port = int(str(current[0]["listen"]).rsplit(":", 1)[1])
    dump = http_json(f"{envoy.admin_url}/config_dump?resource=dynamic_listeners")
    active = [c["active_state"] for c in dump.get("configs", [])
              if c["name"].startswith("dns:") and "active_state" in c]
    if not active or f'"port_value": {port}' not in json.dumps(active[0]):
        return False
    nodes = [n for n in cp.get("/api/v1/nodes") if n["node_id"] == envoy.node_id]
    lds = nodes[0]["types"].get("lds", {}) if nodes else {}
    return bool(lds) and lds["sent_version"] == lds["acked_version"]


def wait_settled(cp: ControlPlane, envoy: Envoy, *, timeout: float = 15) -> None:
    wait_for(lambda: settled(cp, envoy), timeout=timeout,
             what="every table name decided and the sidecar on its last listener")


def why_not(cp: ControlPlane, envoy: Envoy) -> str:
    """What the control plane and the sidecar counted, for a failed forwarded answer."""
    metrics = http_text(f"{cp.admin_url}/metrics").splitlines()
    ours = [line for line in metrics if line.startswith(("dnscp_policy_server_decisions",
                                                          "dnscp_event_loop_lag_max"))]
    stats = {k: v for k, v in envoy.stats().items() if "dns_filter" in k and v}
    nodes = [n["types"].get("lds") for n in cp.get("/api/v1/nodes")]
    return f"decisions: {ours}; sidecar: {stats}; lds: {nodes}"


def test_policy_server_decides_table_and_forwarded_names(
        setup: tuple[ControlPlane, Envoy, UnboundServer, PolicyServer]) -> None:
    cp, envoy, upstream, ps = setup
    port = envoy.dns_port
    # Table names: asked ahead, left out when denied.
    wait_for(lambda: query(port, "checkout.payments.svc.cluster.local")[0] == "NOERROR",
             timeout=10, what="the allowed cluster name in the table")
    assert query(port, "checkout.payments.svc.cluster.local") == ("NOERROR", ["10.50.0.1"])
    assert query(port, "internal.payments.svc.cluster.local")[0] == "NXDOMAIN"
    wait_settled(cp, envoy)
    table_checks = len(ps.checks())
    # Forwarded names: asked once per name per lifetime, in any case.
    first = query(port, "www.example.com", timeout=3)
    assert first == ("NOERROR", ["203.0.113.10"]), why_not(cp, envoy)
    assert query(port, "WWW.Example.COM", timeout=3) == ("NOERROR", ["203.0.113.10"])
    assert query(port, "www.example.com", "AAAA", timeout=3) == ("NOERROR",
                                                                 ["::ffff:203.0.113.10"])
    assert query(port, "api.partner.example", timeout=3) == ("NOERROR", ["192.0.2.7"])
    for name in ("evil.example.com", "EVIL.example.com"):
        assert query(port, name, timeout=3)[0] == "NXDOMAIN"
    asked = upstream.asked()
    assert not any("evil" in q for q in asked), asked
    forwarded_checks = ps.checks()[table_checks:]
    print(f"\ntable names asked at start: {table_checks}; forwarded: {forwarded_checks}")
    assert sum(c.startswith("www.example.com ") for c in forwarded_checks) == 1  # cached
    assert sum(c.startswith("evil.example.com ") for c in forwarded_checks) == 1
    # The admin API shows what the server decided and when it expires.
    table = cp.get("/api/v1/views/dns-policy/dns-table")
    decisions = {d["name"]: d for d in table["policy_server"]["decisions"]}
    assert decisions["internal.payments.svc.cluster.local"]["decision"] == "deny"
    assert decisions["checkout.payments.svc.cluster.local"]["decision"] == "allow"
    assert 0 < decisions["checkout.payments.svc.cluster.local"]["expires_in_seconds"] <= 30
    assert table["policy_server"]["reachable"] is True
    assert table["unenforced"] == []
    ex = cp.get("/api/v1/explain?namespace=payments&labels=app=payment-gateway"
                "&name=internal.payments.svc.cluster.local&type=A")
    assert ex["policy_server"]["decision"] == "deny", ex


def test_policy_server_outage_failure_mode_and_return(
        setup: tuple[ControlPlane, Envoy, UnboundServer, PolicyServer]) -> None:
    """DENY policy without failureMode: closed. Live decisions keep serving; a new name is
    denied within the timeout (200 ms); once the server is back, decisions return."""
    cp, envoy, upstream, ps = setup
    port = envoy.dns_port
    wait_for(lambda: query(port, "checkout.payments.svc.cluster.local")[0] == "NOERROR",
             timeout=10, what="the table")
    wait_settled(cp, envoy)
    assert query(port, "www.example.com", timeout=3)[0] == "NOERROR"
    ps.stop()
    worst = 0.0
    for i in range(20):
        started = time.monotonic()
        r = dns.query.udp(dns.message.make_query(f"n{i}.partner.example", "A"), "127.0.0.1",
                          port=port, timeout=3)
        worst = max(worst, time.monotonic() - started)
        assert r.rcode() == dns.rcode.NXDOMAIN  # closed: denied while the server is away
    # Decisions that still live keep serving: the table and www.example.com.
    assert query(port, "checkout.payments.svc.cluster.local") == ("NOERROR", ["10.50.0.1"])
    assert query(port, "www.example.com", timeout=3) == ("NOERROR", ["203.0.113.10"])
    print(f"\nworst query time while the policy server is down: {worst * 1000:.0f} ms")
    assert worst < 1.0  # one timeout (200 ms) at most per name, plus Envoy's forwarding

    def unreachable() -> bool:
        ps_json = cp.get("/api/v1/views/dns-policy/dns-table")["policy_server"]
        return ps_json["reachable"] is False
    wait_for(unreachable, timeout=10, what="PolicyServerReachable false")
    log = cp.process.log() if cp.process else ""
    assert log.count("cannot decide") == 1  # one log line per outage, not per query
    ps.start()
    wait_for(lambda: query(port, "late.partner.example", timeout=3) == ("NOERROR",
                                                                        ["192.0.2.8"]),
             timeout=15, interval=0.3, what="decisions to return after the restart")


@pytest.mark.parametrize(("extra", "why"), [
    (("--delay", "2"), "DEADLINE_EXCEEDED"),
    (("--status", "13"), "answered status 13"),
])
def test_slow_or_garbage_policy_server_never_holds_a_query(
        extra: tuple[str, ...], why: str, setup: tuple[ControlPlane, Envoy, UnboundServer,
                                                       PolicyServer]) -> None:
    """A slow server (2 s) or one answering an unknown status (INTERNAL): every new name
    is decided by the failure mode (closed) within the 200 ms timeout, and the reason
    shows in the admin API."""
    cp, envoy, _, ps = setup
    ps.stop()
    slow = PolicyServer(ps.workdir / "bad", ps.port, *extra)
    slow.workdir.mkdir()
    slow.start()
    try:
        worst = 0.0
        for i in range(5):
            started = time.monotonic()
            r = dns.query.udp(dns.message.make_query(f"b{i}.partner.example", "A"),
                              "127.0.0.1", port=envoy.dns_port, timeout=3)
            worst = max(worst, time.monotonic() - started)
            assert r.rcode() == dns.rcode.NXDOMAIN
        print(f"\n{' '.join(extra)}: worst query {worst * 1000:.0f} ms")
        assert worst < 0.6
        # the call itself fails at its own deadline (1 s) or on the bad status: unreachable
        wait_for(lambda: why in (cp.get("/api/v1/views/dns-policy/dns-table")
                                 ["policy_server"]["reason"] or ""),
                 timeout=10, what=f"the reason {why!r} in the admin API")
    finally:
        slow.stop()


@pytest.mark.parametrize("right_ca", [True, False], ids=["verified", "wrong-ca"])
def test_policy_server_over_mutual_tls(right_ca: bool, tmp_path: Path, processes: list[object],
                                      start_control_plane: Callable[..., ControlPlane]) -> None:
    """TLS to the policy server with the policy's CA bundle and server name, and a client
    certificate from the control plane's flags; with another CA nothing is decided by the
    server (closed: the table stays empty) and the reason is in /api/v1/errors."""
    from e2e.harness.dnsservers import make_ca

    require_tool("unbound", "apt-get install unbound")
    server_ca = make_ca(tmp_path / "server-pki", "policy-server.acme.com")
    client_ca = make_ca(tmp_path / "client-pki", "dns-controlplane", label="client",
                        usage="clientAuth")
    other = make_ca(tmp_path / "other-pki", "policy-server.acme.com", label="other")
    upstream = UnboundServer(RECORDS, tmp_path).start()
    processes.append(upstream)
    ps = PolicyServer(tmp_path, free_port(), "--tls-cert", str(server_ca.cert_pem), "--tls-key",
                      str(server_ca.key_pem), "--client-ca", str(client_ca.ca_pem)).start()
    processes.append(ps)
    pem = (server_ca.ca_pem if right_ca else other.ca_pem).read_text().strip()
    seed = (SEEDS / "dnspolicy-app-policy-server.yaml").read_text()
    seed = seed.replace("address: tenant-1.dns.svc", f"address: tenant-1.dns.svc:{upstream.port}")
    seed = seed.replace("      protocol: grpc # The DNS policy server protocol.",
                        "      protocol: grpc\n      serverName: policy-server.acme.com\n"
                        "      caBundle: |\n" + "\n".join("        " + line
                                                          for line in pem.splitlines()))
    seed = seed.replace("address: policy-server.acme.com",
                        f"address: policy-server.acme.com:{ps.port}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "seed.yaml").write_text(seed + CLUSTER.format())
    cp = start_control_plane(src, "--policy-server-client-cert", str(client_ca.cert_pem),
                             "--policy-server-client-key", str(client_ca.key_pem))
    envoy = Envoy(node_id="gw.payments", namespace="payments",
                  labels={"app": "payment-gateway"}, xds_address=cp.xds_address,
                  workdir=tmp_path)
    processes.append(envoy.start())
    port = envoy.dns_port
    if right_ca:
        wait_for(lambda: query(port, "checkout.payments.svc.cluster.local")[0] == "NOERROR",
                 timeout=15, what="a decision over mutual TLS")
        wait_settled(cp, envoy)
        assert query(port, "www.example.com", timeout=3) == ("NOERROR", ["203.0.113.10"])
        assert len(ps.checks()) >= 2
        return
    wait_for(lambda: any(e["name"] == "dns-policy" and "policy server" in e["reason"]
                         for e in cp.get("/api/v1/errors")["errors"]),
             timeout=15, what="the TLS failure in /api/v1/errors")
    assert query(port, "checkout.payments.svc.cluster.local")[0] == "NXDOMAIN"
    assert query(port, "www.example.com", timeout=3)[0] == "NXDOMAIN"
    assert ps.checks() == []  # no handshake completed
