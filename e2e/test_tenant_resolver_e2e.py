"""The tenant resolver behind a forwarding view, with the real Envoy, unbound and dnsdist.

Envoy answers the tenant's table and forwards every other name to the tenant's
resolver (an unbound the control plane starts), which enforces the policy and
asks the tenant's own server: here a real unbound serving fixed records over
plain DNS, DNS over TLS and DNS over HTTPS, whose query log shows what reached it.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane._kit.localrun import ControlPlane, DnsLoad, Envoy, wait_for
from e2e.harness.dnsquery import query
from e2e.harness.dnsservers import PrivateCA, UnboundServer, make_ca
from tests.tools import require_tool

RECORDS = [
    "www.example.com. A 203.0.113.10",  # IPv4 only: AAAA is NODATA at the server
    "dual.example.com. A 203.0.113.11",
    "dual.example.com. AAAA 2001:db8::11",
    "alias.example.org. CNAME www.example.com.",  # a CNAME-only answer
    "x.y.tracker.example. A 203.0.113.66",
    "tracker.example. A 203.0.113.77",
    "www.example.net. A 203.0.113.88",
    "ads.partner.example. A 203.0.113.99",
]

NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata: {name: acme, labels: {tenant: acme}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: acme}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 80}]}
"""


def policy(server: str, *, blacklist: tuple[str, ...] = ("*.tracker.example", "*.net"),
           protocol: str = "") -> str:
    return NAMESPACE + textwrap.dedent(f"""\
        ---
        apiVersion: networking.example.com/v1alpha1
        kind: DnsPolicy
        metadata: {{name: acme}}
        spec:
          namespaceSelector: {{matchLabels: {{tenant: acme}}}}
          server: {{address: "{server}"}}
          policy:
            blacklist: [{", ".join(f'"{b}"' for b in blacklist)}]
            defaultAction: ALLOW
        """) + protocol


def tls_protocol(kind: str, ca: PrivateCA, *, ca_pem: Path | None = None) -> str:
    pem = (ca_pem or ca.ca_pem).read_text().strip()
    return f"  protocol:\n    upgrade: true\n    type: {kind}\n" \
           f"    serverName: {ca.server_name}\n    caBundle: |\n" + \
           textwrap.indent(pem, "      ") + "\n"


@pytest.fixture
def server(tmp_path: Path, processes: list[object]) -> Callable[..., UnboundServer]:
    require_tool("unbound", "apt-get install unbound")

    def start(tls: PrivateCA | None = None) -> UnboundServer:
        srv = UnboundServer(RECORDS, tmp_path, tls=tls).start()
        processes.append(srv)
        return srv

    return start


def start_tenant(tmp_path: Path, processes: list[object], start_control_plane: Callable[..., ControlPlane],
                 manifest: str) -> tuple[ControlPlane, Envoy]:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "acme.yaml").write_text(manifest)
    cp = start_control_plane(src)
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path)
    processes.append(envoy.start())
    return cp, envoy


