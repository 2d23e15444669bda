"""Cluster records: every kind of name, caps, mapped AAAA, TTLs, and VIP allocation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.inventory import Inventory
from controlplane.core.manifests import parse_object
from controlplane.core.model import (
    KINDS,
    DefaultAction,
    DnsPolicy,
    Endpoint,
    EndpointSlice,
    LabelSelector,
    Namespace,
    Pod,
    Service,
    ServiceEntry,
    ServiceEntryEndpoint,
    ServicePort,
)
from controlplane.core.settings import DnsSettings
from controlplane.dns.records import (
    ClusterTarget,
    NameRecord,
    RecordOptions,
    SrvRecord,
    _record,
    cluster_records,
    single_record,
)
from controlplane.dns.vips import allocate


def recs(*objects: object, **opts: object) -> dict[str, NameRecord]:
    inv = Inventory.of(objects)  # type: ignore[arg-type]
    return {r.name: r for r in cluster_records(inv, options=RecordOptions(**opts))}  # type: ignore[arg-type]


def test_headless_endpoints_hostnames_and_srv() -> None:
    r = recs(
        Service("ns", "db", headless=True, ports=(ServicePort("pg", 5432),)),
        EndpointSlice("ns", "db-a", "db", ports=(ServicePort("pg", 15432),), endpoints=(
            Endpoint(("10.1.0.1",), ready=True, hostname="db-0"),
            Endpoint(("10.1.0.2",), ready=True),
            Endpoint(("10.1.0.3",), ready=False, hostname="db-2"))),
        aaaa_mapped=False)
    assert r["db.ns.svc.cluster.local"].ipv4 == ("10.1.0.1", "10.1.0.2")
    assert r["db-0.db.ns.svc.cluster.local"].ipv4 == ("10.1.0.1",)
    assert r["10-1-0-2.db.ns.svc.cluster.local"].ipv4 == ("10.1.0.2",)
    assert "db-2.db.ns.svc.cluster.local" not in r
    srv = [(s.service, s.port, s.target) for s in r["db.ns.svc.cluster.local"].srv]
    assert srv == [("pg", 15432, "10-1-0-2.db.ns.svc.cluster.local"),
                   ("pg", 15432, "db-0.db.ns.svc.cluster.local")]


def test_headless_publish_not_ready_and_no_ready_endpoints() -> None:
    slice_ = EndpointSlice("ns", "s", "db", endpoints=(Endpoint(("10.1.0.3",), ready=False),))
    assert "db.ns.svc.cluster.local" not in recs(Service("ns", "db", headless=True), slice_)
    r = recs(Service("ns", "db", headless=True, publish_not_ready=True), slice_)
    assert r["db.ns.svc.cluster.local"].ipv4 == ("10.1.0.3",)


def test_external_name_is_answered_from_a_cluster() -> None:
    r = recs(Service("ns", "ext", type="ExternalName", external_name="api.example.com",
                     ports=(ServicePort("https", 443),)))
    rec = r["ext.ns.svc.cluster.local"]
    assert rec.cluster == (ClusterTarget("api.example.com", 443),) and rec.ipv4 == ()
    assert rec.cluster_name == "dns.ext.ns.svc.cluster.local" and rec.kind == "externalname"


@pytest.mark.parametrize(("entry", "expected"), [
    (ServiceEntry("ns", "a", hosts=("a.example",), addresses=("192.0.2.1",), resolution="DNS"),
     {"ipv4": ("192.0.2.1",)}),
    (ServiceEntry("ns", "s", hosts=("s.example",), resolution="STATIC",
                  endpoints=(ServiceEntryEndpoint("192.0.2.7"), ServiceEntryEndpoint("192.0.2.8"))),
     {"ipv4": ("192.0.2.7", "192.0.2.8")}),
    (ServiceEntry("ns", "d", hosts=("d.example",), resolution="DNS",
                  endpoints=(ServiceEntryEndpoint("backend.example"),),
                  ports=(ServicePort("http", 8080),)),
     {"cluster": (ClusterTarget("backend.example", 8080),)}),
    (ServiceEntry("ns", "h", hosts=("h.example",), resolution="DNS"),
     {"cluster": (ClusterTarget("h.example", 80),)}),
    (ServiceEntry("ns", "n", hosts=("n.example",), resolution="NONE"), None),
    (ServiceEntry("ns", "w", hosts=("*.w.example",), resolution="DNS"), None),
    (ServiceEntry("ns", "wa", hosts=("*.wa.example",), addresses=("192.0.2.9",)),
     {"ipv4": ("192.0.2.9",)}),
])
def test_service_entry_modes(entry: ServiceEntry, expected: dict[str, object] | None) -> None:
    r = recs(entry, aaaa_mapped=False)
    host = entry.hosts[0]
    if expected is None:
        assert host not in r
    else:
        for attr, value in expected.items():
            assert getattr(r[host], attr) == value


def test_export_to() -> None:
    r = recs(ServiceEntry("ns", "a", hosts=("a.example",), addresses=("192.0.2.1",),
                          export_to=(".", "other")),
             ServiceEntry("ns", "b", hosts=("b.example",), addresses=("192.0.2.2",),
                          export_to=("*",)))
    assert r["a.example"].export_to == frozenset({"ns", "other"})
    assert r["b.example"].export_to is None


def test_caps_mapped_aaaa_and_ttl() -> None:
    many = tuple(f"192.0.2.{i}" for i in range(20, 0, -1))
    r = recs(ServiceEntry("ns", "m", hosts=("many.example",), addresses=many),
             Service("ns", "web", cluster_ips=("10.0.0.1",)),
             ttl={"service": 45, "serviceentry": 60})
    m = r["many.example"]
    assert m.ipv4 == tuple(f"192.0.2.{i}" for i in range(1, 9)) and m.truncated == 12
    assert m.ipv6 == tuple(f"::ffff:192.0.2.{i}" for i in range(1, 9)) and m.mapped
    assert (m.ttl, r["web.ns.svc.cluster.local"].ttl) == (60, 45)
    off = recs(Service("ns", "web", cluster_ips=("10.0.0.1",)), aaaa_mapped=False)
    assert off["web.ns.svc.cluster.local"].ipv6 == ()
    dual = recs(Service("ns", "web", cluster_ips=("10.0.0.1", "fd00::1")))
    assert dual["web.ns.svc.cluster.local"].ipv6 == ("fd00::1",)  # real v6: no mapping


def _entries(n: int, extra: tuple[object, ...] = ()) -> Inventory:
    return Inventory.of([ServiceEntry("ns", f"e{i}", hosts=(f"h{i}.example",))
                         for i in range(n)] + list(extra))  # type: ignore[arg-type]


def test_vips_are_unique_stable_and_avoid_declared_addresses() -> None:
    a = allocate(_entries(50), "240.240.0.0/16")
    assert len(set(a.vips.values())) == 50 and a.errors == ()
    assert allocate(_entries(50), "240.240.0.0/16") == a  # same input, same VIPs
    # Adding entries keeps the existing ones where they were (no collisions here).
    bigger = allocate(_entries(60), "240.240.0.0/16")
    assert {k: v for k, v in bigger.vips.items() if k in a.vips} == a.vips
    taken = a.vips[("ns", "e0", "h0.example")]
    declared = ServiceEntry("other", "d", hosts=("d.example",), addresses=(taken,))
    moved = allocate(_entries(50, (declared,)), "240.240.0.0/16")
    assert taken not in moved.vips.values()


def test_vip_exhaustion_is_an_error() -> None:
    a = allocate(_entries(5), "240.240.0.0/30")  # two usable addresses
    assert len(a.vips) == 2 and len(a.errors) == 3
    assert all("no free address left in 240.240.0.0/30" in e for e in a.errors)


def test_vip_collisions_are_resolved_deterministically() -> None:
    a = allocate(_entries(200), "240.240.0.0/24")  # 254 slots: many probe collisions
    assert len(set(a.vips.values())) == 200
    assert allocate(_entries(200), "240.240.0.0/24") == a


def test_vips_become_answers() -> None:
    inv = _entries(1)
    vips = allocate(inv, "240.240.0.0/16").vips
    r = {x.name: x for x in cluster_records(inv, options=RecordOptions(vips=vips))}
    assert r["h0.example"].ipv4 == (vips[("ns", "e0", "h0.example")],)


def test_incremental_records_bulk_then_single_changes_match_a_full_rebuild() -> None:
    import dataclasses

    from controlplane.dns.incremental_records import IncrementalRecords

    services = {("ns", f"s{i}"): Service("ns", f"s{i}", cluster_ips=(f"10.1.{i // 250}.{i % 250 + 1}",))
                for i in range(600)}
    inv = Inventory(services=services)
    inc = IncrementalRecords()
    changed = inc.update(inv, RecordOptions())  # a bulk load
    assert len(changed) == 600 and inc.sorted_records() == cluster_records(inv)
    for step in range(5):
        services = dict(services)
        services[("ns", f"s{step}")] = dataclasses.replace(services[("ns", f"s{step}")],
                                                           cluster_ips=("10.200.0.1",))
        del services[("ns", f"s{100 + step}")]
        services[("ns", f"a{step}")] = Service("ns", f"a{step}", cluster_ips=("10.201.0.1",))
        inv = Inventory(services=services)
        assert len(inc.update(inv, RecordOptions())) == 3
        assert inc.sorted_records() == cluster_records(inv)


# -- Pod records: a-b-c-d.<ns>.pod.<zone> (CoreDNS "pods verified") -------------------------

def test_pod_records_ipv4_ipv6_and_mapped_aaaa() -> None:
    r = recs(Pod("acme", "web-0", ips=("10.1.2.3", "fd00::1")),
             Pod("acme", "pending"),  # no IP yet: no record
             ttl={"pod": 45})
    v4 = r["10-1-2-3.acme.pod.cluster.local"]
    assert (v4.ipv4, v4.ipv6, v4.mapped) == (("10.1.2.3",), ("::ffff:10.1.2.3",), True)
    assert (v4.kind, v4.ttl, v4.sources, v4.namespace_scope) == (
        "pod", 45, ("Pod acme/web-0",), "acme")
    v6 = r["fd00--1.acme.pod.cluster.local"]  # CoreDNS dashes the IPv6 text
    assert (v6.ipv4, v6.ipv6, v6.mapped, v6.namespace_scope) == ((), ("fd00::1",), False, "acme")
    assert sorted(r) == ["10-1-2-3.acme.pod.cluster.local", "fd00--1.acme.pod.cluster.local"]
    off = recs(Pod("acme", "web-0", ips=("10.1.2.3",)), aaaa_mapped=False, zone="corp.local")
    assert off["10-1-2-3.acme.pod.corp.local"].ipv6 == ()
    # Other kinds stay unscoped.
    assert recs(Service("acme", "web", cluster_ips=("10.0.0.1",))
                )["web.acme.svc.cluster.local"].namespace_scope is None


def test_pod_ipv6_names_that_would_not_be_valid_labels_are_skipped() -> None:
    r = recs(Pod("acme", "p", ips=("::5", "fd00::", "fd00:0:0:1::a")))
    assert sorted(r) == ["fd00-0-0-1--a.acme.pod.cluster.local"]


def test_pods_sharing_an_ip_share_the_name() -> None:
    """hostNetwork pods all have the node's IP: one name, every pod as a source."""
    r = recs(Pod("kube-system", "a", ips=("172.18.0.2",)),
             Pod("kube-system", "b", ips=("172.18.0.2",)),
             Pod("other", "c", ips=("172.18.0.2",)))
    rec = r["172-18-0-2.kube-system.pod.cluster.local"]
    assert rec.sources == ("Pod kube-system/a", "Pod kube-system/b")
    assert rec.ipv4 == ("172.18.0.2",) and rec.namespace_scope == "kube-system"
    assert r["172-18-0-2.other.pod.cluster.local"].namespace_scope == "other"


