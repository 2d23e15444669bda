"""A synthetic cluster: N services over M namespaces, T tenants with policies,
K ServiceEntries, H headless services with endpoints."""

from __future__ import annotations

from controlplane.inventory import Inventory
from controlplane.model import (
    DefaultAction,
    DnsPolicy,
    Endpoint,
    EndpointSlice,
    LabelSelector,
    Namespace,
    Service,
    ServiceEntry,
    ServicePort,
)


def cluster(services: int, *, namespaces: int = 100, tenants: int = 100, entries: int = 100,
            headless: int = 50, endpoints: int = 10) -> Inventory:
    objects: list[object] = []
    for n in range(namespaces):
        objects.append(Namespace(f"ns{n}", (("tenant", f"t{n % tenants}"),)))
    for i in range(services):
        ns = f"ns{i % namespaces}"
        a, b = divmod(i, 250)
        objects.append(Service(ns, f"svc{i}", cluster_ips=(f"10.{96 + a // 250}.{a % 250}.{b + 1}",),
                               ports=(ServicePort("http", 80), ServicePort("grpc", 9090))))
    for h in range(headless):
        ns = f"ns{h % namespaces}"
        objects.append(Service(ns, f"hl{h}", headless=True, ports=(ServicePort("pg", 5432),)))
        objects.append(EndpointSlice(ns, f"hl{h}-1", f"hl{h}", endpoints=tuple(
            Endpoint((f"10.200.{h % 250}.{e + 1}",), ready=True, hostname=f"hl{h}-{e}")
            for e in range(endpoints))))
    for k in range(entries):
        objects.append(ServiceEntry(f"ns{k % namespaces}", f"se{k}", hosts=(f"api{k}.partner.example",),
                                    addresses=(f"192.0.{k // 250 % 250}.{k % 250 + 1}",)))
    for t in range(tenants):
        objects.append(DnsPolicy(
            name=f"t{t}", namespace_selector=LabelSelector(match_labels=(("tenant", f"t{t}"),)),
            whitelist=tuple(f"*.ns{n}.svc.cluster.local" for n in range(namespaces)
                            if n % tenants == t) + ("*.partner.example",),
            default_action=DefaultAction.DENY))
    return Inventory.of(objects)  # type: ignore[arg-type]
