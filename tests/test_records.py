"""Cluster records: every kind of name, caps, mapped AAAA, TTLs, and VIP allocation."""

from __future__ import annotations

import pytest

from controlplane.inventory import Inventory
from controlplane.model import (
    Endpoint,
    EndpointSlice,
    Service,
    ServiceEntry,
    ServiceEntryEndpoint,
    ServicePort,
)
from controlplane.records import ClusterTarget, NameRecord, RecordOptions, cluster_records
from controlplane.vips import allocate


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

    from controlplane.incremental_records import IncrementalRecords

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
