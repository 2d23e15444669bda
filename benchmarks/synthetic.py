"""A synthetic cluster: N services over M namespaces, T tenants with policies,
K ServiceEntries, H headless services with endpoints; optionally W wide tenants
(``defaultAction: ALLOW``: every Service of the cluster is in their views)."""

from __future__ import annotations

from controlplane.core.inventory import Inventory
from controlplane.core.model import (
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
            headless: int = 50, endpoints: int = 10, wide: int = 0, own: int = 0) -> Inventory:
    """``wide``: that many ALLOW tenants ``wide0``.., each selecting its own namespace
    ``wide<w>`` and seeing every Service; the last ``own`` of the ``services`` are in
    ``wide0`` (its own namespace: what a fronted sidecar's Envoy keeps, section 17)
    instead of ``ns<i % namespaces>``. ``wide=0`` is the cluster as it always was."""
    objects: list[object] = []
    for n in range(namespaces):
        objects.append(Namespace(f"ns{n}", (("tenant", f"t{n % tenants}"),)))
    for w in range(wide):
        objects.append(Namespace(f"wide{w}", (("tenant", f"wide{w}"),)))
        objects.append(DnsPolicy(
            name=f"wide{w}", namespace_selector=LabelSelector(match_labels=(("tenant", f"wide{w}"),)),
            whitelist=(f"*.wide{w}.svc.cluster.local",), default_action=DefaultAction.ALLOW))
    for i in range(services):
        ns = "wide0" if wide and i >= services - own else f"ns{i % namespaces}"
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


def base_manifests(*, namespaces: int = 100, tenants: int = 100, entries: int = 100,
                   headless: int = 50, endpoints: int = 10, widen: bool = False) -> str:
    """The synthetic cluster but its ClusterIP Services, as one YAML stream (the shape
    ``cluster`` builds: namespaces, tenants' DENY policies, ServiceEntries, headless
    Services with their endpoints). ``widen``: every tenant also whitelists the next
    tenant's namespaces (a change of every policy: every view is rebuilt, larger)."""
    docs = []
    for n in range(namespaces):
        docs.append(f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{n}, labels: "
                    f"{{tenant: t{n % tenants}}}}}\n")
    for h in range(headless):
        ns = f"ns{h % namespaces}"
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: hl{h}, namespace: {ns}}}\n"
                    "spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}\n")
        eps = ", ".join(f'{{addresses: ["10.200.{h % 250}.{e + 1}"], hostname: hl{h}-{e}, '
                        f"conditions: {{ready: true}}}}" for e in range(endpoints))
        docs.append("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: "
                    f"{{name: hl{h}-1, namespace: {ns}, labels: "
                    f"{{kubernetes.io/service-name: hl{h}}}}}\naddressType: IPv4\n"
                    f"endpoints: [{eps}]\n")
    for k in range(entries):
        docs.append("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: "
                    f"{{name: se{k}, namespace: ns{k % namespaces}}}\nspec: {{hosts: "
                    f"[api{k}.partner.example], addresses: [192.0.{k // 250 % 250}.{k % 250 + 1}],"
                    " resolution: STATIC}\n")
    for t in range(tenants):
        white = [f'"*.ns{n}.svc.cluster.local"' for n in range(namespaces)
                 if n % tenants == t or (widen and n % tenants == (t + 1) % tenants)]
        white.append('"*.partner.example"')
        docs.append("apiVersion: networking.example.com/v1alpha1\nkind: DnsPolicy\nmetadata: "
                    f"{{name: t{t}}}\nspec:\n  namespaceSelector: {{matchLabels: {{tenant: t{t}}}}}\n"
                    f"  policy: {{whitelist: [{', '.join(white)}], defaultAction: DENY}}\n")
    return "---\n".join(docs)


def service_manifest(i: int, *, namespaces: int = 100, ip: str = "") -> str:
    """ClusterIP Service number ``i`` of the synthetic cluster, as YAML."""
    a, b = divmod(i, 250)
    ip = ip or f"10.{96 + a // 250}.{a % 250}.{b + 1}"
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: "
            f"ns{i % namespaces}}}\nspec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}, "
            "{name: grpc, port: 9090}]}\n")


def services_manifests(services: int, *, namespaces: int = 100, first: int = 0) -> str:
    return "---\n".join(service_manifest(i, namespaces=namespaces)
                        for i in range(first, first + services))


def service_object(i: int, *, namespaces: int = 100, ip: str = "") -> dict[str, object]:
    """The same Service as a Kubernetes API object (for the fake API server)."""
    a, b = divmod(i, 250)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": f"ns{i % namespaces}"},
            "spec": {"clusterIP": ip or f"10.{96 + a // 250}.{a % 250}.{b + 1}",
                     "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}]}}
