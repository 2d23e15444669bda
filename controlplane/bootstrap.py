"""The Envoy bootstrap for a DNS sidecar: ADS to this control plane, identity, stats tags."""

from __future__ import annotations

from typing import Any

from controlplane.names import parse_ip, split_host_port

# Turns the listener stat prefix ``tenant.<name>`` into a ``tenant`` label:
# dns_filter.tenant.acme.downstream_rx_queries ->
# envoy_dns_filter_downstream_rx_queries{tenant="acme"} (facts #11).
TENANT_STATS_TAG = {"tag_name": "tenant", "regex": r"^dns_filter\.tenant\.((.+?)\.)"}
XDS_CLUSTER = "xds_cluster"
ADMIN_CLUSTER = "envoy_admin"  # the stats-only listener's route to the admin
# How soon Envoy retries the ADS stream after it broke (``envoy_grpc.retry_policy``;
# Envoy's default is a 500 ms base and a 30 s cap). Retry n waits a random time in
# [0, min(base * 2^(n-1), max)): after a control-plane restart every sidecar is back
# at most ``max`` after the new process listens, and the jitter spreads the
# reconnections of a fleet over that second (e2e/test_xds_startup_e2e.py).
XDS_RETRY_BASE_INTERVAL = "0.1s"
XDS_RETRY_MAX_INTERVAL = "1s"


def _socket(address: str, default_port: int) -> tuple[str, int]:
    split = split_host_port(address, default_port)
    if isinstance(split, str):
        raise ValueError(split)
    return split


def bootstrap_config(
    *,
    node_id: str,
    namespace: str,
    labels: dict[str, str],
    xds_address: str = "127.0.0.1:18000",
    dns_address: str = "127.0.0.1:15053",
    admin_address: str = "127.0.0.1:15000",
    stats_address: str = "0.0.0.0:15090",
    resolver_hop_address: str = "127.0.0.1:15054",
    cluster: str = "dns-sidecar",
    token: str = "",
    delta: bool = False,
    xds_retry_base_interval: str = XDS_RETRY_BASE_INTERVAL,
    xds_retry_max_interval: str = XDS_RETRY_MAX_INTERVAL,
) -> dict[str, Any]:
    """A complete Envoy bootstrap as a dict (dump it as YAML or JSON).

    ``stats_address`` is where the control plane puts the stats-only listener
    (``/stats/prometheus`` only), or ``off``. Envoy's admin stays where
    ``admin_address`` says (loopback by default); the static cluster
    ``envoy_admin`` lets the stats listener reach it. ``xds_retry_*`` are the
    back-off of the ADS stream's reconnection (proto JSON durations, e.g. ``"0.1s"``).
    """
    xds_host, xds_port = _socket(xds_address, 18000)
    admin_host, admin_port = _socket(admin_address, 15000)
    dns_host, dns_port = _socket(dns_address, 15053)
    xds_type = "STATIC" if parse_ip(xds_host) is not None else "STRICT_DNS"
    metadata: dict[str, Any] = {
        "NAMESPACE": namespace,
        "LABELS": dict(labels),
        "DNS_LISTEN_ADDRESS": f"{dns_host}:{dns_port}",
    }
    hop_host, hop_port = _socket(resolver_hop_address, 15054)
    if (hop_host, hop_port) != ("127.0.0.1", 15054):  # the default needs no metadata
        metadata["RESOLVER_HOP_ADDRESS"] = f"{hop_host}:{hop_port}"
    if stats_address.lower() == "off":
        metadata["STATS_LISTEN_ADDRESS"] = "off"
    else:
        stats_host, stats_port = _socket(stats_address, 15090)
        metadata["STATS_LISTEN_ADDRESS"] = f"{stats_host}:{stats_port}"
    admin_target = "127.0.0.1" if admin_host in ("0.0.0.0", "::") else admin_host
    grpc_service: dict[str, Any] = {"envoy_grpc": {
        "cluster_name": XDS_CLUSTER,
        "retry_policy": {"retry_back_off": {"base_interval": xds_retry_base_interval,
                                            "max_interval": xds_retry_max_interval}},
    }}
    if token:
        grpc_service["initial_metadata"] = [{"key": "authorization",
                                             "value": f"Bearer {token}"}]
    return {
        "node": {"id": node_id, "cluster": cluster, "metadata": metadata},
        "admin": {"address": {"socket_address": {"address": admin_host,
                                                 "port_value": admin_port}}},
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [{
                "name": XDS_CLUSTER,
                "type": xds_type,
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/"
                                 "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {
                    "cluster_name": XDS_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": xds_host, "port_value": xds_port}}}}]}],
                },
            }, {
                "name": ADMIN_CLUSTER,
                "type": "STATIC",
                "connect_timeout": "1s",
                "load_assignment": {
                    "cluster_name": ADMIN_CLUSTER,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": admin_target,
                                           "port_value": admin_port}}}}]}],
                },
            }],
        },
        "stats_config": {"stats_tags": [dict(TENANT_STATS_TAG)]},
    }
