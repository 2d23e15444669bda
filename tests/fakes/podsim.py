"""What the kubelet does with a pod spec, for tests: ``$(VAR)`` expansion, the downward
API, the pod's resolv.conf; and the ``kubernetes`` client's models to parse a pod with.

``expand`` follows the kubelet's expansion (kubernetes third_party/forked/golang/
expansion): ``$(NAME)`` becomes the variable's value when it is defined, ``$$``
becomes ``$``, anything else is left as written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def expand(text: str, env: Mapping[str, str]) -> str:
    out = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                out.append("$")
                advance = 1
            elif rest[0] == "(":
                close = rest.find(")")
                if close < 0:
                    out.append("$(")
                    advance = 1
                else:
                    name = rest[1:close]
                    out.append(env.get(name, f"$({name})"))
                    advance = close + 1
            else:
                out.append("$" + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def field_value(pod: Mapping[str, Any], path: str, *, pod_ip: str = "10.244.1.23") -> str:
    """A downward API ``fieldRef`` of the pod (the fields Envoy's env can use)."""
    meta = pod.get("metadata") or {}
    if path == "metadata.name":
        return str(meta["name"])
    if path == "metadata.namespace":
        return str(meta["namespace"])
    if path == "status.podIP":
        return pod_ip
    if path.startswith("metadata.labels['"):
        return str((meta.get("labels") or {}).get(path[len("metadata.labels['"):-2], ""))
    raise ValueError(f"fieldRef {path} is not simulated")


def container_env(container: Mapping[str, Any], pod: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet makes it (values may refer to earlier
    variables with ``$(VAR)``)."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "valueFrom" in var:
            env[var["name"]] = field_value(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            env[var["name"]] = expand(str(var.get("value", "")), env)
    return env


def container_argv(container: Mapping[str, Any], pod: Mapping[str, Any]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded from the container's environment."""
    env = container_env(container, pod)
    return [expand(a, env) for a in [*(container.get("command") or []),
                                     *(container.get("args") or [])]]


def parse_pod(pod: Mapping[str, Any]) -> Any:
    """The pod as the ``kubernetes`` client's ``V1Pod`` (raises on a malformed pod)."""
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(dict(pod), "V1Pod")  # type: ignore[attr-defined]
