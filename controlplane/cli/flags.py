"""The command line's parser, one small function per group of flags.

Every default comes from the settings dataclasses (``core/settings.py``), the lease
timings and the sidecar bootstrap, so a default lives in one place. Parsing only
converts text; whether the values work together is checked by ``cli/serve_settings.py``
and the settings groups, which raise ``ConfigError`` with the flag.
"""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path
from typing import NoReturn

from controlplane.core.errors import BadAddress, ConfigError
from controlplane.core.names import split_host_port
from controlplane.core.settings import (
    VIP_RANGE,
    AdminAuthMode,
    AdminSettings,
    AuthSettings,
    DefaultView,
    DnsSettings,
    InjectionConfig,
    PolicyServerSettings,
    ResolverAaaa,
    ResolverHop,
    ResolverLifetime,
    ResolverMode,
    ResolverSettings,
    ResolverTableUpdates,
    Role,
    SidecarMode,
    StatsSettings,
    WebhookSettings,
    XdsSettings,
)
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.injection.front import FrontAddresses
from controlplane.kube.leadership import LeaseTimings

DEFAULT_LEASE = "dns-system/dns-controlplane-status"
WATCH_TIMEOUT = 60  # seconds before a Kubernetes watch is renewed
STATUS_INTERVAL = 1.0  # minimum seconds between status writes of one policy
CERT_DAYS = 90


