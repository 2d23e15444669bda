"""Envoy node metadata -> Workload: who a connecting sidecar speaks for.

Metadata keys (all optional, each missing one gives a warning, never an error):

- ``NAMESPACE``: the pod's namespace.
- ``LABELS``: the pod's labels, a map (or a string ``k=v,k2=v2``).
- ``DNS_LISTEN_ADDRESS``: where the DNS listener binds, ``HOST:PORT``
  (default ``127.0.0.1:15053``).
- ``STATS_LISTEN_ADDRESS``: where the stats-only HTTP listener binds,
  ``HOST:PORT`` (default ``0.0.0.0:15090``; ``off`` for none). It serves
  ``/stats/prometheus`` from Envoy's admin (cluster ``envoy_admin`` of the
  bootstrap) and nothing else, so the admin itself stays on loopback.
- ``RESOLVER_HOP_ADDRESS``: where the local TCP listener that carries DNS to the
  tenant resolver over TLS binds (default ``127.0.0.1:15054``; used only when the
  control plane runs with ``--resolver-hop tls``, or when the node is fronted).
- ``DNS_FRONT_SET_ADDRESS``: marks a node whose pod runs the DNS front (kresd,
  ``docs/dns-front.md``): ``HOST:PORT`` of the loopback HTTP listener where the front
  fetches the (name, type) set (``http://HOST:PORT/envoy-set``; 15055 in a pod). Absent:
  not fronted, no warning (no set listener; the hop listener only with a TLS hop). A
  fronted node also gets the hop listener at ``RESOLVER_HOP_ADDRESS`` whenever its view
  has a tenant resolver. A value that is not ``IP:PORT`` with a port gives a warning
  and the node is not fronted.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from envoy.config.core.v3 import base_pb2
from google.protobuf.json_format import MessageToDict

from controlplane.core.errors import BadAddress
from controlplane.core.model import Workload, labels_of
from controlplane.core.names import parse_ip, split_host_port

DEFAULT_DNS_HOST = "127.0.0.1"
DEFAULT_DNS_PORT = 15053
DEFAULT_STATS_HOST = "0.0.0.0"
DEFAULT_STATS_PORT = 15090
DEFAULT_HOP_HOST = "127.0.0.1"
DEFAULT_HOP_PORT = 15054


def parse_labels(raw: Any, warnings: list[str]) -> dict[str, str]:
    """Pod labels from a map or a ``k=v,k2=v2`` string; problems go to ``warnings``."""
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
    labels = parse_labels(meta.get("LABELS"), warnings)
    host, port = _address(meta, "DNS_LISTEN_ADDRESS", DEFAULT_DNS_HOST, DEFAULT_DNS_PORT,
                          warnings)
    if str(meta.get("STATS_LISTEN_ADDRESS", "")).lower() == "off":
        stats_host, stats_port = DEFAULT_STATS_HOST, 0
    else:
        stats_host, stats_port = _address(meta, "STATS_LISTEN_ADDRESS", DEFAULT_STATS_HOST,
                                          DEFAULT_STATS_PORT, warnings)
    hop_host, hop_port = _address(meta, "RESOLVER_HOP_ADDRESS", DEFAULT_HOP_HOST,
                                  DEFAULT_HOP_PORT, warnings)
    front_host, front_port = _front_address(meta.get("DNS_FRONT_SET_ADDRESS"), warnings)
    return Workload(node_id=node.id, namespace=namespace, labels=labels_of(labels),
                    dns_listen_host=host, dns_listen_port=port, stats_listen_host=stats_host,
                    stats_listen_port=stats_port, hop_listen_host=hop_host,
                    hop_listen_port=hop_port, front_set_host=front_host,
                    front_set_port=front_port, warnings=tuple(warnings))


def _front_address(raw: Any, warnings: list[str]) -> tuple[str, int]:
    """``DNS_FRONT_SET_ADDRESS``: ("", 0) when absent or unusable (not fronted)."""
    if raw is None:
        return "", 0
    parsed = _ip_port(str(raw), 0)
    if parsed is None or not parsed[1]:
        warnings.append(f"DNS_FRONT_SET_ADDRESS {raw!r} is not IP:PORT; the node is not "
                        "fronted (no set listener)")
        return "", 0
    return parsed


def _address(meta: dict[str, Any], key: str, host: str, port: int,
             warnings: list[str]) -> tuple[str, int]:
    raw = meta.get(key)
    if raw is None:
        return host, port
    parsed = _ip_port(str(raw), port)
    if parsed is None:
        warnings.append(f"{key} {raw!r} is not IP:PORT; using {host}:{port}")
        return host, port
    return parsed


@lru_cache(maxsize=1024)
def _ip_port(raw: str, port: int) -> tuple[str, int] | None:
    """``HOST:PORT`` as (the IP in its canonical form, the port; ``port`` when it names
    none), None when the host is not an IP. A fleet's nodes carry a handful of distinct
    addresses, each parsed once rather than on every connection (a reconnect storm)."""
    try:
        host, split_port = split_host_port(raw, port)
    except BadAddress:
        return None
    ip = parse_ip(host)
    return None if ip is None else (str(ip), split_port)
