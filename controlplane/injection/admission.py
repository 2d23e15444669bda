"""Sidecar injection as a pure function: AdmissionReview in, AdmissionReview out.

``review(body, config)`` reads an ``admission.k8s.io/v1`` AdmissionReview and returns
the response to send back and the ``Decision`` behind it (for the metric and the
admin API). Nothing here logs, reads a clock or touches the network: the HTTPS server
around it is ``controlplane/injection/webhook.py``.

A decision is one of:

- ``injected``: allowed, with a JSON patch that adds the sidecar (Envoy, and its DNS
  front with its ``emptyDir`` unless ``InjectionConfig.front`` is off), its token volume,
  the port sysctl, ``dnsPolicy: None`` and the ``dnsConfig``, and marks the pod
  (``dns.example.com/injected``);
- ``already-injected``: allowed, no patch (the pod carries the mark and the sidecar);
- ``skipped``: allowed, no patch, for pods that must not get a sidecar (opt-out
  annotation, ``hostNetwork``, ``kube-system`` or the control plane's namespace, a
  ``dnsPolicy`` of ``Default`` or ``None``, anything but a Pod CREATE);
- ``rejected``: denied with the reason, for pods the sidecar cannot be added to as
  they are (a container already named like the sidecar, a port the sidecar needs
  declared by a container, a ``dnsConfig`` over the kubelet's limits, a conflicting
  port sysctl). The pod is never half-patched: every check runs before the patch is
  built, and the message says how to opt out.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.core.names import split_host_port
from controlplane.core.settings import InjectionConfig, SidecarMode
from controlplane.injection.front import FRONT_NAME
from controlplane.injection.review_shape import check_review, is_pod_create
from controlplane.injection.sidecar import (
    FRONT_VOLUME,
    INJECTED_ANNOTATION,
    OPT_OUT_ANNOTATION,
    OPT_OUT_VALUES,
    PORT_SYSCTL,
    SIDECAR_NAME,
    TOKEN_VOLUME,
    front_container,
    front_volume,
    pod_dns_config,
    sidecar_container,
    sidecar_ports,
    token_volume,
)

API_VERSION = "admission.k8s.io/v1"
OPT_OUT_HINT = f"annotate the pod {OPT_OUT_ANNOTATION}=disabled to run it without the sidecar"


@dataclass(frozen=True, slots=True)
class Decision:
    result: str  # injected | already-injected | skipped | rejected
    reason: str  # a short code, e.g. host-network, port-conflict
    message: str
    namespace: str = ""
    pod: str = ""  # the name, or generateName followed by "*"
    uid: str = ""
    dry_run: bool = False
    patch: tuple[dict[str, Any], ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return self.result != "rejected"

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.result, "reason": self.reason, "message": self.message,
                "namespace": self.namespace, "pod": self.pod, "uid": self.uid,
                "dry_run": self.dry_run, "warnings": list(self.warnings)}


def _pointer(token: str) -> str:
    """One JSON-pointer reference token (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def _containers(spec: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(kind) or []:
            if isinstance(c, Mapping):
                out.append((kind, c))
    return out


def _port_conflicts(spec: Mapping[str, Any], config: InjectionConfig) -> list[str]:
    needed = sidecar_ports(config)
    out = []
    for kind, c in _containers(spec):
        for port in c.get("ports") or []:
            number = port.get("containerPort") if isinstance(port, Mapping) else None
            if number in needed:
                protocol = port.get("protocol", "TCP")
                out.append(f"{kind[:-1]} {c.get('name')!r} declares port {number}/{protocol}, "
                           f"which the DNS sidecar's {needed[number]} uses")
    return out


def _sysctl_patch(spec: Mapping[str, Any], dns_port: int) -> tuple[list[dict[str, Any]],
                                                                    str | None]:
    """The ops that let a non-root Envoy bind ``dns_port``, or the conflict."""
    wanted = {"name": PORT_SYSCTL, "value": str(dns_port)}
    security = spec.get("securityContext")
    if not isinstance(security, Mapping):
        return [{"op": "add", "path": "/spec/securityContext",
                 "value": {"sysctls": [wanted]}}], None
    sysctls = security.get("sysctls")
    if not isinstance(sysctls, list):
        return [{"op": "add", "path": "/spec/securityContext/sysctls", "value": [wanted]}], None
    for s in sysctls:
        if isinstance(s, Mapping) and s.get("name") == PORT_SYSCTL:
            value = str(s.get("value", ""))
            if value.isdigit() and int(value) <= dns_port:
                return [], None
            return [], (f"securityContext.sysctls sets {PORT_SYSCTL}={value}; the sidecar, "
                        f"which runs as non-root without capabilities, needs it at most "
                        f"{dns_port} to bind the DNS port")
    return [{"op": "add", "path": "/spec/securityContext/sysctls/-", "value": wanted}], None


def _list_add(spec: Mapping[str, Any], key: str, value: Any, *, first: bool) -> dict[str, Any]:
    if not spec.get(key):
        return {"op": "add", "path": f"/spec/{key}", "value": [value]}
    return {"op": "add", "path": f"/spec/{key}/{'0' if first else '-'}", "value": value}


def admit(pod: Mapping[str, Any], *, namespace: str, config: InjectionConfig) -> Decision:
    """The decision for one pod of ``namespace`` (a CREATE that reached the webhook)."""
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), Mapping) else {}
    assert isinstance(meta, Mapping)
    name = str(meta.get("name") or (f"{meta.get('generateName', '')}*"))
    return replace(_decide(pod, meta, namespace, config), namespace=namespace, pod=name)


