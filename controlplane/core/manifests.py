"""Kubernetes-style manifests (dicts) -> validated model objects.

``parse_object`` never raises for bad input: it returns an ``InputError`` that
names the object and the reason. Unknown kinds return ``Ignored``. Both the
file source and the Kubernetes source use this one parser, so the rules are
the same whatever the objects come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.core.errors import BadAddress, BadPattern, InputError, InvalidField
from controlplane.core.model import (
    DefaultAction,
    DnsPolicy,
    Endpoint,
    EndpointSlice,
    FailureMode,
    LabelSelector,
    ModelObject,
    Namespace,
    Pod,
    PolicyServer,
    Requirement,
    Service,
    ServiceEntry,
    ServiceEntryEndpoint,
    ServicePort,
    labels_of,
)
from controlplane.core.names import (
    name_problem,
    normalise,
    parse_ip,
    parse_pattern,
    strict_host_port,
)

POLICY_GROUP = "networking.example.com"
POLICY_API_VERSIONS = (f"{POLICY_GROUP}/v1alpha1",)
SERVICE_ENTRY_API_VERSIONS = tuple(
    f"networking.istio.io/{v}" for v in ("v1alpha3", "v1beta1", "v1")
) + (f"{POLICY_GROUP}/v1alpha1",)
RESOLUTIONS = ("NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN")
LOCATIONS = ("MESH_EXTERNAL", "MESH_INTERNAL")
SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, slots=True)
class Ignored:
    """A document of a kind this control plane does not use."""

    api_version: str
    kind: str
    name: str


ParseResult = ModelObject | InputError | Ignored


def _map(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidField(f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidField(f"{what} must be a list, not {type(value).__name__}")
    return value


def _str(value: Any, what: str, *, required: bool = False) -> str:
    if value is None or value == "":
        if required:
            raise InvalidField(f"{what} is required")
        return ""
    if not isinstance(value, str):
        raise InvalidField(f"{what} must be a string, not {type(value).__name__}")
    return value


def _int(value: Any, what: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(f"{what} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise InvalidField(f"{what} must be between {low} and {high}, not {value}")
    return value


def _labels(value: Any, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _map(value, what).items():
        if not isinstance(k, str) or isinstance(v, list | dict) or v is None:
            raise InvalidField(f"{what} must map strings to strings; {k!r}: {v!r} is not")
        out[k] = v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _ip(text: Any, what: str) -> str:
    s = _str(text, what, required=True)
    ip = parse_ip(s)
    if ip is None:
        raise InvalidField(f"{what} {s!r} is not an IP address")
    return str(ip)


def _selector(value: Any, what: str) -> LabelSelector:
    m = _map(value, what)
    unknown = set(m) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise InvalidField(f"{what} has unknown fields {sorted(unknown)}")
    reqs = []
    for i, raw in enumerate(_list(m.get("matchExpressions"), f"{what}.matchExpressions")):
        r = _map(raw, f"{what}.matchExpressions[{i}]")
        op = _str(r.get("operator"), f"{what}.matchExpressions[{i}].operator", required=True)
        if op not in SELECTOR_OPERATORS:
            raise InvalidField(f"{what}.matchExpressions[{i}].operator {op!r} is not one of "
                           f"{', '.join(SELECTOR_OPERATORS)}")
        values = tuple(str(v) for v in _list(r.get("values"), f"{what}.matchExpressions[{i}]"))
        if op in ("In", "NotIn") and not values:
            raise InvalidField(f"{what}.matchExpressions[{i}] with {op} needs values")
        key = _str(r.get("key"), f"{what}.matchExpressions[{i}].key", required=True)
        reqs.append(Requirement(key=key, operator=op, values=values))
    return LabelSelector(
        match_labels=labels_of(_labels(m.get("matchLabels"), f"{what}.matchLabels")),
        match_expressions=tuple(reqs),
    )


def _ports(value: Any, what: str) -> tuple[ServicePort, ...]:
    ports = []
    for i, raw in enumerate(_list(value, what)):
        p = _map(raw, f"{what}[{i}]")
        ports.append(ServicePort(
            name=normalise(_str(p.get("name"), f"{what}[{i}].name")),
            port=_int(p.get("port", p.get("number")), f"{what}[{i}].port", low=1, high=65535),
            protocol=(_str(p.get("protocol"), f"{what}[{i}].protocol") or "TCP").upper(),
        ))
    return tuple(ports)


def _namespace(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str) -> Namespace:
    return Namespace(name=name, labels=labels_of(_labels(meta.get("labels"), "metadata.labels")))


def _service(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str, ns: str) -> Service:
    spec = _map(doc.get("spec"), "spec")
    stype = _str(spec.get("type"), "spec.type") or "ClusterIP"
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        raise InvalidField(f"spec.type {stype!r} is not a Service type")
    raw_ips = _list(spec.get("clusterIPs"), "spec.clusterIPs") or (
        [spec["clusterIP"]] if spec.get("clusterIP") else []
    )
    headless = any(str(ip).lower() == "none" for ip in raw_ips)
    ips = () if headless else tuple(_ip(ip, "spec.clusterIP") for ip in raw_ips)
    external = ""
    if stype == "ExternalName":
        external = normalise(_str(spec.get("externalName"), "spec.externalName", required=True))
        if problem := name_problem(external):
            raise InvalidField(f"spec.externalName: {problem}")
    return Service(
        namespace=ns,
        name=name,
        type=stype,
        cluster_ips=ips,
        ports=_ports(spec.get("ports"), "spec.ports"),
        headless=headless,
        external_name=external,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses", False)),
        labels=labels_of(_labels(meta.get("labels"), "metadata.labels")),
    )


def _endpoint_slice(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str,
                    ns: str) -> EndpointSlice:
    labels = _labels(meta.get("labels"), "metadata.labels")
    service = labels.get("kubernetes.io/service-name", "")
    if not service:
        raise InvalidField("metadata.labels has no kubernetes.io/service-name")
    endpoints = []
    for i, raw in enumerate(_list(doc.get("endpoints"), "endpoints")):
        e = _map(raw, f"endpoints[{i}]")
        conditions = _map(e.get("conditions"), f"endpoints[{i}].conditions")
        endpoints.append(Endpoint(
            addresses=tuple(_ip(a, f"endpoints[{i}].addresses") for a in
                            _list(e.get("addresses"), f"endpoints[{i}].addresses")),
            # Kubernetes: a nil "ready" condition means ready.
            ready=conditions.get("ready") is not False,
            hostname=normalise(_str(e.get("hostname"), f"endpoints[{i}].hostname")),
        ))
    return EndpointSlice(
        namespace=ns, name=name, service_name=service,
        address_type=_str(doc.get("addressType"), "addressType") or "IPv4",
        endpoints=tuple(endpoints), ports=_ports(doc.get("ports"), "ports"),
    )


# A pod in these phases has released its IP, which another pod may now hold.
POD_FINISHED_PHASES = ("Succeeded", "Failed")


def _pod(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str, ns: str) -> Pod:
    status = _map(doc.get("status"), "status")
    phase = _str(status.get("phase"), "status.phase")
    ips = [_ip(_map(p, f"status.podIPs[{i}]").get("ip"), f"status.podIPs[{i}].ip")
           for i, p in enumerate(_list(status.get("podIPs"), "status.podIPs"))]
    if not ips and status.get("podIP"):
        ips = [_ip(status["podIP"], "status.podIP")]
    return Pod(namespace=ns, name=name,
               labels=labels_of(_labels(meta.get("labels"), "metadata.labels")),
               ips=() if phase in POD_FINISHED_PHASES else tuple(dict.fromkeys(ips)))


def _service_entry(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str, ns: str,
                   api_version: str) -> ServiceEntry:
    spec = _map(doc.get("spec"), "spec")
    hosts = []
    for i, raw in enumerate(_list(spec.get("hosts"), "spec.hosts")):
        try:
            hosts.append(parse_pattern(raw).text)
        except BadPattern as exc:
            raise InvalidField(f"spec.hosts[{i}]: {exc}") from exc
    if not hosts:
        raise InvalidField("spec.hosts must name at least one host")
    addresses = []
    for i, raw in enumerate(_list(spec.get("addresses"), "spec.addresses")):
        text = _str(raw, f"spec.addresses[{i}]", required=True)
        # Istio allows CIDRs here; a single-address CIDR is one address for DNS.
        if "/" in text:
            base, _, bits = text.partition("/")
            ip = parse_ip(base)
            if ip is None or bits != str(ip.max_prefixlen):
                raise InvalidField(f"spec.addresses[{i}] {text!r}: only single addresses can be "
                               "answered in DNS")
            text = base
        addresses.append(_ip(text, f"spec.addresses[{i}]"))
    resolution = (_str(spec.get("resolution"), "spec.resolution") or "NONE").upper()
    if resolution not in RESOLUTIONS:
        raise InvalidField(f"spec.resolution {resolution!r} is not one of {', '.join(RESOLUTIONS)}")
    location = (_str(spec.get("location"), "spec.location") or "MESH_EXTERNAL").upper()
    if location not in LOCATIONS:
        raise InvalidField(f"spec.location {location!r} is not one of {', '.join(LOCATIONS)}")
    endpoints = []
    for i, raw in enumerate(_list(spec.get("endpoints"), "spec.endpoints")):
        e = _map(raw, f"spec.endpoints[{i}]")
        address = _str(e.get("address"), f"spec.endpoints[{i}].address")
        if resolution == "STATIC" and address and parse_ip(address) is None:
            raise InvalidField(f"spec.endpoints[{i}].address {address!r} must be an IP address "
                           "with resolution STATIC")
        ports = tuple(sorted((str(k), int(v)) for k, v in
                             _map(e.get("ports"), f"spec.endpoints[{i}].ports").items()))
        endpoints.append(ServiceEntryEndpoint(
            address=address, ports=ports,
            labels=labels_of(_labels(e.get("labels"), f"spec.endpoints[{i}].labels"))))
    export_to = tuple(_str(x, "spec.exportTo") for x in _list(spec.get("exportTo"),
                                                                "spec.exportTo"))
    return ServiceEntry(
        namespace=ns, name=name, hosts=tuple(hosts), addresses=tuple(addresses),
        endpoints=tuple(endpoints), resolution=resolution, location=location,
        ports=_ports(spec.get("ports"), "spec.ports"), export_to=export_to,
        api_version=api_version,
    )


def _patterns(value: Any, what: str) -> tuple[str, ...]:
    out = []
    for i, raw in enumerate(_list(value, what)):
        try:
            out.append(parse_pattern(raw).text)
        except BadPattern as exc:
            raise InvalidField(f"{what}[{i}]: {exc}") from exc
    return tuple(dict.fromkeys(out))


_POLICY_SPEC_FIELDS = {"namespaceSelector", "selector", "server", "policy", "protocol"}


def _policy_server(ps: Mapping[str, Any]) -> PolicyServer:
    what = "spec.policy.server"
    unknown = set(ps) - {"address", "protocol", "failureMode", "timeoutMs",
                         "decisionTtlSeconds", "serverName", "caBundle"}
    if unknown:
        raise InvalidField(f"{what} has unknown fields {sorted(unknown)}")
    address = _str(ps.get("address"), f"{what}.address", required=True).strip()
    try:
        strict_host_port(address, 9191)
    except BadAddress as exc:
        raise InvalidField(f"{what}.address: {exc}") from None
    protocol = (_str(ps.get("protocol"), f"{what}.protocol") or "grpc").strip().lower()
    if protocol != "grpc":
        raise InvalidField(f"{what}.protocol {protocol!r} is not supported: only grpc (Envoy's "
                       "external authorization API, envoy.service.auth.v3.Authorization/Check)")
    mode = _str(ps.get("failureMode"), f"{what}.failureMode")
    if mode and mode not in ("closed", "open"):
        raise InvalidField(f"{what}.failureMode {mode!r} is not one of closed, open")
    ca_bundle = _str(ps.get("caBundle"), f"{what}.caBundle").strip()
    if ca_bundle and "-----BEGIN CERTIFICATE-----" not in ca_bundle:
        raise InvalidField(f"{what}.caBundle must hold PEM certificates")
    return PolicyServer(
        address=address, protocol=protocol,
        failure_mode=FailureMode(mode) if mode else None,
        timeout_ms=_int(ps["timeoutMs"], f"{what}.timeoutMs", low=10, high=10_000)
        if "timeoutMs" in ps else 200,
        decision_ttl_seconds=_int(ps["decisionTtlSeconds"], f"{what}.decisionTtlSeconds",
                                  low=1, high=86_400) if "decisionTtlSeconds" in ps else 60,
        server_name=_str(ps.get("serverName"), f"{what}.serverName").strip(),
        ca_bundle=ca_bundle)


def _dns_policy(doc: Mapping[str, Any], meta: Mapping[str, Any], name: str) -> DnsPolicy:
    spec = _map(doc.get("spec"), "spec")
    unknown = set(spec) - _POLICY_SPEC_FIELDS
    if unknown:
        raise InvalidField(f"spec has unknown fields {sorted(unknown)}")
    if "namespaceSelector" not in spec:
        raise InvalidField("spec.namespaceSelector is required (use {} to select every namespace)")
    ns_sel = _selector(spec.get("namespaceSelector"), "spec.namespaceSelector")
    selector = _selector(spec["selector"], "spec.selector") if spec.get("selector") is not None \
        else None
    server = _map(spec.get("server"), "spec.server")
    server_address = _str(server.get("address"), "spec.server.address").strip()
    policy = _map(spec.get("policy"), "spec.policy")
    unknown = set(policy) - {"whitelist", "blacklist", "defaultAction", "server"}
    if unknown:
        raise InvalidField(f"spec.policy has unknown fields {sorted(unknown)}")
    raw_action = policy.get("defaultAction")
    if raw_action is None:
        action = DefaultAction.ALLOW
    else:
        text = _str(raw_action, "spec.policy.defaultAction").upper()
        try:
            action = DefaultAction(text)
        except ValueError:
            raise InvalidField(f"spec.policy.defaultAction {raw_action!r} is not one of "
                           "ALLOW, DENY, WARN") from None
    policy_server = None
    if policy.get("server") is not None:
        policy_server = _policy_server(_map(policy.get("server"), "spec.policy.server"))
    protocol = _map(spec.get("protocol"), "spec.protocol")
    upgrade = protocol.get("upgrade", False)
    if not isinstance(upgrade, bool):
        raise InvalidField(f"spec.protocol.upgrade must be true or false, not {upgrade!r}")
    unknown = set(protocol) - {"upgrade", "type", "serverName", "caBundle", "path"}
    if unknown:
        raise InvalidField(f"spec.protocol has unknown fields {sorted(unknown)}")
    upgrade_type = _str(protocol.get("type"), "spec.protocol.type")
    if upgrade_type and upgrade_type not in ("dns-over-https", "dns-over-tls"):
        raise InvalidField(f"spec.protocol.type {upgrade_type!r} is not one of "
                       "dns-over-https, dns-over-tls")
    if upgrade and not upgrade_type:
        upgrade_type = "dns-over-tls"
    tls_server_name = _str(protocol.get("serverName"), "spec.protocol.serverName").strip()
    ca_bundle = _str(protocol.get("caBundle"), "spec.protocol.caBundle").strip()
    if ca_bundle and "-----BEGIN CERTIFICATE-----" not in ca_bundle:
        raise InvalidField("spec.protocol.caBundle must hold PEM certificates "
                       "(-----BEGIN CERTIFICATE-----)")
    doh_path = _str(protocol.get("path"), "spec.protocol.path").strip()
    if doh_path and not doh_path.startswith("/"):
        raise InvalidField(f"spec.protocol.path {doh_path!r} must start with /")
    if (tls_server_name or ca_bundle or doh_path) and not upgrade:
        raise InvalidField("spec.protocol.serverName, caBundle and path need upgrade: true")
    generation = meta.get("generation", 0)
    return DnsPolicy(
        name=name, namespace_selector=ns_sel, selector=selector, server_address=server_address,
        whitelist=_patterns(policy.get("whitelist"), "spec.policy.whitelist"),
        blacklist=_patterns(policy.get("blacklist"), "spec.policy.blacklist"),
        default_action=action, default_action_given=raw_action is not None,
        policy_server=policy_server, upgrade=upgrade, upgrade_type=upgrade_type,
        tls_server_name=tls_server_name, tls_ca_bundle=ca_bundle, doh_path=doh_path,
        generation=generation if isinstance(generation, int) else 0,
    )


def parse_object(doc: Any, *, origin: str = "") -> ParseResult:
    """Turn one manifest into a model object, an ``InputError`` or ``Ignored``."""
    if not isinstance(doc, Mapping):
        return InputError(kind="Document", namespace="", name="", origin=origin,
                          reason=f"a manifest must be a mapping, not {type(doc).__name__}")
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    raw_meta = doc.get("metadata")
    meta: Mapping[str, Any] = raw_meta if isinstance(raw_meta, Mapping) else {}
    raw_name = meta.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    raw_ns = meta.get("namespace")
    ns = raw_ns if isinstance(raw_ns, str) and raw_ns else "default"
    if not isinstance(kind, str) or not kind or not isinstance(api_version, str) \
            or not api_version:  # "" too: an error must name a kind (found by the fuzz test)
        return InputError(kind=str(kind or "Document"), namespace="", name=name, origin=origin,
                          reason="apiVersion and kind are required, non-empty strings")

    raw_generation = meta.get("generation")
    generation = raw_generation if isinstance(raw_generation, int) else 0

    def err(reason: str, namespace: str = ns) -> InputError:
        return InputError(kind=kind, namespace=namespace, name=name, origin=origin, reason=reason,
                          generation=generation)

    cluster_scoped = kind in ("Namespace", "DnsPolicy")
    if not name:
        return err("metadata.name is required", "" if cluster_scoped else ns)
    if (problem := name_problem(name)) or name != name.lower():
        return err(f"metadata.name is not a valid Kubernetes name: {problem or 'upper case'}",
                   "" if cluster_scoped else ns)
    try:
        if api_version == "v1" and kind == "Namespace":
            return _namespace(doc, meta, name)
        if api_version == "v1" and kind == "Service":
            return _service(doc, meta, name, ns)
        if api_version == "v1" and kind == "Pod":
            return _pod(doc, meta, name, ns)
        if api_version == "discovery.k8s.io/v1" and kind == "EndpointSlice":
            return _endpoint_slice(doc, meta, name, ns)
        if api_version in SERVICE_ENTRY_API_VERSIONS and kind == "ServiceEntry":
            return _service_entry(doc, meta, name, ns, api_version)
        if api_version in POLICY_API_VERSIONS and kind == "DnsPolicy":
            return _dns_policy(doc, meta, name)
    except InvalidField as exc:
        return err(str(exc), "" if cluster_scoped else ns)
    return Ignored(api_version=api_version, kind=kind, name=name)
