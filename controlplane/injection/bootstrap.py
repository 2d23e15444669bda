"""The Envoy bootstrap for a DNS sidecar: ADS to this control plane, identity, stats tags."""

from __future__ import annotations

import copy
from typing import Any

from controlplane.core.names import parse_ip, split_host_port

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
# The stats a sidecar keeps when it streams its DNS counters to the control plane
# (``stats_sink``; stats_sink.py). Envoy 1.40's metrics service sink has no filter of its
# own, and ``stats_config.stats_matcher`` applies to the whole stats store: a stat it does
# not include is never created, so it is neither sent nor shown by /stats or
# /stats/prometheus. Kept: the DNS filter (what the sink is for; the per-tenant Prometheus
# stats), and the xDS and TLS health stats an operator reads on a sidecar. Everything
# else (the admin and stats listeners' HTTP stats, server.*, runtime.*) is not created.
SIDECAR_STATS: tuple[dict[str, str], ...] = (
    {"prefix": "dns_filter."},
    {"prefix": "listener_manager.lds."},
    {"prefix": "cluster_manager.cds."},
    {"prefix": "control_plane."},
    {"prefix": "cluster.xds_cluster.ssl."},
    {"exact": "cluster.xds_cluster.upstream_cx_total"},
    {"prefix": "cluster.tenant_resolver.ssl."},
)
METRICS_SINK = "envoy.stat_sinks.metrics_service"


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
    xds_ca: str = "",
    xds_server_name: str = "",
    more_xds_addresses: tuple[str, ...] = (),
    token_path: str = "",
    stats_sink: bool = True,
    stats_flush_interval: str = "",
    front_set_address: str = "",
) -> dict[str, Any]:
    """A complete Envoy bootstrap as a dict (dump it as YAML or JSON).

    ``stats_address`` is where the control plane puts the stats-only listener
    (``/stats/prometheus`` only), or ``off``. Envoy's admin stays where
    ``admin_address`` says (loopback by default); the static cluster
    ``envoy_admin`` lets the stats listener reach it. ``xds_retry_*`` are the
    back-off of the ADS stream's reconnection (proto JSON durations, e.g. ``"0.1s"``).

    ``xds_ca`` (a CA bundle: a file path, or the PEM text itself) turns on TLS to the
    control plane: Envoy verifies its certificate against the bundle and requires the
    DNS SAN ``xds_server_name`` (default: the host of ``xds_address``), which it also
    sends as SNI. Without it ADS is plaintext (``serve --xds-plaintext``).

    ``more_xds_addresses``: more control-plane replicas, as further endpoints of
    ``xds_cluster`` (round robin): when a replica ends the stream or is gone, the
    reconnection goes to the next one (for sidecars outside Kubernetes; in a cluster
    the Service does this).

    ``token_path``: a token file (a pod's projected ServiceAccount token) that Envoy
    re-reads for every new ADS stream, so a reconnection carries the current token
    after the kubelet rotated it (``token`` is fixed in the bootstrap instead). See
    ``token_file_grpc_service``; it needs TLS (``xds_ca``).

    ``stats_sink``: stream the DNS filter's counters to the control plane at every stats
    flush (``stats_flush_interval``, a proto JSON duration; "" for Envoy's 5 s) with the
    metrics service sink, over ``xds_cluster`` with the ADS credentials, and keep only
    ``SIDECAR_STATS`` (see there).

    ``front_set_address`` (HOST:PORT; "" for none): this sidecar has a DNS front (kresd,
    ``docs/dns-front.md``) in front of its DNS listener, polling the (name, type) set at
    that loopback address. It goes into the node metadata as ``DNS_FRONT_SET_ADDRESS``,
    which asks the control plane for the set listener and the resolver hop. Without it
    the node is not fronted and the bootstrap is what it always was.
    """
    xds_host, xds_port = split_host_port(xds_address, 18000)
    xds_sockets = [(xds_host, xds_port),
                   *(split_host_port(a, 18000) for a in more_xds_addresses)]
    admin_host, admin_port = split_host_port(admin_address, 15000)
    dns_host, dns_port = split_host_port(dns_address, 15053)
    xds_type = ("STATIC" if all(parse_ip(h) is not None for h, _ in xds_sockets)
                else "STRICT_DNS")
    metadata: dict[str, Any] = {
        "NAMESPACE": namespace,
        "LABELS": dict(labels),
        "DNS_LISTEN_ADDRESS": f"{dns_host}:{dns_port}",
    }
    hop_host, hop_port = split_host_port(resolver_hop_address, 15054)
    if (hop_host, hop_port) != ("127.0.0.1", 15054):  # the default needs no metadata
        metadata["RESOLVER_HOP_ADDRESS"] = f"{hop_host}:{hop_port}"
    if front_set_address:
        set_host, set_port = split_host_port(front_set_address, 15055)
        metadata["DNS_FRONT_SET_ADDRESS"] = f"{set_host}:{set_port}"
    if stats_address.lower() == "off":
        metadata["STATS_LISTEN_ADDRESS"] = "off"
    else:
        stats_host, stats_port = split_host_port(stats_address, 15090)
        metadata["STATS_LISTEN_ADDRESS"] = f"{stats_host}:{stats_port}"
    admin_target = "127.0.0.1" if admin_host in ("0.0.0.0", "::") else admin_host
    grpc_service: dict[str, Any] = {"envoy_grpc": {
        "cluster_name": XDS_CLUSTER,
        "retry_policy": {"retry_back_off": {"base_interval": xds_retry_base_interval,
                                            "max_interval": xds_retry_max_interval}},
    }}
    if token and token_path:
        raise ValueError("give the ADS token inline or as a file (token_path), not both")
    if token:
        grpc_service["initial_metadata"] = [{"key": "authorization",
                                             "value": f"Bearer {token}"}]
    if token_path:
        grpc_service = token_file_grpc_service(
            token_path=token_path, sockets=xds_sockets, ca=xds_ca,
            server_name=xds_server_name or xds_host)
    xds_cluster: dict[str, Any] = {
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
                "socket_address": {"address": host, "port_value": port}}}}
                for host, port in xds_sockets]}],
        },
    }
    if xds_ca or xds_server_name:
        xds_cluster["transport_socket"] = xds_tls_socket(
            xds_ca, xds_server_name or xds_host)
    secrets: list[dict[str, Any]] = []
    if token or token_path:  # every call on xds_cluster (the query log) carries them too
        filters, secrets = xds_cluster_credentials(token=token, token_path=token_path)
        xds_cluster["typed_extension_protocol_options"][
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["http_filters"] = filters
    stats: dict[str, Any] = {"stats_config": {"stats_tags": [dict(TENANT_STATS_TAG)]}}
    if stats_sink:
        stats = stats_sink_config(grpc_service, flush_interval=stats_flush_interval)
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
            "clusters": [xds_cluster, {
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
            **({"secrets": secrets} if secrets else {}),
        },
        **stats,
    }


def stats_sink_config(ads_grpc_service: dict[str, Any], *, flush_interval: str = ""
                      ) -> dict[str, Any]:
    """The bootstrap's stats part for a sidecar that streams its DNS counters: the stats
    tag, ``SIDECAR_STATS``, and the metrics service sink on the ADS gRPC service (same
    cluster, same credentials; without ADS's stream retry policy, which only xDS reads)."""
    grpc_service = copy.deepcopy(ads_grpc_service)
    grpc_service.get("envoy_grpc", {}).pop("retry_policy", None)
    out: dict[str, Any] = {
        "stats_config": {
            "stats_tags": [dict(TENANT_STATS_TAG)],
            "stats_matcher": {"inclusion_list": {"patterns": [dict(p) for p in SIDECAR_STATS]}},
        },
        "stats_sinks": [{"name": METRICS_SINK, "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "grpc_service": grpc_service,
            "histogram_emit_mode": "SUMMARY",  # the control plane reads counters only
        }}],
    }
    if flush_interval:
        out["stats_flush_interval"] = flush_interval
    return out