def _decide(pod: Mapping[str, Any], meta: Mapping[str, Any], namespace: str,
            config: InjectionConfig) -> Decision:
    spec = pod.get("spec")
    if not isinstance(spec, Mapping):
        return Decision("skipped", "malformed", "the pod has no spec")
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), Mapping) else {}
    assert isinstance(annotations, Mapping)
    labels = meta.get("labels") if isinstance(meta.get("labels"), Mapping) else {}
    assert isinstance(labels, Mapping)
    names = [str(c.get("name")) for _, c in _containers(spec)]

    if INJECTED_ANNOTATION in annotations and SIDECAR_NAME in names:
        return Decision("already-injected", "already-injected",
                        f"the pod already has the {SIDECAR_NAME} sidecar")
    if str(annotations.get(OPT_OUT_ANNOTATION, "")).lower() in OPT_OUT_VALUES:
        return Decision("skipped", "opt-out", f"annotation {OPT_OUT_ANNOTATION}="
                        f"{annotations[OPT_OUT_ANNOTATION]}")
    if namespace == config.own_namespace or namespace in config.excluded_namespaces:
        return Decision("skipped", "excluded-namespace",
                        f"namespace {namespace} is never injected")
    if spec.get("hostNetwork"):
        return Decision("skipped", "host-network", "hostNetwork pods share the node's "
                        "network namespace and DNS: never injected")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy not in ("ClusterFirst", "ClusterFirstWithHostNet"):
        return Decision("skipped", "dns-policy", f"dnsPolicy {policy}: the pod chose its "
                        "own resolvers, so it keeps them")

    problems: list[str] = []
    ours = (SIDECAR_NAME, FRONT_NAME) if config.front else (SIDECAR_NAME,)
    problems.extend(f"a container is already named {name!r}" for name in ours if name in names)
    volumes = [v.get("name") for v in spec.get("volumes") or [] if isinstance(v, Mapping)]
    our_volumes = (TOKEN_VOLUME, FRONT_VOLUME) if config.front else (TOKEN_VOLUME,)
    problems.extend(f"a volume is already named {name!r}" for name in our_volumes
                    if name in volumes)
    problems.extend(_port_conflicts(spec, config))
    dns = split_host_port(config.dns_address, 53)  # config_problem checked it at start
    own_dns = spec.get("dnsConfig") if isinstance(spec.get("dnsConfig"), Mapping) else None
    dns_config, dns_problems = pod_dns_config(namespace=namespace, zone=config.zone,
                                              nameserver=dns[0], own=own_dns)
    problems.extend(dns_problems)
    sysctl_ops, sysctl_problem = _sysctl_patch(spec, dns[1])
    if sysctl_problem:
        problems.append(sysctl_problem)
    if problems:
        reason = ("name-conflict" if "already named" in problems[0] else
                  "port-conflict" if "declares port" in problems[0] else
                  "dns-limits" if problems[0].startswith("dnsConfig") else "sysctl-conflict")
        return Decision("rejected", reason, "the DNS sidecar cannot be added: "
                        + "; ".join(problems) + f" ({OPT_OUT_HINT})")

    warnings = []
    if own_dns and own_dns.get("nameservers"):
        warnings.append(f"{SIDECAR_NAME}: dnsConfig.nameservers {list(own_dns['nameservers'])} "
                        "kept after the sidecar; names may bypass its policy")
    if config.mode == SidecarMode.LEGACY:
        inits = [str(c.get("name")) for c in spec.get("initContainers") or []
                 if isinstance(c, Mapping)]
        if inits:
            warnings.append(f"{SIDECAR_NAME} (legacy mode): init containers {inits} run "
                            "before the sidecar and cannot resolve names")
        if spec.get("restartPolicy") in ("Never", "OnFailure"):
            warnings.append(f"{SIDECAR_NAME} (legacy mode): the sidecar never exits, so "
                            "this pod never completes")

    container = sidecar_container(config, namespace=namespace,
                                  labels={str(k): str(v) for k, v in labels.items()})
    ops: list[dict[str, Any]] = []
    if annotations:
        ops.append({"op": "add", "path": f"/metadata/annotations/{_pointer(INJECTED_ANNOTATION)}",
                    "value": config.mode})
    else:
        ops.append({"op": "add", "path": "/metadata/annotations",
                    "value": {INJECTED_ANNOTATION: config.mode}})
    # First (then the front second), so later init containers resolve names too (native),
    # or the kubelet, which starts containers in order and waits for each postStart,
    # starts the application only once both answer (legacy).
    kind = "initContainers" if config.mode == SidecarMode.NATIVE else "containers"
    ops.append(_list_add(spec, kind, container, first=True))
    if config.front:
        ops.append({"op": "add", "path": f"/spec/{kind}/1", "value": front_container(config)})
    ops.append(_list_add(spec, "volumes", token_volume(), first=False))
    if config.front:
        ops.append({"op": "add", "path": "/spec/volumes/-", "value": front_volume()})
    ops.extend(sysctl_ops)
    ops.append({"op": "add", "path": "/spec/dnsPolicy", "value": "None"})
    ops.append({"op": "add", "path": "/spec/dnsConfig", "value": dns_config})
    return Decision("injected", config.mode, f"{SIDECAR_NAME} added ({config.mode} sidecar)",
                    patch=tuple(ops), warnings=tuple(warnings))


