"""Frozen model objects: what the sources produce and everything else reads.

Objects are validated on the way in (see ``manifests.py``); once built they are
immutable and hashable, so views can be compared and cached cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

Labels = tuple[tuple[str, str], ...]

# The kinds of names the cluster answers (each has its own TTL setting).
KINDS = ("service", "headless", "externalname", "serviceentry", "pod")


def labels_of(mapping: Mapping[str, str] | None) -> Labels:
    return tuple(sorted((mapping or {}).items()))


class DefaultAction(StrEnum):
    ALLOW = "ALLOW"
    DENY = "DENY"
    WARN = "WARN"


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A Kubernetes label selector; the empty selector matches everything."""

    match_labels: Labels = ()
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for key, value in self.match_labels:
            if labels.get(key) != value:
                return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and not (present and labels[req.key] in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels]
        for r in self.match_expressions:
            vals = ",".join(r.values)
            parts.append(f"{r.key} {r.operator} ({vals})" if vals else f"{r.operator} {r.key}")
        return ",".join(parts) or "<all>"


@dataclass(frozen=True, slots=True)
class Namespace:
    name: str
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class ServicePort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True, slots=True)
class Service:
    namespace: str
    name: str
    type: str = "ClusterIP"
    cluster_ips: tuple[str, ...] = ()  # empty for headless and ExternalName
    ports: tuple[ServicePort, ...] = ()
    headless: bool = False
    external_name: str = ""
    publish_not_ready: bool = False
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    ready: bool = True
    hostname: str = ""


@dataclass(frozen=True, slots=True)
class EndpointSlice:
    namespace: str
    name: str
    service_name: str
    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[ServicePort, ...] = ()


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    name: str
    labels: Labels = ()
    ips: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceEntryEndpoint:
    address: str
    ports: tuple[tuple[str, int], ...] = ()
    labels: Labels = ()


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    namespace: str
    name: str
    hosts: tuple[str, ...]
    addresses: tuple[str, ...] = ()
    endpoints: tuple[ServiceEntryEndpoint, ...] = ()
    resolution: str = "NONE"  # NONE, STATIC, DNS, DNS_ROUND_ROBIN
    location: str = "MESH_EXTERNAL"
    ports: tuple[ServicePort, ...] = ()
    export_to: tuple[str, ...] = ()
    api_version: str = "networking.istio.io/v1"


class FailureMode(StrEnum):
    """What a name gets when the policy server cannot decide (unreachable, slow, garbage)."""

    CLOSED = "closed"  # denied
    OPEN = "open"  # allowed


@dataclass(frozen=True, slots=True)
class PolicyServer:
    """An external policy server (Envoy's ext_authz Check API) that decides per name."""

    address: str  # IP[:port] or a name (a Service, a ServiceEntry host) [:port]; port 9191
    protocol: str = "grpc"
    failure_mode: FailureMode | None = None  # None: closed under DENY, open otherwise
    timeout_ms: int = 200  # the longest a query waits for a decision
    decision_ttl_seconds: int = 60  # when the answer gives no lifetime
    server_name: str = ""  # TLS: the name its certificate must carry
    ca_bundle: str = ""  # TLS: PEM; TLS is on when either is set

    @property
    def tls(self) -> bool:
        return bool(self.server_name or self.ca_bundle)


@dataclass(frozen=True, slots=True)
class DnsPolicy:
    """A tenant's DNS policy. Cluster-scoped: the policy's name is the tenant."""

    name: str
    namespace_selector: LabelSelector
    selector: LabelSelector | None = None
    server_address: str = ""
    whitelist: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    default_action: DefaultAction = DefaultAction.ALLOW
    default_action_given: bool = False
    policy_server: PolicyServer | None = None
    upgrade: bool = False
    upgrade_type: str = ""  # "dns-over-tls" or "dns-over-https" when upgrade is set
    tls_server_name: str = ""  # the name the server's certificate must carry
    tls_ca_bundle: str = ""  # PEM; "" means the control plane's --upstream-ca-bundle
    doh_path: str = ""  # "" means /dns-query
    generation: int = 0

    @property
    def tenant(self) -> str:
        return self.name


@dataclass(frozen=True, slots=True)
class Workload:
    """Who a connecting Envoy speaks for, from its node metadata."""

    node_id: str
    namespace: str = ""
    labels: Labels = ()
    dns_listen_host: str = "127.0.0.1"
    dns_listen_port: int = 15053
    stats_listen_host: str = "0.0.0.0"
    stats_listen_port: int = 15090  # 0: no stats listener
    hop_listen_host: str = "127.0.0.1"  # the local TCP listener to the tenant resolver (TLS hop)
    hop_listen_port: int = 15054
    # The DNS front's set listener (DNS_FRONT_SET_ADDRESS); port 0: the node is not fronted.
    front_set_host: str = ""
    front_set_port: int = 0
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


ModelObject = Namespace | Service | EndpointSlice | Pod | ServiceEntry | DnsPolicy


def object_key(obj: ModelObject) -> tuple[str, str, str]:
    """(kind, namespace, name): the identity of an object across updates."""
    kind = type(obj).__name__
    if isinstance(obj, Namespace | DnsPolicy):
        return (kind, "", obj.name)
    return (kind, obj.namespace, obj.name)