def test_forwarded_names_answered_as_real_resolvers_need(
        tmp_path: Path, processes: list[object], server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    upstream = server()
    cp, envoy = start_tenant(tmp_path, processes, start_control_plane,
                             policy(f"127.0.0.1:{upstream.port}"))
    port = envoy.dns_port
    # Table names: Envoy itself.
    assert query(port, "web.acme.svc.cluster.local") == ("NOERROR", ["10.96.0.10"])
    # One external lookup: exactly one query of each type reaches the tenant's server.
    assert query(port, "www.example.com") == ("NOERROR", ["203.0.113.10"])
    # NODATA upstream becomes the IPv4-mapped address (never NXDOMAIN, which musl rejects).
    assert query(port, "www.example.com", "AAAA") == ("NOERROR", ["::ffff:203.0.113.10"])
    assert upstream.asked().count("www.example.com A") == 1
    assert upstream.asked().count("www.example.com AAAA") == 1
    # A real AAAA is kept; a CNAME-only answer is followed to its address.
    assert query(port, "dual.example.com", "AAAA") == ("NOERROR", ["2001:db8::11"])
    assert query(port, "alias.example.org") == ("NOERROR", ["203.0.113.10"])
    # The blacklist, case-insensitively and for one-label suffixes; *.x is strictly below x.
    for name in ("x.y.tracker.example", "X.Y.Tracker.EXAMPLE", "www.example.net",
                 "WWW.EXAMPLE.NET"):
        for rdtype in ("A", "AAAA"):
            assert query(port, name, rdtype)[0] == "NXDOMAIN", (name, rdtype)
    assert query(port, "tracker.example") == ("NOERROR", ["203.0.113.77"])
    # Search-list expansions and unknown cluster names stop at the tenant resolver.
    for name in ("www.example.com.acme.svc.cluster.local", "www.example.com.svc.cluster.local",
                 "www.example.com.cluster.local", "nope.acme.svc.cluster.local",
                 "web.other.svc.cluster.local"):
        for rdtype in ("A", "AAAA"):
            assert query(port, name, rdtype)[0] == "NXDOMAIN", (name, rdtype)
    asked = upstream.asked()
    leaked = [q for q in asked if "tracker" in q.split()[0] and q.split()[0] != "tracker.example"
              or q.split()[0].endswith(".net") or "cluster.local" in q]
    assert leaked == [], asked
    # Explain says what the resolver does with each.
    got = cp.get("/api/v1/explain?namespace=acme&name=X.Y.Tracker.EXAMPLE&type=A")
    assert got["envoy"]["rcode"] == "NXDOMAIN" and "blacklist *.tracker.example" in got["why"]
    got = cp.get("/api/v1/explain?namespace=acme&name=www.example.com&type=A")
    assert got["envoy"]["rcode"] == "FORWARDED"
    assert got["envoy"]["forwarded_to"] == [f"127.0.0.1:{upstream.port}"]
    table = cp.get("/api/v1/views/acme/dns-table")
    assert table["unenforced"] == [] and table["resolver"]["transport"] == "udp"
    # Envoy never waited out an initial fetch.
    stats = envoy.stats()
    assert stats.get("cluster_manager.cds.init_fetch_timeout", 0) == 0
    assert stats.get("listener_manager.lds.init_fetch_timeout", 0) == 0


def test_policy_edit_reaches_the_resolver_live_without_losing_a_query(
        tmp_path: Path, processes: list[object], server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    upstream = server()
    cp, envoy = start_tenant(tmp_path, processes, start_control_plane,
                             policy(f"127.0.0.1:{upstream.port}"))
    port = envoy.dns_port
    assert query(port, "dual.example.com") == ("NOERROR", ["203.0.113.11"])
    assert query(port, "ads.partner.example") == ("NOERROR", ["203.0.113.99"])
    (before,) = cp.get("/api/v1/resolvers")["resolvers"]
    load = DnsLoad(port, {"web.acme.svc.cluster.local": "10.96.0.10",
                          "dual.example.com": "203.0.113.11"}, qps=200).start()
    try:
        time.sleep(0.3)  # some load before the change
        (tmp_path / "src" / "acme.yaml").write_text(policy(
            f"127.0.0.1:{upstream.port}",
            blacklist=("*.tracker.example", "*.net", "*.partner.example")))
        wait_for(lambda: query(port, "ads.partner.example")[0] == "NXDOMAIN", timeout=10,
                 what="the new blacklist entry to be enforced")
        time.sleep(0.3)  # and some after
    finally:
        load.stop()
    print(f"\nlive policy edit under load: {load.summary()}")
    assert load.sent > 50 and load.lost == 0 and load.wrong == 0, load.wrong_samples
    (after,) = cp.get("/api/v1/resolvers")["resolvers"]
    assert after["pid"] == before["pid"]  # reloaded, not restarted
    # The cache survived: the allowed external name is answered without asking again.
    asked = upstream.asked().count("dual.example.com A")
    assert query(port, "dual.example.com") == ("NOERROR", ["203.0.113.11"])
    assert upstream.asked().count("dual.example.com A") == asked == 1


@pytest.mark.parametrize("kind", ["dns-over-tls", "dns-over-https"])
def test_upgrade_encrypts_and_verifies_the_server(
        kind: str, tmp_path: Path, processes: list[object],
        server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    if kind == "dns-over-https":
        require_tool("dnsdist", "apt-get install dnsdist")
    ca = make_ca(tmp_path / "pki", "dns.tenant.example")
    upstream = server(tls=ca)
    port_of = upstream.tls_port if kind == "dns-over-tls" else upstream.https_port
    cp, envoy = start_tenant(tmp_path, processes, start_control_plane, policy(
        f"127.0.0.1:{port_of}", protocol=tls_protocol(kind, ca)))
    assert query(envoy.dns_port, "www.example.com", timeout=3) == ("NOERROR", ["203.0.113.10"])
    assert query(envoy.dns_port, "www.example.com", "AAAA", timeout=3) == (
        "NOERROR", ["::ffff:203.0.113.10"])
    total, tls, https = upstream.queries()
    encrypted = tls if kind == "dns-over-tls" else https
    print(f"\n{kind}: server saw {total} queries, {tls} over TLS, {https} over HTTPS")
    assert total > 0 and encrypted == total  # never the cleartext port
    table = cp.get("/api/v1/views/acme/dns-table")["resolver"]
    assert table["transport"] == kind and table["tls_server_name"] == "dns.tenant.example"


@pytest.mark.parametrize("kind", ["dns-over-tls", "dns-over-https"])
def test_upgrade_with_the_wrong_ca_fails_closed(
        kind: str, tmp_path: Path, processes: list[object],
        server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    if kind == "dns-over-https":
        require_tool("dnsdist", "apt-get install dnsdist")
    ca = make_ca(tmp_path / "pki", "dns.tenant.example")
    other = make_ca(tmp_path / "other", "dns.tenant.example", label="other")
    upstream = server(tls=ca)
    port_of = upstream.tls_port if kind == "dns-over-tls" else upstream.https_port
    _, envoy = start_tenant(tmp_path, processes, start_control_plane, policy(
        f"127.0.0.1:{port_of}", protocol=tls_protocol(kind, ca, ca_pem=other.ca_pem)))
    for _ in range(3):
        rcode, answers = query(envoy.dns_port, "www.example.com", timeout=6)
        assert answers == [] and rcode in ("NXDOMAIN", "SERVFAIL"), rcode
    total, tls, https = upstream.queries()
    print(f"\n{kind} with the wrong CA: server saw {total} queries")
    assert total == 0  # no handshake completed, and nothing fell back to cleartext


def test_sidecar_reaches_its_resolver_over_tls(
        tmp_path: Path, processes: list[object], server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    """--resolver-hop tls: Envoy's resolver asks a local TCP listener whose cluster speaks
    TLS 1.3 to the tenant resolver, verified with the control plane's CA: nothing crosses
    the pod network in cleartext (fact 19)."""
    upstream = server()
    src = tmp_path / "src"
    src.mkdir()
    (src / "acme.yaml").write_text(policy(f"127.0.0.1:{upstream.port}"))
    cp = start_control_plane(src, "--resolver-hop", "tls")
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path)
    processes.append(envoy.start())
    port = envoy.dns_port
    assert query(port, "www.example.com", timeout=3) == ("NOERROR", ["203.0.113.10"])
    assert query(port, "www.example.com", "AAAA", timeout=3) == ("NOERROR",
                                                                 ["::ffff:203.0.113.10"])
    assert query(port, "x.Tracker.example", timeout=3) == ("NXDOMAIN", [])

    def resolver_stats() -> dict[str, float] | None:
        (res,) = cp.get("/api/v1/resolvers")["resolvers"]
        return res["stats"] if res["stats"].get("total.num.queries", 0) >= 3 else None

    stats = wait_for(resolver_stats, timeout=10, what="tenant resolver statistics")
    print(f"\nTLS hop: the tenant resolver saw {stats['total.num.queries']:.0f} queries, "
          f"{stats.get('num.query.tls', 0):.0f} over TLS")
    assert stats["num.query.tls"] == stats["total.num.queries"]  # none in cleartext
    envoy_stats = envoy.stats()
    assert envoy_stats["cluster.tenant_resolver.ssl.handshake"] >= 1
    assert envoy_stats.get("cluster.tenant_resolver.ssl.connection_error", 0) == 0


def test_resolver_hop_with_a_certificate_for_another_name_fails_closed(
        tmp_path: Path, processes: list[object], server: Callable[..., UnboundServer],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    from controlplane.identity.certs import CA_FILE, CERT_FILE, KEY_FILE, make_ca_and_server

    upstream = server()
    tls_dir = tmp_path / "hop-tls"
    tls_dir.mkdir()
    ca, cert, key = make_ca_and_server("somebody-else.example")  # SAN Envoy will not accept
    (tls_dir / CA_FILE).write_bytes(ca)
    (tls_dir / CERT_FILE).write_bytes(cert)
    (tls_dir / KEY_FILE).write_bytes(key)
    src = tmp_path / "src"
    src.mkdir()
    (src / "acme.yaml").write_text(policy(f"127.0.0.1:{upstream.port}"))
    cp = start_control_plane(src, "--resolver-hop", "tls", "--resolver-tls-dir", str(tls_dir))
    envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                  xds_address=cp.xds_address, workdir=tmp_path)
    processes.append(envoy.start())
    rcode, answers = query(envoy.dns_port, "www.example.com", timeout=6)
    assert answers == [] and rcode in ("NXDOMAIN", "SERVFAIL")
    assert upstream.asked() == []  # nothing reached the tenant's server
    assert envoy.stats().get("cluster.tenant_resolver.ssl.fail_verify_san", 0) >= 1


SEED_CLUSTER = """
---
apiVersion: v1
kind: Namespace
metadata: {{name: payments, labels: {{workload: payments, env: staging-1}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: {service}, namespace: dns}}
spec: {{clusterIP: 127.0.0.1}}
---
apiVersion: v1
kind: Service
metadata: {{name: checkout, namespace: payments}}
spec: {{clusterIP: 10.50.0.1}}
"""


@pytest.mark.parametrize("seed", ["dnspolicy-upgrade.yaml", "dnspolicy-isolation.yaml"])
def test_seed_policies_as_written(seed: str, tmp_path: Path, processes: list[object],
                                  server: Callable[..., UnboundServer],
                                  start_control_plane: Callable[..., ControlPlane]) -> None:
    """The users' seeds, unchanged but for the server's port (a Service named by the seed,
    whose cluster IP is this machine): the upgrade seed speaks DoH to
    tenant-1-encrypted.dns.svc and verifies that name with the control plane's CA bundle."""
    from e2e.harness.paths import SEEDS

    text = (SEEDS / seed).read_text()
    upgrade = "upgrade" in seed
    ca = make_ca(tmp_path / "pki", "tenant-1-encrypted.dns.svc") if upgrade else None
    upstream = server(tls=ca)
    if upgrade:
        require_tool("dnsdist", "apt-get install dnsdist")
        text = text.replace("address: tenant-1-encrypted.dns.svc",
                            f"address: tenant-1-encrypted.dns.svc:{upstream.https_port}")
        service, extra = "tenant-1-encrypted", ["--upstream-ca-bundle", str(ca.ca_pem)]
    else:
        text = text.replace("address: tenant-1.dns.svc",
                            f"address: tenant-1.dns.svc:{upstream.port}")
        service, extra = "tenant-1", []
    src = tmp_path / "src"
    src.mkdir()
    (src / "seed.yaml").write_text(text + SEED_CLUSTER.format(service=service))
    cp = start_control_plane(src, *extra)
    envoy = Envoy(node_id="app.payments", namespace="payments", labels={"app": "x"},
                  xds_address=cp.xds_address, workdir=tmp_path)
    processes.append(envoy.start())
    port = envoy.dns_port
    assert query(port, "checkout.payments.svc.cluster.local") == ("NOERROR", ["10.50.0.1"])
    assert query(port, "www.example.com", timeout=3) == ("NOERROR", ["203.0.113.10"])
    assert query(port, "www.example.com", "AAAA", timeout=3) == ("NOERROR",
                                                                 ["::ffff:203.0.113.10"])
    assert query(port, "nope.payments.svc.cluster.local")[0] == "NXDOMAIN"
    total, tls, https = upstream.queries()
    print(f"\n{seed}: the tenant's server saw {total} queries ({https} over HTTPS)")
    if upgrade:  # dnsdist's health check is one more query, over HTTPS too
        assert total >= 2 and https == total
    else:
        assert total == 2 and tls == 0
    table = cp.get("/api/v1/views/dns-policy/dns-table")
    assert table["unenforced"] == []
    assert table["resolver"]["transport"] == ("dns-over-https" if upgrade else "udp")
