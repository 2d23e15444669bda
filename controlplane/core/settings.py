"""Settings, passed in as one frozen dataclass; nothing is read at import time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controlplane.core.model import KINDS

TOKEN_DIR = "/var/run/secrets/dns-controlplane"  # the projected ServiceAccount token
TOKEN_PATH = f"{TOKEN_DIR}/token"


@dataclass(frozen=True, slots=True)
class InjectionConfig:
    """Everything the webhook needs to build a sidecar; ``controlplane serve`` fills it."""

    mode: str = "native"  # "native" (Kubernetes >= 1.29) or "legacy"
    image: str = "envoyproxy/envoy:v1.40.0"
    xds_address: str = "dns-controlplane.dns-system.svc.cluster.local:18000"
    xds_ca: str = ""  # PEM the sidecar verifies ADS with (inline); "" for plaintext ADS
    xds_server_name: str = ""  # the DNS SAN of the ADS certificate; "" for the xDS host
    cluster_dns: str = ""  # IP[:port] the sidecar resolves a named xds_address with
    zone: str = "cluster.local"
    own_namespace: str = "dns-system"  # the control plane's: never injected
    excluded_namespaces: tuple[str, ...] = ("kube-system",)
    dns_address: str = "127.0.0.1:53"  # the pod's nameserver; must be port 53
    admin_address: str = "127.0.0.1:15000"
    stats_address: str = "0.0.0.0:15090"
    hop_address: str = "127.0.0.1:15054"
    run_as_user: int = 101  # the envoy user of the envoyproxy/envoy image
    cpu_request: str = "10m"
    memory_request: str = "72Mi"  # measured: 66 MB RSS, 1 worker, a small view
    memory_limit: str = "256Mi"
    concurrency: int = 1  # Envoy worker threads: one answers ~45,000 queries/s
    delta: bool = False
    token_path: str = TOKEN_PATH


class DefaultView(StrEnum):
    """What an Envoy that no DnsPolicy selects gets."""

    DENY = "deny"  # an empty table and no forwarding: every query gets NXDOMAIN
    CLUSTER = "cluster"  # every cluster name, forwarding to the default upstream if set


@dataclass(frozen=True, slots=True)
class Settings:
    zone: str = "cluster.local"
    answer_ttl_seconds: int = 30  # Envoy's minimum (facts #13)
    default_upstream: str = ""  # "IP[:port]" used when a policy names no server
    default_view: DefaultView = DefaultView.DENY
    xds_host: str = "127.0.0.1"
    xds_port: int = 18000
    admin_host: str = "127.0.0.1"
    admin_port: int = 18080
    debounce_seconds: float = 0.05
    resolver_timeout_seconds: float = 2.0
    # TTL of local answers per kind of name (service, headless, externalname, serviceentry).
    ttl_by_kind: Mapping[str, int] = field(default_factory=dict)
    max_answers: int = 8  # Envoy answers at most 8 records, 512 bytes, and never sets TC
    aaaa_mapped: bool = True  # answer AAAA of IPv4-only names with ::ffff:a.b.c.d
    vip_range: str = ""  # CIDR for ServiceEntry VIP auto-allocation; "" turns it off
    fault_invalid_names: frozenset[str] = frozenset()  # test-only: see faults.py
    # Tenant resolvers behind forwarding views: "local" (unbound processes the control
    # plane starts and supervises) or "none" (forwarding views forward nothing).
    tenant_resolvers: str = "local"
    resolver_dir: str = ""  # where their files live; "" for a temporary directory
    resolver_listen_host: str = "127.0.0.1"
    resolver_advertise_host: str = ""  # how sidecars reach them; "" for the listen address
    resolver_allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may query them
    resolver_hop: str = "udp"  # "tls": the sidecars reach their resolver over DNS over TLS
    resolver_tls_dir: str = ""  # ca.crt, tls.crt, tls.key for the hop; made when absent
    upstream_ca_bundle: str = ""
    # TLS to policy servers: a default CA bundle and a client certificate (files, PEM).
    policy_server_ca: str = ""
    policy_server_client_cert: str = ""
    policy_server_client_key: str = ""  # CA bundle for DoT/DoH when a policy gives none
    auth_tokens: str = ""  # path of the token file; "" with insecure=True for local use
    insecure: bool = False
    # Sidecars in Kubernetes prove their pod with its projected ServiceAccount token,
    # checked with TokenReview for these audiences (tokenreview.py); with auth_tokens too.
    auth_tokenreview: bool = False
    auth_audiences: tuple[str, ...] = ("dns-controlplane",)
    auth_cache_ttl: float = 60.0  # seconds a successful review is reused
    # On SIGTERM: stop accepting ADS streams, then end the open ones over this many
    # seconds (random moments), so sidecars move to another replica without a storm.
    drain_seconds: float = 2.0
    # ADS transport: TLS with tls.crt/tls.key from this directory (reloaded when they
    # change, see tlsfiles.py), or plaintext only when xds_plaintext says so.
    xds_tls_dir: str = ""
    xds_plaintext: bool = False
    # Admin API in a cluster: "kubernetes" (TokenReview + SubjectAccessReview, see
    # admin_auth.py) or "none" (local runs).
    admin_auth: str = "none"
    admin_auth_audiences: tuple[str, ...] = ()  # TokenReview audiences; () for the API's
    admin_tls_dir: str = ""  # HTTPS for the admin API (tls.crt, tls.key, reloaded); "" HTTP
    # The sidecar-injection webhook (webhook.py, admission.py): off while webhook_port is 0.
    webhook_host: str = "0.0.0.0"
    webhook_port: int = 0
    webhook_cert_dir: str = ""  # tls.crt, tls.key; made there when absent ("" = a temp dir)
    webhook_server_name: str = ""  # the name a made certificate is for (the Service's)
    injection: InjectionConfig = field(default_factory=InjectionConfig)  # what it injects
    # Sidecars that stream their DNS counters (stats_sink.py): one silent this long is
    # dropped (its counts stay in its tenant's totals); its rates stop counting sooner.
    stats_max_age_seconds: float = 60.0

    def ttl(self, kind: str) -> int:
        return self.ttl_by_kind.get(kind, self.answer_ttl_seconds)

    def ttls(self) -> dict[str, int]:
        return {k: self.ttl(k) for k in KINDS}