def xds_tls_socket(ca: str, server_name: str) -> dict[str, Any]:
    """The ``transport_socket`` of ``xds_cluster``: TLS 1.2+, ALPN h2, the server's
    certificate verified against ``ca`` (a path, or PEM text) with the DNS SAN
    ``server_name``, sent as SNI. Fails closed: no ADS without a verified server."""
    if not ca:
        raise ValueError("TLS to the control plane needs a CA bundle (--xds-ca)")
    if not server_name or parse_ip(server_name) is not None:
        raise ValueError("TLS to the control plane needs the DNS name in its certificate "
                         "(--xds-server-name) when the xDS address is an IP")
    trusted = ({"inline_string": ca} if ca.lstrip().startswith("-----BEGIN")
               else {"filename": ca})
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": server_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_params": {"tls_minimum_protocol_version": "TLSv1_2",
                               "tls_maximum_protocol_version": "TLSv1_3"},
                "validation_context": {
                    "trusted_ca": trusted,
                    "match_typed_subject_alt_names": [
                        {"san_type": "DNS", "matcher": {"exact": server_name}}],
                },
            },
        },
    }


TOKEN_SECRET = "sidecar-token"
UPSTREAM_CODEC = {"name": "envoy.filters.http.upstream_codec", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}
# Reads the token file for each new call (the kubelet rotates it): the same as the ADS
# stream's file_based_metadata call credentials, for calls through xds_cluster.
TOKEN_FILE_LUA = """function envoy_on_request(handle)
  local file = io.open("{path}", "r")
  if file == nil then return end
  local token = file:read("*a"):gsub("%s", "")
  file:close()
  handle:headers():replace("authorization", "Bearer " .. token)
end
"""