def test_a_name_a_pod_speaks_for_stays_scoped() -> None:
    """A ServiceEntry cannot widen who sees a pod's name (fail closed)."""
    r = recs(Pod("acme", "p", ips=("10.1.2.3",)),
             ServiceEntry("evil", "e", hosts=("10-1-2-3.acme.pod.cluster.local",),
                          addresses=("192.0.2.1",)))
    rec = r["10-1-2-3.acme.pod.cluster.local"]
    assert rec.namespace_scope == "acme" and rec.kind == "pod"
    assert rec.ipv4 == ("10.1.2.3", "192.0.2.1")


def _pod_doc(status: object, name: str = "p") -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "acme"}, "status": status}


@pytest.mark.parametrize(("status", "names"), [
    ({"podIP": "10.1.2.3"}, ["10-1-2-3.acme.pod.cluster.local"]),
    ({"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "FD00::1"}]},
     ["10-1-2-3.acme.pod.cluster.local", "fd00--1.acme.pod.cluster.local"]),
    ({"phase": "Running", "podIP": "10.1.2.3"}, ["10-1-2-3.acme.pod.cluster.local"]),
    ({"phase": "Pending"}, []),
    ({"phase": "Succeeded", "podIP": "10.1.2.3"}, []),  # finished: its IP may be reused
    ({"phase": "Failed", "podIPs": [{"ip": "10.1.2.3"}]}, []),
    (None, []),
])
def test_pod_manifests_to_records(status: object, names: list[str]) -> None:
    pod = parse_object(_pod_doc(status))
    assert isinstance(pod, Pod)
    assert sorted(recs(pod)) == names


@pytest.mark.parametrize(("status", "reason"), [
    ({"podIP": "10.1.2"}, "status.podIP '10.1.2' is not an IP address"),
    ({"podIPs": [{"ip": "10.1.2.3"}, {"ip": "nope"}]},
     "status.podIPs[1].ip 'nope' is not an IP address"),
    ({"podIPs": ["10.1.2.3"]}, "status.podIPs[0] must be a mapping, not str"),
    ({"podIPs": [{}]}, "status.podIPs[0].ip is required"),
    ({"podIPs": "10.1.2.3"}, "status.podIPs must be a list, not str"),
    ({"phase": 3}, "status.phase must be a string, not int"),
])
def test_pod_manifest_errors_name_the_object(status: object, reason: str) -> None:
    err = parse_object(_pod_doc(status, name="web-0"), origin="pods.yaml")
    assert not isinstance(err, Pod)
    assert str(err) == f"Pod acme/web-0 (pods.yaml): {reason}"


def test_pod_ttl_kind_is_configurable() -> None:
    assert "pod" in KINDS
    assert DnsSettings(ttl_by_kind={"pod": 60}).ttls()["pod"] == 60
    assert DnsSettings(answer_ttl_seconds=40).ttls()["pod"] == 40


def test_pod_records_only_in_views_of_tenants_selecting_the_namespace() -> None:
    from controlplane.dns.views import build_tenant_view

    inv = Inventory.of([
        Namespace("acme", (("tenant", "acme"),)), Namespace("globex", (("tenant", "globex"),)),
        Pod("acme", "a", ips=("10.1.0.1",)), Pod("globex", "g", ips=("10.2.0.1",)),
        Service("globex", "web", cluster_ips=("10.96.0.1",)),
    ])
    records = cluster_records(inv)

    def names(**kw: object) -> set[str]:
        policy = DnsPolicy(name="acme", namespace_selector=LabelSelector(
            match_labels=(("tenant", "acme"),)), **kw)  # type: ignore[arg-type]
        view, _ = build_tenant_view(policy, records, inv, DnsSettings())
        return {e.record.name for e in view.entries}

    assert names() == {"10-1-0-1.acme.pod.cluster.local", "web.globex.svc.cluster.local"}
    # Policies apply on top, as for any name.
    assert names(blacklist=("*.pod.cluster.local",)) == {"web.globex.svc.cluster.local"}
    assert names(whitelist=("*.acme.pod.cluster.local",), default_action=DefaultAction.DENY
                 ) == {"10-1-0-1.acme.pod.cluster.local"}
    assert names(whitelist=("*.pod.cluster.local",), default_action=DefaultAction.DENY
                 ) == {"10-1-0-1.acme.pod.cluster.local"}  # never globex's pod


def _incremental_matches(inc: object, inv: Inventory) -> bool:
    from controlplane.dns.incremental_records import IncrementalRecords
    from controlplane.dns.record_index import RecordIndex

    assert isinstance(inc, IncrementalRecords)
    full = cluster_records(inv)
    index = RecordIndex.of(full)
    return (inc.sorted_records() == full and inc.records == index.by_name
            and inc.by_suffix == index.by_suffix and inc.wildcards == index.wildcards)


def test_incremental_pod_changes_update_exactly_their_records() -> None:
    import dataclasses

    from controlplane.dns.incremental_records import IncrementalRecords

    pods = {("acme", f"p{i}"): Pod("acme", f"p{i}", ips=(f"10.1.0.{i + 1}",))
            for i in range(100)}
    services = {("acme", "web"): Service("acme", "web", cluster_ips=("10.96.0.1",))}
    inc = IncrementalRecords()
    inv = Inventory(services=services, pods=pods)
    assert len(inc.update(inv, RecordOptions())) == 101 and _incremental_matches(inc, inv)

    def step(**changes: Pod | None) -> set[str]:
        nonlocal pods, inv
        pods = dict(pods)
        for name, pod in changes.items():
            if pod is None:
                del pods[("acme", name)]
            else:
                pods[("acme", name)] = pod
        inv = Inventory(services=services, pods=pods)
        out = inc.update(inv, RecordOptions())
        assert _incremental_matches(inc, inv)
        return out

    z = "acme.pod.cluster.local"
    # Add, then a new IP (the old name goes, the new one comes), dual stack, delete.
    assert step(new=Pod("acme", "new", ips=("10.9.0.1",))) == {f"10-9-0-1.{z}"}
    assert step(p1=Pod("acme", "p1", ips=("10.9.0.2",))) == {f"10-1-0-2.{z}", f"10-9-0-2.{z}"}
    assert step(p2=Pod("acme", "p2", ips=("10.1.0.3", "fd00::3"))) == {f"fd00--3.{z}"}
    assert step(p3=None) == {f"10-1-0-4.{z}"}
    # A pod that finished (parsed with no IPs) loses its records.
    assert step(p4=Pod("acme", "p4")) == {f"10-1-0-5.{z}"}
    # The same pod re-read (status churn, an equal object) or relabelled: nothing changes.
    assert step(p5=dataclasses.replace(pods[("acme", "p5")])) == set()
    assert step(p5=dataclasses.replace(pods[("acme", "p5")], labels=(("a", "b"),))) == set()
    # A second pod taking an IP another holds shares the name: only its sources change.
    assert step(twin=Pod("acme", "twin", ips=("10.1.0.7",))) == {f"10-1-0-7.{z}"}
    assert inc.records[f"10-1-0-7.{z}"].sources == ("Pod acme/p6", "Pod acme/twin")
    assert step(twin=None) == {f"10-1-0-7.{z}"}
    assert inc.records[f"10-1-0-7.{z}"].sources == ("Pod acme/p6",)


def test_incremental_with_pods_matches_a_full_rebuild_under_random_changes() -> None:
    import random

    from controlplane.dns.incremental_records import IncrementalRecords

    rng = random.Random(7)
    namespaces = ("a", "b")
    pods: dict[tuple[str, str], Pod] = {}
    services: dict[tuple[str, str], Service] = {}
    entries: dict[tuple[str, str], ServiceEntry] = {}
    inc = IncrementalRecords()
    for _ in range(300):
        ns = rng.choice(namespaces)
        n = f"x{rng.randrange(30)}"
        ip = f"10.0.{rng.randrange(3)}.{rng.randrange(1, 6)}"
        what = rng.randrange(6)
        if what == 0:
            pods.pop((ns, n), None)
        elif what <= 2:
            ips = rng.choice([(ip,), (ip, f"fd00::{rng.randrange(1, 5)}"), ()])
            pods[(ns, n)] = Pod(ns, n, ips=ips)
        elif what == 3:
            services[(ns, n)] = Service(ns, n, cluster_ips=(ip,))
        elif what == 4:
            services.pop((ns, n), None)
        else:  # a ServiceEntry colliding with pod names now and then
            entries[(ns, n)] = ServiceEntry(ns, n, hosts=(
                f"{ip.replace('.', '-')}.{rng.choice(namespaces)}.pod.cluster.local",),
                addresses=("192.0.2.1",))
        inv = Inventory(services=dict(services), pods=dict(pods), service_entries=dict(entries))
        inc.update(inv, RecordOptions())
        assert _incremental_matches(inc, inv)


_ADDRESSES = ("10.0.0.1", "192.168.100.200", "0.0.0.0", "fd00::1", "::ffff:10.0.0.1",
              "010.0.0.1", "10.0.0", "", "FD00::1")


@settings(max_examples=400, deadline=None)
@given(addresses=st.lists(st.sampled_from(_ADDRESSES), max_size=3).map(tuple),
       one=st.booleans(),
       srv=st.lists(st.builds(SrvRecord, service=st.sampled_from(("http", "grpc")),
                              protocol=st.sampled_from(("tcp", "udp")),
                              port=st.sampled_from((80, 443, 9090)),
                              target=st.sampled_from(("a.ns.svc.cluster.local", "b"))),
                    max_size=3).map(tuple),
       cluster=st.sampled_from(((), (ClusterTarget("x.example", 80),))),
       kind=st.sampled_from(("service", "headless", "pod", "serviceentry")),
       export_to=st.sampled_from((None, frozenset({"ns"}))),
       scope=st.sampled_from((None, "ns")),
       mapped=st.booleans(), cap=st.integers(0, 2),
       ttl=st.sampled_from(({}, {"service": 5, "pod": 7})))
def test_a_single_source_record_is_what_the_full_steps_make(
        addresses: tuple[str, ...], one: bool, srv: tuple[SrvRecord, ...],
        cluster: tuple[ClusterTarget, ...], kind: str, export_to: frozenset[str] | None,
        scope: str | None, mapped: bool, cap: int, ttl: dict[str, int]) -> None:
    """``single_record``'s short path (one IPv4 address) against ``_record``'s steps."""
    addresses = addresses[:1] if one else addresses
    options = RecordOptions(ttl=ttl, max_answers=cap, aaaa_mapped=mapped)
    contribution = ("a.ns.svc.cluster.local", "Service ns/a", kind, addresses, srv, cluster,
                    export_to, scope)
    expected = _record("a.ns.svc.cluster.local", ("Service ns/a",), kind=kind,
                       addresses=addresses, srv=srv, cluster=cluster, export_to=export_to,
                       scope=scope, options=options)
    got = single_record(contribution, options)
    assert got == expected
    if got is not None and expected is not None:
        assert [getattr(got, f) for f in got.__slots__] == [  # type: ignore[attr-defined]
            getattr(expected, f) for f in expected.__slots__]  # type: ignore[attr-defined]
