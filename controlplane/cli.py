"""Command line: ``controlplane serve`` and ``controlplane bootstrap``."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

import yaml

from controlplane.bootstrap import bootstrap_config
from controlplane.logs import setup_logging
from controlplane.names import split_host_port
from controlplane.records import KINDS
from controlplane.settings import DefaultView, Settings


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
    res.add_argument("--upstream-ca-bundle", default="",
                     help="CA bundle (PEM) for DNS over TLS/HTTPS to tenant servers when a "
                          "policy has no protocol.caBundle (default: the system bundle)")
    serve.add_argument("--auth-tokens", default="",
                       help="token file binding bearer tokens to namespaces (see auth.py)")
    serve.add_argument("--insecure", action="store_true",
                       help="accept ADS clients without a token (local use only)")
    serve.add_argument("--log-level", default="info")
    serve.add_argument("--fault-invalid-name", action="append", default=[],
                       help=argparse.SUPPRESS)  # test-only, see controlplane/faults.py
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
    boot.add_argument("--delta", action="store_true",
                      help="incremental xDS (DELTA_GRPC) instead of state of the world")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bootstrap":
        try:
            config = bootstrap_config(
                node_id=args.node_id, namespace=args.namespace, labels=dict(args.label),
                xds_address=args.xds_address, dns_address=args.dns_address,
                admin_address=args.admin_address, stats_address=args.stats_address,
                token=args.token, delta=args.delta)
        except ValueError as exc:
            print(f"controlplane bootstrap: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
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
    if not args.auth_tokens and not args.insecure:
        print("controlplane serve: give --auth-tokens FILE, or --insecure to accept any "
              "client (local use only)", file=sys.stderr)
        return 2
    if args.auth_tokens:
        from controlplane.auth import TokenAuthenticator
        from controlplane.errors import ConfigError

        try:
            TokenAuthenticator.from_file(Path(args.auth_tokens))
        except ConfigError as exc:
            print(f"controlplane serve: {exc}", file=sys.stderr)
            return 2
    settings = Settings(
        auth_tokens=args.auth_tokens, insecure=args.insecure,
        ttl_by_kind=ttl_by_kind, max_answers=args.max_answers,
        aaaa_mapped=not args.no_aaaa_mapped,
        vip_range=args.vip_range if args.auto_allocate_vips else "",
        fault_invalid_names=frozenset(n.lower() for n in args.fault_invalid_name),
        zone=args.zone.strip(".").lower(), answer_ttl_seconds=args.answer_ttl,
        default_upstream=args.default_upstream, default_view=DefaultView(args.default_view),
        xds_host=args.xds_address[0], xds_port=args.xds_address[1],
        admin_host=args.admin_address[0], admin_port=args.admin_address[1],
        debounce_seconds=args.debounce,
        tenant_resolvers=args.tenant_resolvers, resolver_dir=args.resolver_dir,
        resolver_listen_host=args.resolver_listen,
        resolver_advertise_host=args.resolver_advertise,
        resolver_allow=tuple(args.resolver_allow) or ("127.0.0.0/8", "::1/128"),
        upstream_ca_bundle=args.upstream_ca_bundle,
        resolver_hop=args.resolver_hop, resolver_tls_dir=args.resolver_tls_dir,
    )
    if args.resolver_listen in ("0.0.0.0", "::") and not args.resolver_advertise:
        print("controlplane serve: --resolver-listen 0.0.0.0 needs --resolver-advertise IP "
              "(the address sidecars forward to)", file=sys.stderr)
        return 2
    if args.upstream_ca_bundle and not Path(args.upstream_ca_bundle).is_file():
        print(f"controlplane serve: --upstream-ca-bundle {args.upstream_ca_bundle}: no such file",
              file=sys.stderr)
        return 2
    from controlplane.app import serve, serve_files

    if args.source != "kubernetes":
        return asyncio.run(serve_files(Path(args.source), settings))
    from controlplane.errors import ConfigError
    from controlplane.sources.kube_runner import KubeRunner, api_client

    try:
        api = api_client(args.kubeconfig, args.context)
    except ConfigError as exc:
        print(f"controlplane serve: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(settings, lambda store, poke: KubeRunner(
        api, store, poke, watch_pods=args.watch_pods, write_status=not args.no_status,
        watch_timeout=args.watch_timeout, status_min_interval=args.status_interval)))


if __name__ == "__main__":
    raise SystemExit(main())
