"""Real application clients through a sidecar's DNS front (issue 18, item 7).

The same clients and the same table as ``e2e/test_app_clients_e2e.py`` (glibc
getaddrinfo, getent, the static musl client, Go's pure resolver, busybox nslookup, Node's
``dns.lookup`` and c-ares ``dns.resolve*``, Java InetAddress and JNDI, dig), each in a
private mount namespace with a pod's resolv.conf (``nameserver`` = the front, the search
list, ``ndots:5``), over UDP and over TCP (``options use-vc``). There a reference unbound
holds every record; here the names come from where they come from in a cluster:

- Services of namespace acme (``web`` with a named port, ``dual`` dual-stack, ``headless``
  with 30 ready endpoints): the control plane's table, answered by Envoy for the pairs it
  answers right and by the tenant resolver for the rest (PTR, dns-version, NODATA, the
  30 addresses);
- example.com (MX, TXT, a 600-byte TXT, a CNAME into the cluster): acme's own DNS server
  (an unbound), reached through the front, Envoy's hop and the tenant resolver.

Every client must see what it sees from the reference server (``appcases.expected``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane._kit.localrun import ControlPlane
from e2e.harness.appcases import (
    CASES,
    HEADLESS_IPS,
    NS,
    RECORDS,
    SVC,
    TCP,
    UDP,
    Case,
    expected,
)
from e2e.harness.appclients import (
    CLIENTS,
    AppAnswer,
    AppClients,
    Transport,
    require_app_client_tools,
)
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns
from tests.tools import require_file, require_tool

WORLD_RECORDS = [r for r in RECORDS if r.split()[0].endswith("example.com.")]


def manifests(world: str) -> str:
    endpoints = "\n".join(f"- {{addresses: [{ip}], conditions: {{ready: true}}}}"
                          for ip in HEADLESS_IPS)
    return f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}, labels: {{tenant: {NS}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  clusterIP: 10.96.0.10
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: dual, namespace: {NS}}}
spec:
  clusterIPs: [10.96.0.11, "fd00::11"]
  ipFamilies: [IPv4, IPv6]
---
apiVersion: v1
kind: Service
metadata: {{name: headless, namespace: {NS}}}
spec: {{clusterIP: None}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: headless-1, namespace: {NS}, labels: {{kubernetes.io/service-name: headless}}}}
addressType: IPv4
endpoints:
{endpoints}
---
apiVersion: networking.example.com/v1alpha1
kind: DnsPolicy
metadata: {{name: {NS}}}
spec:
  namespaceSelector: {{matchLabels: {{tenant: {NS}}}}}
  server: {{address: "{world}"}}
  policy: {{defaultAction: ALLOW}}
"""


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontSidecar]:
    require_app_client_tools()
    for tool, how in (("unbound", "apt-get install unbound"),
                      ("kresd", "apt-get install knot-resolver")):
        require_tool(tool, how)
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    workdir = tmp_path_factory.mktemp("sidecar-clients")
    started: list[ReferenceDns | ControlPlane | FrontSidecar] = []
    try:
        world = ReferenceDns(records=WORLD_RECORDS, local_zones=["example.com"],
                             address=reserve_loopback_dns_address(),
                             workdir=workdir / "world", max_udp_size=4096)
        started.append(world.start())
        source = workdir / "manifests"
        source.mkdir()
        (source / "cluster.yaml").write_text(
            manifests(f"{world.address.host}:{world.address.port}"))
        cp = ControlPlane(source=source, workdir=workdir / "cp")
        cp.workdir.mkdir()
        started.append(cp.start())
        front = FrontSidecar(xds_address=cp.xds_address, node_id=f"app.{NS}", namespace=NS,
                             labels={"app": "app"}, address=reserve_loopback_dns_address(),
                             workdir=workdir / "sidecar")
        started.append(front)
        yield front.start(expect_pair=f"A web.{SVC}.\n")
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def answers(sidecar: FrontSidecar, tmp_path_factory: pytest.TempPathFactory,
            pytestconfig: pytest.Config) -> Iterator[dict[tuple[str, Transport], dict[str, AppAnswer]]]:
    workdir = tmp_path_factory.mktemp("sidecar-clients-run")
    cache = Path(pytestconfig.cache.mkdir("app-clients")) if pytestconfig.cache else workdir
    clients = AppClients(nameserver=sidecar.host, namespace=NS, cache_dir=cache,
                         workdir=workdir)
    out = {}
    for transport in Transport:
        for client in CLIENTS:
            got = clients.lookup(client, [case.lookup for case in CASES], transport=transport)
            out[(client, transport)] = {c.id: a for c, a in zip(CASES, got, strict=True)}
    yield out
    shutil.rmtree(workdir, ignore_errors=True)


ROWS = [(client, case, transport) for transport in (UDP, TCP) for client in CLIENTS
        for case in CASES]


@pytest.mark.parametrize(("client", "case", "transport"), ROWS,
                         ids=[f"{cl}-{ca.id}-{t.value}" for cl, ca, t in ROWS])
def test_client_through_the_front_sees_what_a_correct_server_answers(
        answers: dict[tuple[str, Transport], dict[str, AppAnswer]], client: str, case: Case,
        transport: Transport) -> None:
    got = answers[(client, transport)][case.id]
    want = expected(client, case, transport)
    print(got.line())
    if want.ok:
        assert got.ok, got
        assert (got.addresses, got.records) == (want.addresses, want.records), got
    else:
        assert not got.ok and got.error == want.error, got


def test_table_names_reached_envoy(
        sidecar: FrontSidecar, answers: dict[tuple[str, Transport], dict[str, AppAnswer]]
        ) -> None:
    """Envoy still answers the table's pairs: its per-tenant counter saw the clients."""
    assert answers  # every client has run
    assert sidecar.table_queries(NS) > len(CLIENTS)
