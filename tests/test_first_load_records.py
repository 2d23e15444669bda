"""A first load of ``IncrementalRecords`` (its own path: every Service at once, no record
to compare with, one sort: ``_first_services``, ``_first_rebuild``) gives what
``cluster_records`` gives, for clusters where names have several sources (a ServiceEntry
host on a Service's or a pod's name, pods sharing an IP, headless endpoints, ExternalName),
and leaves a state the next changes build on."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.core.inventory import Inventory
from controlplane.core.model import (
    Endpoint,
    EndpointSlice,
    Pod,
    Service,
    ServiceEntry,
    ServicePort,
)
from controlplane.core.names import Pattern
from controlplane.dns.incremental_records import IncrementalRecords
from controlplane.dns.record_index import RecordIndex
from controlplane.dns.records import RecordOptions, cluster_records

NAMESPACES = ("a", "b")
NAMES = ("x0", "x1", "x2")
IPS = ("10.0.0.1", "10.0.0.2", "10.0.1.1", "fd00::1")
# Hosts a ServiceEntry may claim: a Service's name, a pod's name, its own.
HOSTS = ("x0.a.svc.cluster.local", "x1.b.svc.cluster.local", "10-0-0-1.a.pod.cluster.local",
         "api.partner.example", "*.partner.example", "h0.x2.a.svc.cluster.local")
ports = st.lists(st.builds(ServicePort, name=st.sampled_from(("", "http", "grpc")),
                           port=st.sampled_from((80, 9090)),
                           protocol=st.sampled_from(("TCP", "UDP", "SCTP"))),
                 max_size=2).map(tuple)


@st.composite
def clusters(draw: st.DrawFn) -> Inventory:
    objects: list[object] = []
    for ns in NAMESPACES:
        for name in NAMES:
            kind = draw(st.sampled_from(("none", "clusterip", "clusterip", "headless",
                                         "externalname")))
            if kind == "clusterip":
                objects.append(Service(ns, name, cluster_ips=tuple(draw(st.lists(
                    st.sampled_from(IPS), max_size=2, unique=True))), ports=draw(ports)))
            elif kind == "externalname":
                objects.append(Service(ns, name, type="ExternalName",
                                       external_name="db.example.com", ports=draw(ports)))
            elif kind == "headless":
                objects.append(Service(ns, name, headless=True, ports=draw(ports),
                                       publish_not_ready=draw(st.booleans())))
                objects.append(EndpointSlice(ns, f"{name}-1", name, endpoints=tuple(
                    Endpoint((draw(st.sampled_from(IPS)),), ready=draw(st.booleans()),
                             hostname=draw(st.sampled_from(("", "h0", "h1"))))
                    for _ in range(draw(st.integers(0, 3))))))
        for i in range(draw(st.integers(0, 3))):
            objects.append(Pod(ns, f"p{i}", ips=tuple(draw(st.lists(
                st.sampled_from(IPS), max_size=2, unique=True)))))
        for i in range(draw(st.integers(0, 2))):
            objects.append(ServiceEntry(ns, f"se{i}", hosts=tuple(draw(st.lists(
                st.sampled_from(HOSTS), min_size=1, max_size=2, unique=True))),
                addresses=tuple(draw(st.lists(st.sampled_from(IPS), max_size=2,
                                              unique=True)))))
    return Inventory.of(objects)  # type: ignore[arg-type]


def _check(inc: IncrementalRecords, inv: Inventory, opts: RecordOptions) -> list[str]:
    full = cluster_records(inv, options=opts)
    assert inc.sorted_records() == full
    assert inc.records == {r.name: r for r in full}
    live = RecordIndex(inc.records, inc.by_suffix, inc.wildcards)
    fresh = RecordIndex.of(full)
    for suffix in ("a.svc.cluster.local", "svc.cluster.local", "a.pod.cluster.local",
                   "partner.example", "cluster.local"):
        pattern = [Pattern("*." + suffix)]
        assert ({r.name for r in live.candidates(pattern)}
                == {r.name for r in fresh.candidates(pattern)}), suffix
    return [r.name for r in full]


def _keys(inv: Inventory) -> set[tuple[str, str, str]]:
    return ({("Service", *k) for k in inv.services}
            | {("EndpointSlice", *k) for k in inv.endpoint_slices}
            | {("Pod", *k) for k in inv.pods}
            | {("ServiceEntry", *k) for k in inv.service_entries})


@settings(max_examples=300, deadline=None)
@given(inv=clusters(), nxt=clusters(), mapped=st.booleans(), cap=st.sampled_from((1, 8)),
       by_keys=st.booleans())
def test_a_first_load_is_the_full_rebuild_and_the_next_change_builds_on_it(
        inv: Inventory, nxt: Inventory, mapped: bool, cap: int, by_keys: bool) -> None:
    """``by_keys``: loaded as the hub loads it, every key changed after an empty start;
    else by walking the inventory (``update``)."""
    opts = RecordOptions(aaaa_mapped=mapped, max_answers=cap)
    inc = IncrementalRecords()
    if by_keys:
        assert inc.apply(Inventory(), (), opts) == set()
        changed = inc.apply(inv, _keys(inv) | {("Service", "gone", "x")}, opts)
    else:
        changed = inc.update(inv, opts)
    names = _check(inc, inv, opts)
    assert changed == set(names)  # every name with a record is new
    # By changed keys, as the hub applies them: the next inventory keeps the objects it
    # shares with this one (the store's identity), and changes the rest.
    kept = {**{k: o for k, o in inv.services.items() if nxt.services.get(k) == o},
            **{k: o for k, o in nxt.services.items() if inv.services.get(k) != o}}
    step = dataclasses.replace(nxt, services=kept)
    keys = {("Service", *k) for k in inv.services.keys() | kept.keys()
            if inv.services.get(k) is not kept.get(k)}
    keys |= {k for k in _keys(inv) | _keys(step) if k[0] != "Service"}
    inc.apply(step, keys, opts)
    _check(inc, step, opts)


def test_a_first_load_of_many_services_sorts_them_once() -> None:
    services = [Service("ns", f"s{i:03}", cluster_ips=(f"10.1.{i // 250}.{i % 250 + 1}",))
                for i in range(300)]
    inv = Inventory.of([*reversed(services),  # the map's order is not the names' order
                        ServiceEntry("ns", "dup", hosts=("s007.ns.svc.cluster.local",),
                                     addresses=("192.0.2.7",))])
    inc = IncrementalRecords()
    assert len(inc.update(inv, RecordOptions())) == 300
    _check(inc, inv, RecordOptions())
    assert inc.records["s007.ns.svc.cluster.local"].sources == ("Service ns/s007",
                                                               "ServiceEntry ns/dup")


def test_a_first_load_by_keys_applies_those_keys_only() -> None:
    """As before the first-load path: the Services of the keys given, no others."""
    inv = Inventory.of([Service("ns", "a", cluster_ips=("10.0.0.1",)),
                        Service("ns", "b", cluster_ips=("10.0.0.2",))])
    inc = IncrementalRecords()
    inc.apply(Inventory(), (), RecordOptions())
    assert inc.apply(inv, {("Service", "ns", "a")}, RecordOptions()) == {
        "a.ns.svc.cluster.local"}
    assert [r.name for r in inc.sorted_records()] == ["a.ns.svc.cluster.local"]