def review(body: Any, config: InjectionConfig) -> tuple[dict[str, Any], Decision]:
    """(the AdmissionReview to answer, the decision) for a decoded request body;
    ``BadReview`` naming the field when a field it reads has the wrong type
    (``review_shape``)."""
    request = check_review(body, API_VERSION)
    uid = str(request["uid"])
    namespace = str(request.get("namespace") or "")
    kind = request.get("kind") or {}
    if not is_pod_create(request):
        what = f"{request.get('operation')} {kind.get('kind')}"
        decision = Decision("skipped", "not-a-pod-create", f"{what}: only pods are injected, "
                            "when they are created", namespace=namespace,
                            pod=str(request.get("name") or ""))
    else:
        decision = admit(request["object"], namespace=namespace, config=config)
    decision = replace(decision, uid=uid, dry_run=bool(request.get("dryRun")))
    return response(decision), decision


def response(decision: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": decision.uid, "allowed": decision.allowed}
    if decision.patch:
        out["patchType"] = "JSONPatch"
        out["patch"] = base64.b64encode(json.dumps(list(decision.patch)).encode()).decode()
    if not decision.allowed:
        out["status"] = {"code": 400, "reason": "BadRequest", "message": decision.message}
    if decision.warnings:
        out["warnings"] = list(decision.warnings)
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": out}
