"""Settings, passed in as one frozen ``Settings`` made of small groups; nothing is read at
import time.

Each group is a frozen dataclass whose fields are ``controlplane serve``'s flags (the CLI
takes its defaults from here) and which checks its own values when it is made, raising
``ConfigError`` with the flag and the reason. Rules about which flags go together (an
explicit choice of ADS transport or client authentication, files that must exist) are
the command line's, in ``cli/serve_settings.py``; a group only refuses values that
cannot work.

- ``DnsSettings``: the zone, TTLs, the default view and what the tables answer.
- ``XdsSettings``: where ADS listens, its transport, the debounce and the drain.
- ``AdminSettings``: where the admin API listens and who may use it.
- ``ResolverSettings``: the tenant resolvers forwarding views forward to.
- ``PolicyServerSettings``: TLS to the external policy servers.
- ``AuthSettings``: how ADS clients (sidecars) prove their namespace.
- ``WebhookSettings`` with ``InjectionConfig``: the sidecar-injection webhook.
- ``StatsSettings``: the DNS counters the sidecars stream.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from controlplane.core.errors import ConfigError
from controlplane.core.hop_peers import HopPeers
from controlplane.core.model import KINDS

TOKEN_DIR = "/var/run/secrets/dns-controlplane"  # the projected ServiceAccount token
TOKEN_PATH = f"{TOKEN_DIR}/token"
MIN_TTL = 30  # Envoy's minimum TTL for its DNS table (facts #13)
MAX_ANSWERS = 8  # Envoy answers at most 8 records, 512 bytes, and never sets TC
VIP_RANGE = "240.240.0.0/16"  # what --auto-allocate-vips allocates from unless told


class DefaultView(StrEnum):
    """What an Envoy that no DnsPolicy selects gets."""

    DENY = "deny"  # an empty table and no forwarding: every query gets NXDOMAIN
    CLUSTER = "cluster"  # every cluster name, forwarding to the default upstream if set


class Role(StrEnum):
    """What one ``controlplane serve`` process does (docs/kubernetes.md, "Resolvers in pods
    of their own")."""

    # ADS, the sidecars' stats and query log, the webhook, status writes, and the tenant
    # resolvers (unless --tenant-resolvers none)
    CONTROLPLANE = "controlplane"
    # Only the tenant resolvers and their hop terminator, built from the same source: no
    # gRPC server, no webhook, no status writes. Pods of their own keep forwarded names
    # answering while every control-plane pod is gone.
    RESOLVERS = "resolvers"


class ResolverMode(StrEnum):
    """Who answers what forwarding views forward."""

    LOCAL = "local"  # one unbound per forwarding tenant, started and supervised here
    NONE = "none"  # no tenant resolvers: forwarding views forward nothing


class ResolverLifetime(StrEnum):
    """Whether the tenant resolvers outlive the control plane's process."""

    PROCESS = "process"  # they die with it, even on SIGKILL (a temporary directory's only choice)
    PERSISTENT = "persistent"  # they keep serving; the next control plane on the dir adopts them


class ResolverTableUpdates(StrEnum):
    """How a change of a tenant's table reaches its resolver (docs/resolver-zone-updates.md)."""

    RELOAD = "reload"  # the zone file rewritten, then auth_zone_reload (unbound reads it all)
    IXFR = "ixfr"  # the difference by IXFR from the control plane's loopback primary


class ResolverHop(StrEnum):
    """How a sidecar reaches its tenant resolver."""

    UDP = "udp"  # plain DNS (loopback or a trusted network)
    TLS = "tls"  # DNS over TLS, the resolver's certificate verified by Envoy
    # DNS over mutual TLS to a terminator in front of the resolvers: the sidecar presents
    # its tenant's client certificate; the resolvers listen on loopback only.
    MTLS = "mtls"


class ResolverAaaa(StrEnum):
    """What the tenant resolver answers to AAAA of an IPv4-only name."""

    NODATA = "nodata"  # NOERROR with no records, as DNS says (sidecars with a DNS front)
    # An IPv4-mapped ::ffff:a.b.c.d (DNS64): for sidecars whose Envoy forwards itself,
    # which turns NODATA into NXDOMAIN (fact 18) and musl into a failed lookup.
    MAPPED = "mapped"


class AdminAuthMode(StrEnum):
    """Who may use the admin API."""

    NONE = "none"  # anyone who reaches it (local runs)
    KUBERNETES = "kubernetes"  # bearer tokens, TokenReview and SubjectAccessReview


class SidecarMode(StrEnum):
    """How the webhook adds the sidecar to a pod."""

    NATIVE = "native"  # an init container with restartPolicy Always (Kubernetes >= 1.29)
    LEGACY = "legacy"  # the first ordinary container


def _port(flag: str, port: int, *, allow_zero: bool = True) -> None:
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ConfigError(flag=flag, reason=f"port {port} is not 1-65535")


def check_cidr(flag: str, text: str) -> None:
    """Raise ConfigError unless ``text`` is a CIDR (host bits allowed)."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConfigError(flag=flag, reason=f"{text!r} is not a CIDR") from None


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """What the tables answer and what the views forward to."""

    zone: str = "cluster.local"  # the cluster DNS zone, lower case, no trailing dot
    answer_ttl_seconds: int = MIN_TTL  # TTL of local answers, Envoy's minimum at least
    # TTL of local answers per kind of name (service, headless, externalname,
    # serviceentry, pod); the kinds not named get answer_ttl_seconds.
    ttl_by_kind: Mapping[str, int] = field(default_factory=dict)
    default_upstream: str = ""  # "IP[:port]" or a Service name, when a policy names none
    default_view: DefaultView = DefaultView.DENY  # for Envoys no DnsPolicy selects
    max_answers: int = MAX_ANSWERS  # addresses per family and name
    aaaa_mapped: bool = True  # answer AAAA of IPv4-only names with ::ffff:a.b.c.d
    vip_range: str = ""  # CIDR for ServiceEntry VIP auto-allocation; "" turns it off

    def __post_init__(self) -> None:
        if self.answer_ttl_seconds < MIN_TTL:
            raise ConfigError(flag="--answer-ttl",
                              reason=f"must be at least {MIN_TTL} (Envoy's minimum)")
        for kind, ttl in self.ttl_by_kind.items():
            if kind not in KINDS or ttl < MIN_TTL:
                raise ConfigError(flag="--ttl", reason=f"{kind}={ttl}: the kind is one of "
                                  f"{', '.join(KINDS)} and the TTL at least {MIN_TTL}")
        if not 1 <= self.max_answers <= MAX_ANSWERS:
            raise ConfigError(flag="--max-answers", reason=f"is between 1 and {MAX_ANSWERS}")
        if self.vip_range:
            check_cidr("--vip-range", self.vip_range)

    def ttl(self, kind: str) -> int:
        return self.ttl_by_kind.get(kind, self.answer_ttl_seconds)

    def ttls(self) -> dict[str, int]:
        return {k: self.ttl(k) for k in KINDS}


@dataclass(frozen=True, slots=True)
class XdsSettings:
    """The ADS server."""

    host: str = "127.0.0.1"  # where ADS listens
    port: int = 18000  # 0: any free port
    # TLS with tls.crt/tls.key from this directory (reloaded when they change, see
    # identity/tlsfiles.py); "" serves plaintext, which the CLI wants asked for.
    tls_dir: str = ""
    plaintext: bool = False  # set by the CLI when ADS is served without TLS
    debounce_seconds: float = 0.05  # at most one rebuild per window (runtime/debounce.py)
    # On SIGTERM: stop accepting ADS streams, then end the open ones over this many
    # seconds (random moments), so sidecars move to another replica without a storm.
    drain_seconds: float = 2.0
    # A pair new to a tenant's view enters its DNS front's set this long after the table
    # that answers it is sent (> the front's 1 s poll; docs/dns-front.md, hub/front_sets.py).
    front_settle_seconds: float = 2.5
    # A fronted sidecar's Envoy holds at most this many entries of a view that has a
    # resolver: those of the tenant's own namespaces; the resolver answers the rest
    # (docs/wide-tenants.md, translate/envoy_part.py). 0: the whole table.
    front_table_limit: int = 2000

    def __post_init__(self) -> None:
        _port("--xds-address", self.port)
        if self.front_settle_seconds < 0:
            raise ConfigError("the DNS front's settle time must not be negative")
        if self.front_table_limit < 0:
            raise ConfigError(flag="--front-table-limit", reason="must not be negative")
        if self.tls_dir and self.plaintext:
            raise ConfigError(flag="--xds-tls-dir",
                              reason="--xds-tls-dir and --xds-plaintext exclude each other")
        if self.debounce_seconds < 0:
            raise ConfigError(flag="--debounce", reason="must not be negative")
        if self.drain_seconds < 0:
            raise ConfigError(flag="--drain-seconds", reason="must not be negative")


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin API (and the console on it)."""

    host: str = "127.0.0.1"  # where the admin API (and the console) listens
    port: int = 18080  # 0: any free port
    # Who may use it: KUBERNETES checks bearer tokens with TokenReview and
    # SubjectAccessReview (identity/admin_auth.py); NONE is for local runs.
    auth: AdminAuthMode = AdminAuthMode.NONE
    auth_audiences: tuple[str, ...] = ()  # TokenReview audiences; () for the API server's
    tls_dir: str = ""  # HTTPS with tls.crt, tls.key from here (reloaded); "" for HTTP

    def __post_init__(self) -> None:
        _port("--admin-address", self.port)


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """The tenant resolvers behind forwarding views."""

    mode: ResolverMode = ResolverMode.LOCAL
    dir: str = ""  # where their files live; "" for a temporary directory
    lifetime: ResolverLifetime = ResolverLifetime.PROCESS  # persistent needs dir
    table_updates: ResolverTableUpdates = ResolverTableUpdates.IXFR  # how a change arrives
    listen_host: str = "127.0.0.1"  # the address they listen on
    advertise_host: str = ""  # how sidecars reach them; "" for the listen address
    host_spool: str = ""  # started by `controlplane resolver-host` on this spool directory
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # who may query them
    hop: ResolverHop = ResolverHop.UDP  # how sidecars reach them
    aaaa: ResolverAaaa = ResolverAaaa.NODATA  # AAAA of IPv4-only names (docs/dns-front.md)
    tls_dir: str = ""  # ca.crt, tls.crt, tls.key (+ ca.key for mtls); made when absent
    hop_port: int = 10853  # the mutual hop's terminator port (one for every tenant)
    # Every replica's terminator, listed in each sidecar's hop cluster (mtls only).
    hop_peers: HopPeers = field(default_factory=HopPeers)
    hop_cert_lifetime_seconds: int = 12 * 3600  # a tenant's client certificate; renewed at half
    timeout_seconds: float = 2.0  # how long a sidecar waits for its resolver
    upstream_ca_bundle: str = ""  # CA bundle for DoT/DoH when a policy gives none

    def __post_init__(self) -> None:
        if self.listen_host in ("0.0.0.0", "::") and not self.advertise_host:
            raise ConfigError(flag="--resolver-listen",
                              reason=f"{self.listen_host} needs --resolver-advertise IP "
                              "(the address sidecars forward to)")
        if self.timeout_seconds <= 0:
            raise ConfigError("the tenant resolvers' timeout must be positive")
        _port("--resolver-hop-port", self.hop_port, allow_zero=False)
        if self.hop_cert_lifetime_seconds < 600:
            raise ConfigError(flag="--hop-cert-lifetime", reason="must be at least 10m")
        if self.host_spool and self.lifetime is not ResolverLifetime.PERSISTENT:
            raise ConfigError(flag="--resolver-host-spool",
                              reason="needs --resolver-lifetime persistent (the resolver "
                              "host's processes are not the control plane's children)")
        if self.hop_peers.given and self.hop is not ResolverHop.MTLS:
            raise ConfigError(flag="--resolver-hop-peers", reason=(
                f"needs --resolver-hop mtls (not {self.hop.value}): only the mutual hop's "
                "terminators share one port and admit every tenant on every replica; with "
                "--resolver-hop udp or tls each replica's resolvers have ports of their own"))
        if self.lifetime is ResolverLifetime.PERSISTENT and not self.dir:
            raise ConfigError(flag="--resolver-lifetime",
                              reason="persistent needs --resolver-dir (a temporary directory "
                              "cannot be found again by the next control plane)")


@dataclass(frozen=True, slots=True)
class PolicyServerSettings:
    """TLS to the external policy servers (files, PEM)."""

    ca: str = ""  # CA bundle for servers whose policy gives no caBundle ("": the system's)
    client_cert: str = ""  # client certificate chain presented to TLS policy servers
    client_key: str = ""  # its key; given together with client_cert

    def __post_init__(self) -> None:
        if bool(self.client_cert) != bool(self.client_key):
            raise ConfigError(flag="--policy-server-client-cert",
                              reason="goes with --policy-server-client-key: give both or "
                              "neither")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """How ADS clients prove the namespace they ask a view for."""

    tokens_file: str = ""  # token file binding bearer tokens to namespaces (VMs)
    insecure: bool = False  # accept any client (local use only)
    # Sidecars in Kubernetes prove their pod with its projected ServiceAccount token,
    # checked with TokenReview for these audiences (identity/tokenreview.py).
    tokenreview: bool = False
    audiences: tuple[str, ...] = ("dns-controlplane",)
    cache_ttl: float = 60.0  # seconds a successful review is reused
    # Per caller (a pod, a static token), on each channel (ADS, stats sink, query log):
    # calls open at once, and distinct node ids (identity/limits.py).
    max_streams: int = 16
    max_nodes: int = 16

    def __post_init__(self) -> None:
        if self.max_streams < 1:
            raise ConfigError(flag="--sidecar-max-streams", reason="must be at least 1")
        if self.max_nodes < 1:
            raise ConfigError(flag="--sidecar-max-nodes", reason="must be at least 1")
        if not self.audiences:
            raise ConfigError(flag="--auth-audience", reason="needs at least one audience")
        if self.cache_ttl < 0:
            raise ConfigError(flag="--auth-cache-ttl", reason="must not be negative")


@dataclass(frozen=True, slots=True)
class InjectionConfig:
    """Everything the webhook needs to build a sidecar; ``controlplane serve`` fills it.

    ``injection/sidecar.config_problem`` says whether it makes a working sidecar (the
    webhook is refused at start when it does not)."""

    mode: SidecarMode = SidecarMode.NATIVE
    image: str = "envoyproxy/envoy:v1.40.0"  # the sidecar's Envoy image
    # The control plane as the sidecars reach it (HOST:PORT; a name is resolved with
    # cluster_dns, since the pod's resolv.conf points at the sidecar itself).
    xds_address: str = "dns-controlplane.dns-system.svc.cluster.local:18000"
    xds_ca: str = ""  # PEM the sidecar verifies ADS with (inline); "" for plaintext ADS
    xds_server_name: str = ""  # the DNS SAN of the ADS certificate; "" for the xDS host
    cluster_dns: str = ""  # IP[:port] the sidecar resolves a named xds_address with
    zone: str = "cluster.local"  # the cluster DNS zone, for the pod's search domains
    own_namespace: str = "dns-system"  # the control plane's: never injected
    excluded_namespaces: tuple[str, ...] = ("kube-system",)  # never injected either
    dns_address: str = "127.0.0.1:53"  # the pod's nameserver; must be port 53
    admin_address: str = "127.0.0.1:15000"  # Envoy's full admin interface, on loopback
    stats_address: str = "0.0.0.0:15090"  # the stats-only listener (/stats/prometheus)
    # where the sidecar listens for its resolver hop: not Envoy's DNS listener's address,
    # see injection/front.py HOP_ADDRESS
    hop_address: str = "127.0.0.2:15054"
    run_as_user: int = 101  # the envoy user of the envoyproxy/envoy image
    cpu_request: str = "10m"  # the sidecar container's resources
    memory_request: str = "72Mi"  # measured: 66 MB RSS, 1 worker, a small view
    memory_limit: str = "256Mi"  # room for large views
    concurrency: int = 1  # Envoy worker threads: one answers ~45,000 queries/s
    delta: bool = False  # incremental xDS (DELTA_GRPC) instead of state of the world
    token_path: str = TOKEN_PATH  # the projected token the sidecar proves its pod with
    # The DNS front (kresd, docs/dns-front.md): a second container answering on
    # dns_address, UDP and TCP, in front of Envoy's DNS listener (envoy_dns_address).
    # False: Envoy's DNS listener on dns_address, as before the front.
    front: bool = True
    front_image: str = "dns-front:0.1.0"  # deploy/images/dns-front/Dockerfile
    envoy_dns_address: str = "127.0.0.1:15053"  # Envoy's DNS listener behind the front
    set_address: str = "127.0.0.1:15055"  # Envoy's loopback set listener the front polls
    front_run_as_user: int = 65532  # the dns-front image's user
    front_cpu_request: str = "10m"
    front_memory_request: str = "24Mi"  # measured: 14-15 MiB private with a small set
    front_memory_limit: str = "128Mi"  # a 100k-pair set: 45-51 MiB, plus the 8 MiB cache


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """The sidecar-injection webhook (injection/webhook.py): off while ``port`` is 0."""

    host: str = "0.0.0.0"  # where POST /inject listens
    port: int = 0  # 0: no webhook
    cert_dir: str = ""  # tls.crt, tls.key; made there when absent ("" = a temp dir)
    server_name: str = ""  # the name a made certificate is for (the Service's)
    injection: InjectionConfig = field(default_factory=InjectionConfig)  # what it injects
    # Who the injection log trusts (injection/caller.py): the API server's user name as a
    # client certificate's CN or a TokenReview'd token's user; none: every entry unverified.
    client_ca: str = ""  # PEM file: ask for client certificates and verify them with it
    caller_tokenreview: bool = False  # review bearer tokens with TokenReview
    caller_users: tuple[str, ...] = ()
    caller_audiences: tuple[str, ...] = ()  # for the token reviews; () = the API server's

    def __post_init__(self) -> None:
        _port("--webhook-address", self.port)
        proofs = [flag for flag, on in (("--webhook-client-ca", self.client_ca),
                                        ("--webhook-caller-tokenreview",
                                         self.caller_tokenreview)) if on]
        if proofs and not self.caller_users:
            raise ConfigError(flag=proofs[0], reason="needs --webhook-caller-user NAME, the "
                              "API server's user name (its certificate's CN, its token's "
                              "user): otherwise any certificate of that CA, or any valid "
                              "token (every pod has one), would count as the API server")
        if self.caller_users and not proofs:
            raise ConfigError(flag="--webhook-caller-user", reason="names whom to trust, "
                              "not how to prove it: add --webhook-client-ca FILE and/or "
                              "--webhook-caller-tokenreview")
        if self.caller_audiences and not self.caller_tokenreview:
            raise ConfigError(flag="--webhook-caller-audience", reason="is for token reviews: "
                              "add --webhook-caller-tokenreview")

    @property
    def enabled(self) -> bool:
        return self.port != 0


@dataclass(frozen=True, slots=True)
class StatsSettings:
    """The DNS counters sidecars stream (telemetry/stats_sink.py)."""

    # A sidecar silent this long is dropped (its counts stay in its tenant's totals);
    # its rates stop counting sooner.
    max_age_seconds: float = 60.0
    # Where the console's traffic history is kept across restarts ("": memory only).
    history_file: str = ""

    def __post_init__(self) -> None:
        if self.max_age_seconds <= 0:
            raise ConfigError(flag="--sidecar-stats-max-age", reason="must be positive")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``controlplane serve`` runs with, by group."""

    dns: DnsSettings = field(default_factory=DnsSettings)  # what the views answer
    xds: XdsSettings = field(default_factory=XdsSettings)  # the ADS server
    admin: AdminSettings = field(default_factory=AdminSettings)  # the admin API
    resolvers: ResolverSettings = field(default_factory=ResolverSettings)  # tenant resolvers
    # TLS to the external policy servers
    policy_server: PolicyServerSettings = field(default_factory=PolicyServerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)  # who may stream ADS
    webhook: WebhookSettings = field(default_factory=WebhookSettings)  # sidecar injection
    stats: StatsSettings = field(default_factory=StatsSettings)  # sidecars' DNS counters
    role: Role = Role.CONTROLPLANE  # everything, or only the tenant resolvers
    fault_invalid_names: frozenset[str] = frozenset()  # test-only: see translate/faults.py
    fault_crash_tasks: frozenset[str] = frozenset()  # test-only: see runtime/supervise.py