def xds_cluster_credentials(*, token: str, token_path: str
                            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Upstream HTTP filters for ``xds_cluster`` that put the sidecar's credentials on
    every call it carries, and the static secrets they need.

    Why: the query log's OpenTelemetry access logger is configured by the control plane
    in the listener it sends (``translate/listeners.py``), shared by every sidecar of a
    view, so it cannot carry a pod's token; it sends through ``xds_cluster``, and these
    filters add ``authorization: Bearer <token>`` there. An inline ``token`` goes in
    through the credential injector with a static secret; a ``token_path`` is read by a
    Lua filter for every new call, so a rotated token is sent from the next call on
    (verified with Envoy 1.40: e2e/test_attacker_channels_e2e.py). The ADS stream over
    ``envoy_grpc`` gets the same header it already had."""
    if token_path:
        if '"' in token_path or "\\" in token_path or "\n" in token_path:
            raise ValueError(f"token path {token_path!r}: no quotes, backslashes or newlines")
        lua = {"name": "envoy.filters.http.lua", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": TOKEN_FILE_LUA.replace(
                "{path}", token_path)}}}
        return [lua, dict(UPSTREAM_CODEC)], []
    injector = {"name": "envoy.filters.http.credential_injector", "typed_config": {
        "@type": "type.googleapis.com/"
                 "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
        "overwrite": True,
        "credential": {"name": "envoy.http.injected_credentials.generic", "typed_config": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.http.injected_credentials.generic.v3.Generic",
            "credential": {"name": TOKEN_SECRET},
            "header": "authorization",
            "header_value_prefix": "Bearer ",
        }},
    }}
    secret = {"name": TOKEN_SECRET, "generic_secret": {"secret": {"inline_string": token}}}
    return [injector, dict(UPSTREAM_CODEC)], [secret]


FILE_BASED_METADATA = "envoy.grpc_credentials.file_based_metadata"


def token_file_grpc_service(*, token_path: str, sockets: list[tuple[str, int]], ca: str,
                            server_name: str) -> dict[str, Any]:
    """ADS through Envoy's Google gRPC client, whose call credentials read the token
    file for every new stream (``envoy.grpc_credentials.file_based_metadata``).

    Why: ``envoy_grpc.initial_metadata`` is fixed when Envoy starts, but a pod's
    projected token rotates (about hourly). Verified with Envoy 1.40 (docs/identity.md):
    a stream keeps the token it opened with; each reconnection sends the file's
    current content. gRPC sends call credentials only over a secure channel, so
    TLS to the control plane (``ca``) is required: over plaintext the stream fails
    (status 13) or goes without the header. The target is the xDS address
    (several IPs: ``ipv4:`` with gRPC's pick_first moving to the next one);
    ``server_name`` is checked in the certificate (``grpc.ssl_target_name_override``
    when it differs from the host, e.g. an IP address).
    """
    if not ca:
        raise ValueError("a token file (token_path) needs TLS to the control plane "
                         "(--xds-ca): gRPC sends call credentials only over TLS")
    if len(sockets) == 1:
        target = f"{sockets[0][0]}:{sockets[0][1]}"
    elif all(parse_ip(h) is not None and ":" not in h for h, _ in sockets):
        target = "ipv4:" + ",".join(f"{h}:{p}" for h, p in sockets)
    else:
        raise ValueError("several xDS addresses with a token file must all be IPv4 addresses")
    trusted = ({"inline_string": ca} if ca.lstrip().startswith("-----BEGIN")
               else {"filename": ca})
    google: dict[str, Any] = {
        "target_uri": target,
        "stat_prefix": "ads",
        "credentials_factory_name": FILE_BASED_METADATA,
        "channel_credentials": {"ssl_credentials": {"root_certs": trusted}},
        "call_credentials": [{"from_plugin": {
            "name": FILE_BASED_METADATA,
            "typed_config": {
                "@type": "type.googleapis.com/"
                         "envoy.config.grpc_credential.v3.FileBasedMetadataConfig",
                "secret_data": {"filename": token_path},
                "header_key": "authorization",
                "header_prefix": "Bearer ",
            }}}],
    }
    # gRPC's own reconnection back-off (1 s, x1.6, up to 120 s) would add to Envoy's ADS
    # retry back-off (0.5 s base, 30 s cap: not configurable for google_grpc); cap it at 1 s.
    args: dict[str, Any] = {"grpc.initial_reconnect_backoff_ms": {"int_value": 100},
                            "grpc.max_reconnect_backoff_ms": {"int_value": 1000}}
    if server_name != sockets[0][0]:
        args["grpc.ssl_target_name_override"] = {"string_value": server_name}
    google["channel_args"] = {"args": args}
    return {"google_grpc": google}
