"""Envoy node metadata -> Workload: who a connecting sidecar speaks for.

Metadata keys (all optional, each missing one gives a warning, never an error):

- ``NAMESPACE``: the pod's namespace.
- ``LABELS``: the pod's labels, a map (or a string ``k=v,k2=v2``).
- ``DNS_LISTEN_ADDRESS``: where the DNS listener binds, ``HOST:PORT``
  (default ``127.0.0.1:15053``).
"""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf.json_format import MessageToDict

from controlplane.model import Workload, labels_of
from controlplane.names import parse_ip, split_host_port

DEFAULT_DNS_HOST = "127.0.0.1"
DEFAULT_DNS_PORT = 15053


def _labels(raw: Any, warnings: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    if isinstance(raw, str):
        out = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                warnings.append(f"LABELS entry {part!r} is not key=value; ignored")
                continue
            out[key.strip()] = value.strip()
        return out
    warnings.append(f"LABELS must be a map or 'k=v,...', not {type(raw).__name__}; ignored")
    return {}


def workload_from_node(node: base_pb2.Node) -> Workload:
    meta: dict[str, Any] = MessageToDict(node.metadata) if node.HasField("metadata") else {}
    warnings: list[str] = []
    namespace = meta.get("NAMESPACE")
    if not isinstance(namespace, str) or not namespace:
        warnings.append("node metadata has no NAMESPACE: the default view applies")
        namespace = ""
    if "LABELS" not in meta:
        warnings.append("node metadata has no LABELS: workload selectors cannot match")
    labels = _labels(meta.get("LABELS"), warnings)
    host, port = DEFAULT_DNS_HOST, DEFAULT_DNS_PORT
    raw_address = meta.get("DNS_LISTEN_ADDRESS")
    if raw_address is not None:
        split = split_host_port(str(raw_address), DEFAULT_DNS_PORT)
        if isinstance(split, str) or parse_ip(split[0]) is None:
            warnings.append(f"DNS_LISTEN_ADDRESS {raw_address!r} is not IP:PORT; using "
                            f"{DEFAULT_DNS_HOST}:{DEFAULT_DNS_PORT}")
        else:
            host, port = str(parse_ip(split[0])), split[1]
    return Workload(node_id=node.id, namespace=namespace, labels=labels_of(labels),
                    dns_listen_host=host, dns_listen_port=port, warnings=tuple(warnings))
