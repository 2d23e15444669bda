"""Command line: ``controlplane serve`` and ``controlplane bootstrap``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from controlplane.core.model import KINDS
from controlplane.core.names import split_host_port
from controlplane.core.settings import DefaultView, Settings
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.kube.leadership import LeaseTimings
from controlplane.telemetry.logs import setup_logging

if TYPE_CHECKING:
    from controlplane.kube.leader import Election


def _address(text: str) -> tuple[str, int]:
    split = split_host_port(text, 0)
    if isinstance(split, str) or split[1] == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return split


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="controlplane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the control plane")
    serve.add_argument("--source", required=True,
                       help="a directory of manifests (watched), or 'kubernetes'")
    serve.add_argument("--xds-address", type=_address, default=("127.0.0.1", 18000),
                       help="where ADS listens (default 127.0.0.1:18000)")
    serve.add_argument("--admin-address", type=_address, default=("127.0.0.1", 18080),
                       help="where the admin API listens (default 127.0.0.1:18080)")
    serve.add_argument("--zone", default="cluster.local", help="cluster DNS zone")
    serve.add_argument("--answer-ttl", type=int, default=30,
                       help="TTL of local answers in seconds (Envoy's minimum is 30)")
    serve.add_argument("--ttl", type=_label, action="append", default=[], metavar="KIND=SECONDS",
                       help="TTL for one kind of name: service, headless, externalname, "
                       "serviceentry, pod (repeatable; at least 30)")
    serve.add_argument("--max-answers", type=int, default=8,
                       help="addresses per family and name (Envoy answers at most 8)")
    serve.add_argument("--no-aaaa-mapped", action="store_true",
                       help="answer AAAA of IPv4-only names with NXDOMAIN (Envoy's default) "
                       "instead of IPv4-mapped addresses")
    serve.add_argument("--auto-allocate-vips", action="store_true",
                       help="give ServiceEntries without addresses a VIP from --vip-range")
    serve.add_argument("--vip-range", default="240.240.0.0/16",
                       help="CIDR for --auto-allocate-vips (default 240.240.0.0/16)")
    serve.add_argument("--default-upstream", default="",
                       help="IP[:port] (or a Service name) for policies that name no server")
    serve.add_argument("--default-view", choices=[v.value for v in DefaultView],
                       default=DefaultView.DENY.value,
                       help="what Envoys that no DnsPolicy selects get (default: deny)")
    serve.add_argument("--debounce", type=float, default=0.05,
                       help="seconds to coalesce input changes (default 0.05)")
    serve.add_argument("--drain-seconds", type=float, default=2.0,
                       help="on SIGTERM, end the open ADS streams over this many seconds so "
                            "the sidecars reconnect to another replica (default 2)")
    serve.add_argument("--sidecar-stats-max-age", type=float, default=60.0, metavar="SECONDS",
                       help="drop a sidecar whose DNS counters stopped arriving for this long "
                            "(its counts stay in its tenant's totals; default 60)")
    res = serve.add_argument_group("tenant resolvers (what forwarding views forward to)")
    res.add_argument("--tenant-resolvers", choices=["local", "none"], default="local",
                     help="local: one unbound per forwarding tenant, started and supervised "
                          "by the control plane; none: forwarding views forward nothing")
    res.add_argument("--resolver-dir", default="",
                     help="directory for the resolvers' files (default: a temporary one)")
    res.add_argument("--resolver-listen", default="127.0.0.1",
                     help="address the tenant resolvers listen on")
    res.add_argument("--resolver-advertise", default="",
                     help="address the sidecars use to reach the resolvers (default: "
                          "--resolver-listen; needed when that is 0.0.0.0)")
    res.add_argument("--resolver-allow", action="append", default=[], metavar="CIDR",
                     help="clients allowed to query the resolvers (default loopback)")
    res.add_argument("--resolver-hop", choices=["udp", "tls"], default="udp",
                     help="how sidecars reach their tenant resolver: plain UDP (on loopback "
                          "or a trusted network) or DNS over TLS, verified by Envoy")
    res.add_argument("--resolver-tls-dir", default="",
                     help="ca.crt, tls.crt and tls.key for --resolver-hop tls (a Secret); "
                          "made there when absent (default: under --resolver-dir)")
    res.add_argument("--policy-server-ca", default="",
                     help="CA bundle (PEM) for policy servers whose policy gives no caBundle")
    res.add_argument("--policy-server-client-cert", default="",
                     help="client certificate chain (PEM) presented to TLS policy servers")
    res.add_argument("--policy-server-client-key", default="",
                     help="the key of --policy-server-client-cert")
    res.add_argument("--upstream-ca-bundle", default="",
                     help="CA bundle (PEM) for DNS over TLS/HTTPS to tenant servers when a "
                          "policy has no protocol.caBundle (default: the system bundle)")
    serve.add_argument("--auth-tokens", default="",
                       help="token file binding bearer tokens to namespaces (see auth.py)")
    serve.add_argument("--auth-tokenreview", action="store_true",
                       help="accept pods' projected ServiceAccount tokens, checked with the "
                            "TokenReview API (--kubeconfig or in-cluster); the token's pod "
                            "gives the namespace and labels (see tokenreview.py); combinable "
                            "with --auth-tokens (VMs)")
    serve.add_argument("--auth-audience", action="append", default=[], metavar="AUD",
                       help="audience the sidecars' tokens must have (repeatable; default "
                            "dns-controlplane)")
    serve.add_argument("--auth-cache-ttl", type=float, default=60.0, metavar="SECONDS",
                       help="reuse a successful TokenReview for this long, never past the "
                            "token's expiry (default 60)")
    serve.add_argument("--insecure", action="store_true",
                       help="accept ADS clients without a token (local use only); implies "
                            "--xds-plaintext unless --xds-tls-dir is given")
    tls = serve.add_argument_group("ADS transport (one of them is required)")
    tls.add_argument("--xds-tls-dir", default="",
                     help="serve ADS over TLS with tls.crt and tls.key from this directory "
                          "(a mounted Secret); reloaded when they change, no restart")
    tls.add_argument("--xds-plaintext", action="store_true",
                     help="serve ADS without TLS (local runs, or a trusted network)")
    adm = serve.add_argument_group("admin API access")
    adm.add_argument("--admin-auth", choices=["none", "kubernetes"], default="none",
                     help="kubernetes: every request but /healthz and /readyz needs a bearer "
                          "token, checked with TokenReview and SubjectAccessReview "
                          "(nonResourceURLs, see deploy/rbac.yaml); none: open (local runs)")
    adm.add_argument("--admin-auth-audience", action="append", default=[], metavar="AUD",
                     help="audiences the admin API's tokens must have (repeatable; default "
                          "the API server's)")
    adm.add_argument("--admin-tls-dir", default="",
                     help="serve the admin API over HTTPS with tls.crt and tls.key from this "
                          "directory (reloaded when they change), so bearer tokens never "
                          "cross the network in clear; default plain HTTP")
    hook = serve.add_argument_group("sidecar injection webhook (docs/injection.md)")
    hook.add_argument("--webhook-address", type=_address, default=None, metavar="HOST:PORT",
                      help="serve POST https://HOST:PORT/inject (AdmissionReview v1); off "
                           "by default")
    hook.add_argument("--webhook-cert-dir", default="",
                      help="tls.crt and tls.key of the webhook (a mounted Secret, reloaded "
                           "when it changes); a CA and a certificate are made there when "
                           "absent (default: a temporary directory)")
    hook.add_argument("--webhook-sidecar-mode", choices=["native", "legacy"], default="native",
                      help="native: an init container with restartPolicy Always (Kubernetes "
                           ">= 1.29); legacy: the first ordinary container")
    hook.add_argument("--webhook-sidecar-image", default="envoyproxy/envoy:v1.40.0")
    hook.add_argument("--webhook-xds-address", default="",
                      help="the control plane as the sidecars reach it (default "
                           "dns-controlplane.<namespace>.svc.<zone>:18000)")
    hook.add_argument("--webhook-xds-ca", default="", metavar="FILE",
                      help="CA bundle the sidecars verify ADS with (default: ca.crt of "
                           "--xds-tls-dir; none with --xds-plaintext)")
    hook.add_argument("--webhook-xds-server-name", default="",
                      help="the DNS name in the ADS certificate (default: the xDS host)")
    hook.add_argument("--webhook-cluster-dns", default="", metavar="IP[:PORT]",
                      help="the cluster DNS the sidecars resolve a named xDS address with "
                           "(default: the first nameserver of this process's resolv.conf)")
    hook.add_argument("--webhook-namespace", default="",
                      help="the control plane's namespace, never injected (default: this "
                           "pod's, else dns-system)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--fault-invalid-name", action="append", default=[],
                       help=argparse.SUPPRESS)  # test-only, see controlplane/translate/faults.py
    kube = serve.add_argument_group("Kubernetes source (--source kubernetes)")
    kube.add_argument("--kubeconfig", default=None,
                      help="kubeconfig file (default: in-cluster config)")
    kube.add_argument("--context", default=None, help="kubeconfig context")
    kube.add_argument("--watch-pods", action="store_true",
                      help="also watch Pods, to count selected workloads in status")
    kube.add_argument("--no-status", action="store_true",
                      help="do not write DnsPolicy status")
    kube.add_argument("--watch-timeout", type=int, default=60,
                      help="seconds before a watch is renewed (default 60)")
    kube.add_argument("--status-interval", type=float, default=1.0,
                      help="minimum seconds between status writes of one policy (default 1)")
    lead = serve.add_argument_group(
        "replicas (--source kubernetes): every replica serves ADS; the holder of a "
        "coordination.k8s.io Lease writes status")
    lead.add_argument("--leader-election", action=argparse.BooleanOptionalAction, default=True,
                      help="write status only while holding the lease (default on; "
                           "--no-leader-election: this process always writes, one replica)")
    lead.add_argument("--leader-identity", default="",
                      help="this replica's holderIdentity (default: the host name; "
                           "the Deployment passes the pod name)")
    lead.add_argument("--lease", default="dns-system/dns-controlplane-status",
                      metavar="NAMESPACE/NAME", help="the Lease (default %(default)s)")
    lead.add_argument("--lease-duration", type=int, default=15,
                      help="seconds without renewal before another replica takes over "
                           "(default 15)")
    lead.add_argument("--lease-renew", type=float, default=5.0,
                      help="seconds between the leader's renewals (default 5); it stops "
                           "writing when it could not renew for 2/3 of the duration")
    lead.add_argument("--lease-retry", type=float, default=2.0,
                      help="seconds between a follower's looks at the lease, with jitter "
                           "(default 2)")

    boot = sub.add_parser("bootstrap", help="print an Envoy bootstrap (YAML) for a sidecar")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--namespace", required=True)
    boot.add_argument("--label", type=_label, action="append", default=[],
                      help="a pod label key=value (repeatable)")
    boot.add_argument("--xds-address", default="127.0.0.1:18000")
    boot.add_argument("--dns-address", default="127.0.0.1:15053")
    boot.add_argument("--admin-address", default="127.0.0.1:15000",
                      help="Envoy's full admin interface (keep it on loopback)")
    boot.add_argument("--stats-address", default="0.0.0.0:15090",
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

    certs = sub.add_parser("xds-certs", help="write a CA and an ADS serving certificate "
                           "(tls.crt, tls.key) for serve --xds-tls-dir")
    certs.add_argument("--dir", required=True, type=Path,
                       help="where to write ca.crt, ca.key (kept when present: the new leaf "
                            "is signed by the same CA), tls.crt and tls.key")
    certs.add_argument("--name", action="append", required=True,
                       help="a DNS name (or IP) of the control plane (repeatable)")
    certs.add_argument("--days", type=int, default=90, help="validity of the leaf (default 90)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bootstrap":
        try:
            config = bootstrap_config(
                node_id=args.node_id, namespace=args.namespace, labels=dict(args.label),
                xds_address=args.xds_address, dns_address=args.dns_address,
                admin_address=args.admin_address, stats_address=args.stats_address,
                token=args.token, delta=args.delta,
                token_path=str(Path(args.token_path).absolute()) if args.token_path else "",
                xds_ca=str(Path(args.xds_ca).absolute()) if args.xds_ca else "",
                xds_server_name=args.xds_server_name, stats_sink=not args.no_stats_sink,
                stats_flush_interval=args.stats_flush_interval)
        except ValueError as exc:
            print(f"controlplane bootstrap: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return 0
    if args.command == "xds-certs":
        from controlplane.identity.tlsfiles import write_server_files

        try:
            info = write_server_files(args.dir, args.name, days=args.days)
        except (OSError, ValueError) as exc:
            print(f"controlplane xds-certs: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {args.dir}/tls.crt and tls.key ({info.describe()}), signed by "
              f"{args.dir}/ca.crt; keep ca.key out of the Secret")
        return 0

    setup_logging(args.log_level)
    if args.fault_invalid_name:
        logging.getLogger("controlplane").warning(
            "TEST FAULT INJECTION ON: Envoy will reject views containing %s",
            ", ".join(args.fault_invalid_name))
    if args.answer_ttl < 30:
        print("controlplane serve: --answer-ttl must be at least 30 (Envoy's minimum)",
              file=sys.stderr)
        return 2
    ttl_by_kind = {}
    for kind, value in args.ttl:
        if kind not in KINDS or not value.isdigit() or int(value) < 30:
            print(f"controlplane serve: --ttl {kind}={value}: the kind is one of "
                  f"{', '.join(KINDS)} and the TTL at least 30", file=sys.stderr)
            return 2
        ttl_by_kind[kind] = int(value)
    if not 1 <= args.max_answers <= 8:
        print("controlplane serve: --max-answers is between 1 and 8", file=sys.stderr)
        return 2
    try:
        ipaddress.ip_network(args.vip_range, strict=False)
    except ValueError:
        print(f"controlplane serve: --vip-range {args.vip_range!r} is not a CIDR",
              file=sys.stderr)
        return 2
    if not args.auth_tokens and not args.auth_tokenreview and not args.insecure:
        print("controlplane serve: give --auth-tokens FILE and/or --auth-tokenreview, or "
              "--insecure to accept any client (local use only)", file=sys.stderr)
        return 2
    if (args.auth_audience or args.auth_cache_ttl != 60.0) and not args.auth_tokenreview:
        print("controlplane serve: --auth-audience and --auth-cache-ttl need "
              "--auth-tokenreview", file=sys.stderr)
        return 2
    if args.auth_tokens:
        from controlplane.core.errors import ConfigError
        from controlplane.identity.auth import TokenAuthenticator

        try:
            TokenAuthenticator.from_file(Path(args.auth_tokens))
        except ConfigError as exc:
            print(f"controlplane serve: {exc}", file=sys.stderr)
            return 2
    if args.xds_tls_dir and args.xds_plaintext:
        print("controlplane serve: --xds-tls-dir and --xds-plaintext exclude each other",
              file=sys.stderr)
        return 2
    if not args.xds_tls_dir and not (args.xds_plaintext or args.insecure):
        print("controlplane serve: give --xds-tls-dir DIR (tls.crt, tls.key) to serve ADS "
              "over TLS, or --xds-plaintext", file=sys.stderr)
        return 2
    for flag, tls_dir in (("--xds-tls-dir", args.xds_tls_dir),
                          ("--admin-tls-dir", args.admin_tls_dir)):
        if tls_dir:
            from controlplane.core.errors import ConfigError
            from controlplane.identity.tlsfiles import CertificateFiles

            try:
                CertificateFiles(Path(tls_dir)).load()
            except ConfigError as exc:
                print(f"controlplane serve: {flag} {exc}", file=sys.stderr)
                return 2
    from controlplane.core.errors import ConfigError
    from controlplane.injection.webhook import injection_config

    try:
        injection = injection_config(args, zone=args.zone.strip(".").lower())
    except ConfigError as exc:
        print(f"controlplane serve: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        webhook_host=args.webhook_address[0] if args.webhook_address else "0.0.0.0",
        webhook_port=args.webhook_address[1] if args.webhook_address else 0,
        webhook_cert_dir=args.webhook_cert_dir, injection=injection,
        webhook_server_name=f"dns-controlplane-webhook.{injection.own_namespace}.svc",
        xds_tls_dir=args.xds_tls_dir, xds_plaintext=not args.xds_tls_dir,
        admin_auth=args.admin_auth, admin_auth_audiences=tuple(args.admin_auth_audience),
        admin_tls_dir=args.admin_tls_dir,
        auth_tokens=args.auth_tokens, insecure=args.insecure,
        auth_tokenreview=args.auth_tokenreview,
        auth_audiences=tuple(args.auth_audience) or ("dns-controlplane",),
        auth_cache_ttl=max(0.0, args.auth_cache_ttl),
        ttl_by_kind=ttl_by_kind, max_answers=args.max_answers,
        aaaa_mapped=not args.no_aaaa_mapped,
        vip_range=args.vip_range if args.auto_allocate_vips else "",
        fault_invalid_names=frozenset(n.lower() for n in args.fault_invalid_name),
        zone=args.zone.strip(".").lower(), answer_ttl_seconds=args.answer_ttl,
        default_upstream=args.default_upstream, default_view=DefaultView(args.default_view),
        xds_host=args.xds_address[0], xds_port=args.xds_address[1],
        admin_host=args.admin_address[0], admin_port=args.admin_address[1],
        debounce_seconds=args.debounce, drain_seconds=max(0.0, args.drain_seconds),
        stats_max_age_seconds=max(1.0, args.sidecar_stats_max_age),
        tenant_resolvers=args.tenant_resolvers, resolver_dir=args.resolver_dir,
        resolver_listen_host=args.resolver_listen,
        resolver_advertise_host=args.resolver_advertise,
        resolver_allow=tuple(args.resolver_allow) or ("127.0.0.0/8", "::1/128"),
        upstream_ca_bundle=args.upstream_ca_bundle,
        policy_server_ca=args.policy_server_ca,
        policy_server_client_cert=args.policy_server_client_cert,
        policy_server_client_key=args.policy_server_client_key,
        resolver_hop=args.resolver_hop, resolver_tls_dir=args.resolver_tls_dir,
    )
    if args.resolver_listen in ("0.0.0.0", "::") and not args.resolver_advertise:
        print("controlplane serve: --resolver-listen 0.0.0.0 needs --resolver-advertise IP "
              "(the address sidecars forward to)", file=sys.stderr)
        return 2
    for flag in ("policy_server_ca", "policy_server_client_cert", "policy_server_client_key"):
        value = getattr(args, flag)
        if value and not Path(value).is_file():
            print(f"controlplane serve: --{flag.replace('_', '-')} {value}: no such file",
                  file=sys.stderr)
            return 2
    if bool(args.policy_server_client_cert) != bool(args.policy_server_client_key):
        print("controlplane serve: --policy-server-client-cert and --policy-server-client-key "
              "go together", file=sys.stderr)
        return 2
    if args.upstream_ca_bundle and not Path(args.upstream_ca_bundle).is_file():
        print(f"controlplane serve: --upstream-ca-bundle {args.upstream_ca_bundle}: no such file",
              file=sys.stderr)
        return 2
    from controlplane.app import serve, serve_files
    from controlplane.core.errors import ConfigError
    from controlplane.identity.admin_auth import AdminAuthorizer

    admin_auth = None
    if args.admin_auth == "kubernetes":  # the API of --kubeconfig/--context, or in-cluster
        from controlplane.kube.admin_review import KubeReviewer
        from controlplane.kube.runner import api_client

        try:
            admin_auth = AdminAuthorizer(KubeReviewer(
                api_client(args.kubeconfig, args.context),
                audiences=args.admin_auth_audience))
        except ConfigError as exc:
            print(f"controlplane serve: --admin-auth kubernetes: {exc}", file=sys.stderr)
            return 2
    identity_api = None
    if args.auth_tokenreview:  # sidecars' tokens: the API of --kubeconfig, or in-cluster
        from controlplane.kube.identity import KubeIdentityApi
        from controlplane.kube.runner import api_client

        try:
            identity_api = KubeIdentityApi(api_client(args.kubeconfig, args.context))
        except ConfigError as exc:
            print(f"controlplane serve: --auth-tokenreview: {exc}", file=sys.stderr)
            return 2
    if args.source != "kubernetes":
        return asyncio.run(serve_files(Path(args.source), settings, admin_auth=admin_auth,
                                       identity_api=identity_api))
    from controlplane.kube.runner import KubeRunner, api_client

    try:
        api = api_client(args.kubeconfig, args.context)
    except ConfigError as exc:
        print(f"controlplane serve: {exc}", file=sys.stderr)
        return 2
    election = _election(args)
    if isinstance(election, str):
        print(f"controlplane serve: {election}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, lambda store, poke: KubeRunner(
        api, store, poke, watch_pods=args.watch_pods, write_status=not args.no_status,
        watch_timeout=args.watch_timeout, status_min_interval=args.status_interval,
        election=election),
        admin_auth=admin_auth, identity_api=identity_api))


def _election(args: argparse.Namespace) -> Election | None | str:
    """The leader election the arguments ask for, None when off, or what is wrong."""
    from controlplane.kube.leader import Election

    if not args.leader_election:
        return None
    namespace, sep, name = args.lease.partition("/")
    if not sep or not namespace or not name or "/" in name:
        return f"--lease {args.lease!r} is not NAMESPACE/NAME"
    timings = LeaseTimings(duration=args.lease_duration,
                           renew_deadline=args.lease_duration * 2 / 3,
                           renew=args.lease_renew, retry=args.lease_retry)
    if timings.problems():
        return "leader election: " + "; ".join(timings.problems()) + \
            " (the renew deadline is 2/3 of --lease-duration)"
    identity = args.leader_identity or socket.gethostname()
    return Election(identity=identity, namespace=namespace, name=name, timings=timings)


if __name__ == "__main__":
    raise SystemExit(main())
