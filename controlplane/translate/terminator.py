"""The hop terminator's files: one Envoy in front of the tenant resolvers (``--resolver-hop
mtls``, docs/resolver-isolation.md). Pure: the pool writes what this returns.

One listener on one port for every tenant; the SNI picks the tenant's filter chain (no
default chain: no SNI or an unknown one is reset); each chain speaks TLS 1.3 only,
requires a client certificate from the hop CA whose URI SAN starts with the tenant's
prefix, has session resumption off (a resumed session outlives its certificate), and
proxies to the tenant's unbound on loopback, cutting each connection after
``max_connection_seconds`` so none outlives its certificate by more. Listener and clusters
come from files (LDS/CDS ``path_config_source`` with a watched directory, replaced by
rename), the server certificate and the CA from SDS files that name the PEM files: the
terminator needs no control plane to run, and no key is in any of these texts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.translate.clusters import RESTART_BACKOFF_MS, RESTART_CONNECT_ATTEMPTS

BOOTSTRAP = "envoy.json"
LDS = "lds/lds.json"
CDS = "cds/cds.json"
SDS_SERVER = "sds/server.json"
SDS_CA = "sds/ca.json"
SERVER_SECRET = "hop-server"
CA_SECRET = "hop-ca"
LISTENER = "tenant-hop"

_TLS = "envoy.transport_sockets.tls"
_TYPES = "type.googleapis.com/"
ACCESS_FORMAT = ("[%START_TIME%] %DOWNSTREAM_PEER_URI_SAN% serial=%DOWNSTREAM_PEER_SERIAL% "
                 "cert_end=%DOWNSTREAM_PEER_CERT_V_END% from %DOWNSTREAM_REMOTE_ADDRESS% "
                 "sni=%REQUESTED_SERVER_NAME% up=%BYTES_RECEIVED% down=%BYTES_SENT% "
                 "ms=%DURATION%\n")


@dataclass(frozen=True, slots=True)
class TerminatorTenant:
    """One tenant's chain: the SNI that picks it, the URI prefix it admits, and the
    loopback port of its unbound."""

    sni: str
    uri_prefix: str
    resolver_port: int


@dataclass(frozen=True, slots=True)
class TerminatorFiles:
    """Where the terminator's files live (absolute paths) and what it listens on."""

    directory: str
    listen_host: str
    port: int
    ca_file: str  # the hop CA (PEM)
    cert_file: str  # the terminator's server certificate (PEM)
    key_file: str  # its key (PEM); named, never inlined
    max_connection_seconds: int = 3600

    def path(self, relative: str) -> str:
        return f"{self.directory}/{relative}"


def _any(type_name: str, **fields: Any) -> dict[str, Any]:
    return {"@type": _TYPES + type_name, **fields}


def _file_source(files: TerminatorFiles, relative: str) -> dict[str, Any]:
    path = files.path(relative)
    return {"path_config_source": {"path": path,
                                   "watched_directory": {"path": path.rsplit("/", 1)[0]}},
            "resource_api_version": "V3"}


def _cluster_name(tenant: str) -> str:
    return f"resolver:{tenant}"


def _chain(tenant: str, spec: TerminatorTenant, files: TerminatorFiles) -> dict[str, Any]:
    tls = _any("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
               require_client_certificate=True,
               disable_stateless_session_resumption=True,
               disable_stateful_session_resumption=True,
               common_tls_context={
                   "tls_params": {"tls_minimum_protocol_version": "TLSv1_3",
                                  "tls_maximum_protocol_version": "TLSv1_3"},
                   "tls_certificate_sds_secret_configs": [
                       {"name": SERVER_SECRET, "sds_config": _file_source(files, SDS_SERVER)}],
                   "combined_validation_context": {
                       "default_validation_context": {"match_typed_subject_alt_names": [
                           {"san_type": "URI", "matcher": {"prefix": spec.uri_prefix}}]},
                       "validation_context_sds_secret_config": {
                           "name": CA_SECRET, "sds_config": _file_source(files, SDS_CA)}}})
    access_log = [{"name": "envoy.access_loggers.file", "typed_config": _any(
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        path=files.path("access.log"),
        log_format={"text_format_source": {"inline_string": ACCESS_FORMAT}})}]
    proxy = _any("envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                 stat_prefix=f"hop_{spec.sni.split('.', 1)[0]}", cluster=_cluster_name(tenant),
                 max_downstream_connection_duration=f"{files.max_connection_seconds}s",
                 # a resolver being restarted on its own port (clusters.RESTART_*)
                 max_connect_attempts=RESTART_CONNECT_ATTEMPTS,
                 backoff_options={"base_interval": f"{RESTART_BACKOFF_MS[0] / 1000}s",
                                  "max_interval": f"{RESTART_BACKOFF_MS[1] / 1000}s"},
                 access_log=access_log)
    return {"name": f"tenant:{tenant}",
            "filter_chain_match": {"server_names": [spec.sni]},
            "transport_socket": {"name": _TLS, "typed_config": tls},
            "filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": proxy}]}


def _cluster(tenant: str, spec: TerminatorTenant) -> dict[str, Any]:
    name = _cluster_name(tenant)
    return _any("envoy.config.cluster.v3.Cluster", name=name, type="STATIC",
                connect_timeout="1s",
                load_assignment={"cluster_name": name, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address": {
                        "address": "127.0.0.1", "port_value": spec.resolver_port}}}}]}]})


def _secret(name: str, **fields: Any) -> dict[str, Any]:
    return {"resources": [_any("envoy.extensions.transport_sockets.tls.v3.Secret", name=name,
                               **fields)]}


def _text(body: Mapping[str, Any]) -> str:
    return json.dumps(body, indent=1, sort_keys=True) + "\n"


def terminator_files(tenants: Mapping[str, TerminatorTenant], files: TerminatorFiles
                     ) -> dict[str, str]:
    """Every file of the terminator, by path relative to its directory. With no tenant the
    LDS file has no listener (a listener needs a filter chain), so nothing is bound."""
    order = sorted(tenants)
    listeners = []
    if order:
        listeners.append(_any(
            "envoy.config.listener.v3.Listener", name=LISTENER,
            address={"socket_address": {"address": files.listen_host, "port_value": files.port}},
            listener_filters=[{"name": "envoy.filters.listener.tls_inspector",
                               "typed_config": _any("envoy.extensions.filters.listener."
                                                    "tls_inspector.v3.TlsInspector")}],
            filter_chains=[_chain(t, tenants[t], files) for t in order]))
    bootstrap = {
        "node": {"id": "tenant-hop-terminator", "cluster": "dns-controlplane"},
        "dynamic_resources": {"lds_config": _file_source(files, LDS),
                              "cds_config": _file_source(files, CDS)},
    }
    return {
        BOOTSTRAP: _text(bootstrap),
        SDS_SERVER: _text(_secret(SERVER_SECRET, tls_certificate={
            "certificate_chain": {"filename": files.cert_file},
            "private_key": {"filename": files.key_file}})),
        SDS_CA: _text(_secret(CA_SECRET, validation_context={
            "trusted_ca": {"filename": files.ca_file}})),
        CDS: _text({"resources": [_cluster(t, tenants[t]) for t in order]}),
        LDS: _text({"resources": listeners}),
    }