def _address(text: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(text, 0)
    except BadAddress:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT") from None
    if port == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, port


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def _choices(enum: type[ResolverMode | ResolverHop | ResolverAaaa | ResolverLifetime
                        | ResolverTableUpdates | AdminAuthMode
                        | SidecarMode | DefaultView | Role]) -> list[str]:
    return [member.value for member in enum]


_ARGUMENT = re.compile(r"^argument (?P<flags>[^:]+): (?P<reason>.*)$", re.S)


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``ConfigError`` instead of printing usage and exiting, so a
    malformed value, an unknown flag or a missing one reads like every other error:
    ``controlplane: error: --flag: reason`` (``main`` prints it; ``--help`` still works)."""

    def error(self, message: str) -> NoReturn:
        found = _ARGUMENT.match(message)
        if found is None:  # "unrecognized arguments: ...", "the following ... required"
            raise ConfigError(f"{message} (see {self.prog} --help)")
        flag = found["flags"].split("/")[0]
        raise ConfigError(f"{found['reason']} (see {self.prog} --help)", flag=flag)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="controlplane",
                                     description="Command line: ``controlplane serve`` and "
                                     "``controlplane bootstrap``.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the control plane")
    serve.add_argument("--source", required=True,
                       help="a directory of manifests (watched), or 'kubernetes'")
    serve.add_argument("--role", choices=_choices(Role), default=Role.CONTROLPLANE.value,
                       help="controlplane: ADS, the sidecars' channels, the webhook, status "
                            "writes and the tenant resolvers; resolvers: only the tenant "
                            "resolvers and their hop terminator, from the same source, in "
                            "pods of their own that outlive the control plane's "
                            "(docs/kubernetes.md; default %(default)s)")
    _dns_flags(serve)
    _xds_flags(serve)
    _resolver_flags(serve.add_argument_group(
        "tenant resolvers (what forwarding views forward to)"))
    _auth_flags(serve)
    _transport_flags(serve.add_argument_group("ADS transport (one of them is required)"))
    _admin_flags(serve.add_argument_group("admin API access"))
    _webhook_flags(serve.add_argument_group("sidecar injection webhook (docs/injection.md)"))
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--fault-invalid-name", action="append", default=[],
                       help=argparse.SUPPRESS)  # test-only, see controlplane/translate/faults.py
    serve.add_argument("--fault-crash-task", action="append", default=[],
                       help=argparse.SUPPRESS)  # test-only, see controlplane/runtime/supervise.py
    _kube_flags(serve.add_argument_group("Kubernetes source (--source kubernetes)"))
    _leader_flags(serve.add_argument_group(
        "replicas (--source kubernetes): every replica serves ADS; the holder of a "
        "coordination.k8s.io Lease writes status"))
    _bootstrap_parser(sub)
    _sidecar_parser(sub)
    _certs_parser(sub)
    host = sub.add_parser("resolver-host", help="start tenant resolvers for a control plane "
                          "(serve --resolver-host-spool) and keep them running when it dies")
    host.add_argument("--spool", required=True, type=Path, metavar="DIR",
                      help="the spool directory both mount (serve --resolver-host-spool)")
    return parser


def _dns_flags(serve: argparse.ArgumentParser) -> None:
    d = DnsSettings()
    serve.add_argument("--zone", default=d.zone, help="cluster DNS zone")
    serve.add_argument("--answer-ttl", type=int, default=d.answer_ttl_seconds,
                       help="TTL of local answers in seconds (Envoy's minimum is 30)")
    serve.add_argument("--ttl", type=_label, action="append", default=[], metavar="KIND=SECONDS",
                       help="TTL for one kind of name: service, headless, externalname, "
                       "serviceentry, pod (repeatable; at least 30)")
    serve.add_argument("--max-answers", type=int, default=d.max_answers,
                       help="addresses per family and name (Envoy answers at most 8)")
    serve.add_argument("--no-aaaa-mapped", action="store_true",
                       help="answer AAAA of IPv4-only names with NXDOMAIN (Envoy's default) "
                       "instead of IPv4-mapped addresses")
    serve.add_argument("--auto-allocate-vips", action="store_true",
                       help="give ServiceEntries without addresses a VIP from --vip-range")
    serve.add_argument("--vip-range", default=VIP_RANGE,
                       help="CIDR for --auto-allocate-vips (default %(default)s)")
    serve.add_argument("--default-upstream", default=d.default_upstream,
                       help="IP[:port] (or a Service name) for policies that name no server")
    serve.add_argument("--default-view", choices=_choices(DefaultView),
                       default=d.default_view.value,
                       help="what Envoys that no DnsPolicy selects get (default: %(default)s)")


def _xds_flags(serve: argparse.ArgumentParser) -> None:
    x, a, s = XdsSettings(), AdminSettings(), StatsSettings()
    serve.add_argument("--xds-address", type=_address, default=(x.host, x.port),
                       help=f"where ADS listens (default {x.host}:{x.port})")
    serve.add_argument("--admin-address", type=_address, default=(a.host, a.port),
                       help=f"where the admin API listens (default {a.host}:{a.port})")
    serve.add_argument("--debounce", type=float, default=x.debounce_seconds,
                       help="seconds to coalesce input changes: the first change after quiet "
                            "applies at once, later ones at most once per this window "
                            "(default %(default)s)")
    serve.add_argument("--drain-seconds", type=float, default=x.drain_seconds,
                       help="on SIGTERM, end the open ADS streams over this many seconds so "
                            "the sidecars reconnect to another replica (default %(default)s)")
    serve.add_argument("--front-table-limit", type=int, default=x.front_table_limit,
                       metavar="ENTRIES",
                       help="a DNS-fronted sidecar's Envoy holds at most this many names of "
                            "a tenant with a resolver, those of the tenant's own namespaces; "
                            "its resolver answers the rest (0: the whole table in every "
                            "sidecar; default %(default)s)")
    serve.add_argument("--traffic-history", default=s.history_file, metavar="FILE",
                       help="keep the console's traffic history (the last hour of each "
                            "tenant's rates) in this file, written every 30 s and at stop, "
                            "read at start, so a restart keeps it (default: memory only)")
    serve.add_argument("--sidecar-stats-max-age", type=float, default=s.max_age_seconds,
                       metavar="SECONDS",
                       help="drop a sidecar whose DNS counters stopped arriving for this long "
                            "(its counts stay in its tenant's totals; default %(default)s)")


def _resolver_flags(res: argparse._ArgumentGroup) -> None:
    r, p = ResolverSettings(), PolicyServerSettings()
    res.add_argument("--tenant-resolvers", choices=_choices(ResolverMode), default=r.mode.value,
                     help="local: one unbound per forwarding tenant, started and supervised "
                          "by the control plane; none: forwarding views forward nothing")
    res.add_argument("--resolver-dir", default=r.dir,
                     help="directory for the resolvers' files (default: a temporary one)")
    res.add_argument("--resolver-lifetime", choices=_choices(ResolverLifetime),
                     default=r.lifetime.value,
                     help="process: the resolvers die with the control plane; persistent: "
                          "they keep answering while it is down, and the next control plane "
                          "on the same --resolver-dir adopts them (needs --resolver-dir)")
    res.add_argument("--resolver-table-updates", choices=_choices(ResolverTableUpdates),
                     default=r.table_updates.value,
                     help="how a change of a tenant's table reaches its resolver: reload "
                          "(the zone file rewritten and read again whole) or ixfr (the "
                          "difference, by IXFR from a loopback primary in the control plane; "
                          "docs/resolver-zone-updates.md)")
    res.add_argument("--resolver-host-spool", default=r.host_spool, metavar="DIR",
                     help="start the resolvers and the hop terminator through "
                          "`controlplane resolver-host --spool DIR` (another container of the "
                          "pod: they then outlive this one's container; needs --resolver-"
                          "lifetime persistent and a process namespace shared with it)")
    res.add_argument("--resolver-listen", default=r.listen_host,
                     help="address the tenant resolvers listen on")
    res.add_argument("--resolver-advertise", default=r.advertise_host,
                     help="address the sidecars use to reach the resolvers (default: "
                          "--resolver-listen; needed when that is 0.0.0.0)")
    res.add_argument("--resolver-allow", action="append", default=[], metavar="CIDR",
                     help="clients allowed to query the resolvers (default loopback)")
    res.add_argument("--resolver-hop", choices=_choices(ResolverHop), default=r.hop.value,
                     help="how sidecars reach their tenant resolver: plain UDP (on loopback "
                          "or a trusted network), DNS over TLS verified by Envoy, or mtls: "
                          "the sidecar also presents its tenant's client certificate to a "
                          "terminator in front of the resolvers, which listen on loopback "
                          "only (docs/resolver-isolation.md)")
    res.add_argument("--resolver-hop-port", type=int, default=r.hop_port,
                     help="the mutual hop's port (the terminator's, one for every tenant)")
    res.add_argument("--resolver-hop-peers", default="", metavar="PEERS",
                     help="every replica's hop terminator, listed in each sidecar's hop "
                          "cluster so that it keeps forwarding when a replica goes (needs "
                          "--resolver-hop mtls): a comma list of IP[:PORT] (port default "
                          "--resolver-hop-port), or service:NAMESPACE/NAME[:PORT_NAME], the "
                          "ready endpoints of that Service's port (default name dns-hop) "
                          "from its EndpointSlices; until one is known, the replica's own "
                          "terminator (default: none, the replica's own)")
    res.add_argument("--hop-cert-lifetime", default=f"{r.hop_cert_lifetime_seconds // 3600}h",
                     help="lifetime of a tenant's hop client certificate (e.g. 12h, 90m; at "
                          "least 10m); it is re-issued at half its life")
    res.add_argument("--resolver-aaaa", choices=_choices(ResolverAaaa), default=r.aaaa.value,
                     help="AAAA of an IPv4-only name: nodata (NOERROR, no records: what DNS "
                          "says; sidecars with a DNS front) or mapped (::ffff:a.b.c.d, for "
                          "sidecars without a front, whose Envoy turns NODATA into NXDOMAIN)")
    res.add_argument("--resolver-tls-dir", default=r.tls_dir,
                     help="ca.crt, tls.crt and tls.key for --resolver-hop tls, and ca.key "
                          "too for mtls (a Secret); "
                          "made there when absent (default: under --resolver-dir)")
    res.add_argument("--policy-server-ca", default=p.ca,
                     help="CA bundle (PEM) for policy servers whose policy gives no caBundle")
    res.add_argument("--policy-server-client-cert", default=p.client_cert,
                     help="client certificate chain (PEM) presented to TLS policy servers")
    res.add_argument("--policy-server-client-key", default=p.client_key,
                     help="the key of --policy-server-client-cert")
    res.add_argument("--upstream-ca-bundle", default=r.upstream_ca_bundle,
                     help="CA bundle (PEM) for DNS over TLS/HTTPS to tenant servers when a "
                          "policy has no protocol.caBundle (default: the system bundle)")


def _auth_flags(serve: argparse.ArgumentParser) -> None:
    a = AuthSettings()
    serve.add_argument("--auth-tokens", default=a.tokens_file,
                       help="token file binding bearer tokens to namespaces (see auth.py)")
    serve.add_argument("--auth-tokenreview", action="store_true",
                       help="accept pods' projected ServiceAccount tokens, checked with the "
                            "TokenReview API (--kubeconfig or in-cluster); the token's pod "
                            "gives the namespace and labels (see tokenreview.py); combinable "
                            "with --auth-tokens (VMs)")
    serve.add_argument("--auth-audience", action="append", default=[], metavar="AUD",
                       help="audience the sidecars' tokens must have (repeatable; default "
                            f"{', '.join(a.audiences)})")
    serve.add_argument("--auth-cache-ttl", type=float, default=a.cache_ttl, metavar="SECONDS",
                       help="reuse a successful TokenReview for this long, never past the "
                            "token's expiry (default %(default)s)")
    serve.add_argument("--sidecar-max-streams", type=int, default=a.max_streams, metavar="N",
                       help="calls one caller (a pod, a static token) may hold open on each "
                            "sidecar channel (ADS, stats sink, query log); more get "
                            "RESOURCE_EXHAUSTED (default %(default)s)")
    serve.add_argument("--sidecar-max-nodes", type=int, default=a.max_nodes, metavar="N",
                       help="distinct node ids one caller may speak for at once, per channel "
                            "(a pod's token: its own node only) (default %(default)s)")
    serve.add_argument("--insecure", action="store_true",
                       help="accept ADS clients without a token (local use only); implies "
                            "--xds-plaintext unless --xds-tls-dir is given")


def _transport_flags(tls: argparse._ArgumentGroup) -> None:
    tls.add_argument("--xds-tls-dir", default=XdsSettings().tls_dir,
                     help="serve ADS over TLS with tls.crt and tls.key from this directory "
                          "(a mounted Secret); reloaded when they change, no restart")
    tls.add_argument("--xds-plaintext", action="store_true",
                     help="serve ADS without TLS (local runs, or a trusted network)")


def _admin_flags(adm: argparse._ArgumentGroup) -> None:
    a = AdminSettings()
    adm.add_argument("--admin-auth", choices=_choices(AdminAuthMode), default=a.auth.value,
                     help="kubernetes: every request but /healthz and /readyz needs a bearer "
                          "token, checked with TokenReview and SubjectAccessReview "
                          "(nonResourceURLs, see deploy/rbac.yaml); none: open (local runs)")
    adm.add_argument("--admin-auth-audience", action="append", default=[], metavar="AUD",
                     help="audiences the admin API's tokens must have (repeatable; default "
                          "the API server's)")
    adm.add_argument("--admin-tls-dir", default=a.tls_dir,
                     help="serve the admin API over HTTPS with tls.crt and tls.key from this "
                          "directory (reloaded when they change), so bearer tokens never "
                          "cross the network in clear; default plain HTTP")


def _webhook_flags(hook: argparse._ArgumentGroup) -> None:
    w, i = WebhookSettings(), InjectionConfig()
    hook.add_argument("--webhook-address", type=_address, default=None, metavar="HOST:PORT",
                      help="serve POST https://HOST:PORT/inject (AdmissionReview v1); off "
                           "by default")
    hook.add_argument("--webhook-cert-dir", default=w.cert_dir,
                      help="tls.crt and tls.key of the webhook (a mounted Secret, reloaded "
                           "when it changes); a CA and a certificate are made there when "
                           "absent (default: a temporary directory)")
    hook.add_argument("--webhook-sidecar-mode", choices=_choices(SidecarMode),
                      default=i.mode.value,
                      help="native: an init container with restartPolicy Always (Kubernetes "
                           ">= 1.29); legacy: the first ordinary container")
    hook.add_argument("--webhook-sidecar-image", default=i.image)
    hook.add_argument("--webhook-sidecar-front", "--sidecar-front", choices=["on", "off"],
                      default="on" if i.front else "off",
                      help="on: a DNS front (kresd, --webhook-front-image) answers the pod's "
                           "queries over UDP and TCP in front of Envoy's DNS listener "
                           "(docs/dns-front.md); off: Envoy alone on the pod's DNS address "
                           "(default %(default)s)")
    hook.add_argument("--webhook-front-image", default=i.front_image,
                      help="the DNS front's image (deploy/images/dns-front/Dockerfile; "
                           "default %(default)s)")
    hook.add_argument("--webhook-xds-address", default="",
                      help="the control plane as the sidecars reach it (default "
                           "dns-controlplane.<namespace>.svc.<zone>:18000)")
    hook.add_argument("--webhook-xds-ca", default="", metavar="FILE",
                      help="CA bundle the sidecars verify ADS with (default: ca.crt of "
                           "--xds-tls-dir; none with --xds-plaintext)")
    hook.add_argument("--webhook-xds-server-name", default=i.xds_server_name,
                      help="the DNS name in the ADS certificate (default: the xDS host)")
    hook.add_argument("--webhook-cluster-dns", default=i.cluster_dns, metavar="IP[:PORT]",
                      help="the cluster DNS the sidecars resolve a named xDS address with "
                           "(default: the first nameserver of this process's resolv.conf)")
    hook.add_argument("--webhook-namespace", default="",
                      help="the control plane's namespace, never injected (default: this "
                           f"pod's, else {i.own_namespace})")
    hook.add_argument("--webhook-client-ca", default=w.client_ca, metavar="FILE",
                      help="ask callers for a client certificate and verify it with this CA "
                           "(PEM); one whose CN is a --webhook-caller-user proves the API "
                           "server (its AdmissionConfiguration kubeconfig); default: none")
    hook.add_argument("--webhook-caller-tokenreview", action="store_true",
                      help="review a caller's bearer token with TokenReview; one of a "
                           "--webhook-caller-user proves the API server")
    hook.add_argument("--webhook-caller-user", action="append", default=[], metavar="NAME",
                      help="the API server's user name (certificate CN or token user; "
                           "repeat or comma-separate). Without these every review is "
                           "logged as from an unverified caller (docs/injection.md)")
    hook.add_argument("--webhook-caller-audience", action="append", default=[],
                      metavar="AUD", help="audiences of the caller's token review "
                                          "(default: the API server's own)")


def _kube_flags(kube: argparse._ArgumentGroup) -> None:
    kube.add_argument("--kubeconfig", default=None,
                      help="kubeconfig file (default: in-cluster config)")
    kube.add_argument("--context", default=None, help="kubeconfig context")
    kube.add_argument("--watch-pods", action="store_true",
                      help="also watch Pods, to count selected workloads in status")
    kube.add_argument("--no-status", action="store_true",
                      help="do not write DnsPolicy status")
    kube.add_argument("--watch-timeout", type=int, default=WATCH_TIMEOUT,
                      help="seconds before a watch is renewed (default %(default)s)")
    kube.add_argument("--status-interval", type=float, default=STATUS_INTERVAL,
                      help="minimum seconds between status writes of one policy "
                           "(default %(default)s)")


def _leader_flags(lead: argparse._ArgumentGroup) -> None:
    t = LeaseTimings()
    lead.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                      help="write status only while holding the lease (default on; "
                           "--no-leader-election: this process always writes, one replica)")
    lead.add_argument("--leader-identity", default="",
                      help="this replica's holderIdentity (default: the host name; "
                           "the Deployment passes the pod name)")
    lead.add_argument("--lease", default=DEFAULT_LEASE,
                      metavar="NAMESPACE/NAME", help="the Lease (default %(default)s)")
    lead.add_argument("--lease-duration", type=int, default=t.duration,
                      help="seconds without renewal before another replica takes over "
                           "(default %(default)s)")
    lead.add_argument("--lease-renew", type=float, default=t.renew,
                      help="seconds between the leader's renewals (default %(default)s); it "
                           "stops writing when it could not renew for 2/3 of the duration")
    lead.add_argument("--lease-retry", type=float, default=t.retry,
                      help="seconds between a follower's looks at the lease, with jitter "
                           "(default %(default)s)")


def _bootstrap_default(name: str) -> str:
    default = inspect.signature(bootstrap_config).parameters[name].default
    assert isinstance(default, str)
    return default


def _bootstrap_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap (YAML) for a sidecar")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--namespace", required=True)
    boot.add_argument("--label", type=_label, action="append", default=[],
                      help="a pod label key=value (repeatable)")
    boot.add_argument("--xds-address", default=_bootstrap_default("xds_address"))
    boot.add_argument("--dns-address", default=_bootstrap_default("dns_address"))
    boot.add_argument("--admin-address", default=_bootstrap_default("admin_address"),
                      help="Envoy's full admin interface (keep it on loopback)")
    boot.add_argument("--stats-address", default=_bootstrap_default("stats_address"),
                      help="the stats-only listener serving /stats/prometheus, or 'off'")
    boot.add_argument("--token", default="",
                      help="bearer token for ADS (see serve --auth-tokens)")
    boot.add_argument("--token-path", default="", metavar="FILE",
                      help="a token file Envoy re-reads for every new ADS stream, e.g. the "
                           "pod's projected ServiceAccount token (serve --auth-tokenreview); "
                           "needs --xds-ca")
    boot.add_argument("--delta", action="store_true",
                      help="incremental xDS (DELTA_GRPC) instead of state of the world")
    boot.add_argument("--xds-ca", default="", metavar="FILE",
                      help="CA bundle (PEM) that verifies the control plane's certificate: "
                           "ADS over TLS (serve --xds-tls-dir); Envoy reads FILE at start")
    boot.add_argument("--xds-server-name", default="",
                      help="the DNS name the control plane's certificate must carry, sent as "
                           "SNI (default: the host of --xds-address)")
    boot.add_argument("--no-stats-sink", action="store_true",
                      help="do not stream the DNS counters to the control plane (and keep all "
                           "of Envoy's stats; see bootstrap.SIDECAR_STATS)")
    boot.add_argument("--stats-flush-interval", default="", metavar="DURATION",
                      help="how often Envoy sends its counters, e.g. 5s (default: Envoy's 5 s)")
    boot.add_argument("--front-set-address", default="", metavar="HOST:PORT",
                      help="the sidecar has a DNS front polling its (name, type) set here "
                           "(docs/dns-front.md; `controlplane sidecar` runs both); default "
                           "none: not fronted")


def _labels(text: str) -> list[tuple[str, str]]:
    return [_label(part) for part in text.split(",") if part.strip()]


def _sidecar_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    f = FrontAddresses()
    car = sub.add_parser("sidecar", help="run one sidecar outside Kubernetes (a VM): Envoy "
                         "and its DNS front (kresd), until SIGTERM/SIGINT (docs/vm.md)")
    car.add_argument("--node-id", required=True, help="this sidecar's node id (unique)")
    car.add_argument("--namespace", required=True,
                     help="the namespace the VM joins (its tenant's policy selects it)")
    car.add_argument("--label", type=_label, action="append", default=[],
                     help="a workload label key=value (repeatable)")
    car.add_argument("--labels", type=_labels, action="append", default=[],
                     metavar="K=V,...", help="several labels at once")
    car.add_argument("--xds-address", "--xds", default=_bootstrap_default("xds_address"),
                     metavar="HOST:PORT[,...]",
                     help="the control plane's ADS address; a comma list for several "
                          "replicas (Envoy moves to the next when one ends its stream)")
    car.add_argument("--dns-address", "--dns", default=f.dns, metavar="HOST:PORT",
                     help="where applications ask, UDP and TCP (default %(default)s: "
                          "resolv.conf's nameserver 127.0.0.1)")
    car.add_argument("--front", choices=["on", "off"], default="on",
                     help="off: no DNS front, Envoy's DNS listener on --dns-address (UDP, "
                          "A/AAAA/SRV only, as before the front)")
    car.add_argument("--envoy-dns-address", default=f.envoy_dns, metavar="HOST:PORT",
                     help="Envoy's DNS listener behind the front (default %(default)s)")
    car.add_argument("--set-address", default=f.set, metavar="HOST:PORT",
                     help="Envoy's loopback listener the front polls for its (name, type) "
                          "set (default %(default)s)")
    car.add_argument("--hop-address", default=f.hop, metavar="HOST:PORT",
                     help="Envoy's TCP listener towards the tenant resolver "
                          "(default %(default)s)")
    car.add_argument("--admin-address", default=_bootstrap_default("admin_address"),
                     help="Envoy's full admin interface (keep it on loopback)")
    car.add_argument("--stats-address", default=_bootstrap_default("stats_address"),
                     help="the stats-only listener serving /stats/prometheus, or 'off'")
    car.add_argument("--token", default="", help="bearer token for ADS (serve --auth-tokens)")
    car.add_argument("--token-path", "--token-file", default="", metavar="FILE",
                     help="a token file Envoy re-reads for every new ADS stream; needs "
                          "--xds-ca")
    car.add_argument("--xds-ca", default="", metavar="FILE",
                     help="CA bundle (PEM) that verifies the control plane: ADS over TLS")
    car.add_argument("--xds-server-name", default="",
                     help="the DNS name the control plane's certificate must carry "
                          "(default: the host of --xds-address)")
    car.add_argument("--delta", action="store_true",
                     help="incremental xDS (DELTA_GRPC) instead of state of the world")
    car.add_argument("--no-stats-sink", action="store_true",
                     help="do not stream the DNS counters to the control plane")
    car.add_argument("--concurrency", type=int, default=1,
                     help="Envoy worker threads (default %(default)s)")
    car.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                     help="where the bootstrap, the front's config, its cache and the logs "
                          "go (kept; default: a temporary directory, removed at exit)")
    car.add_argument("--envoy", default="", metavar="PATH",
                     help="the Envoy binary (default: beside this Python, then PATH)")
    car.add_argument("--kresd", default="", metavar="PATH",
                     help="the kresd binary (default: PATH, /usr/sbin)")


def _certs_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    certs = sub.add_parser("xds-certs", help="write a CA and an ADS serving certificate "
                           "(tls.crt, tls.key) for serve --xds-tls-dir")
    certs.add_argument("--dir", required=True, type=Path,
                       help="where to write ca.crt, ca.key (kept when present: the new leaf "
                            "is signed by the same CA), tls.crt and tls.key")
    certs.add_argument("--name", action="append", required=True,
                       help="a DNS name (or IP) of the control plane (repeatable)")
    certs.add_argument("--days", type=int, default=CERT_DAYS,
                       help="validity of the leaf (default %(default)s)")
