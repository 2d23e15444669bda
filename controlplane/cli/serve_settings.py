"""``controlplane serve``'s flags turned into ``Settings``, one small function per group.

Each group checks its own values (``core/settings.py``); here are the rules about
flags that go together, and the checks that read files. Everything wrong is raised as
one ``ConfigError`` naming the flag; ``cli.main`` prints it and exits with code 2.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import replace
from pathlib import Path

from controlplane.core.errors import ConfigError
from controlplane.core.hop_peers import parse_hop_peers
from controlplane.core.model import KINDS
from controlplane.core.settings import (
    MIN_TTL,
    AdminAuthMode,
    AdminSettings,
    AuthSettings,
    DefaultView,
    DnsSettings,
    PolicyServerSettings,
    ResolverAaaa,
    ResolverHop,
    ResolverLifetime,
    ResolverMode,
    ResolverSettings,
    ResolverTableUpdates,
    Role,
    Settings,
    StatsSettings,
    WebhookSettings,
    XdsSettings,
    check_cidr,
)


def serve_settings(args: argparse.Namespace) -> Settings:
    """The Settings of ``controlplane serve``'s flags; ConfigError names the flag at fault."""
    dns = dns_settings(args)
    role = Role(args.role)
    if role is Role.RESOLVERS:
        check_resolvers_role(args)
        auth, xds = AuthSettings(), replace(XdsSettings(), debounce_seconds=args.debounce)
    else:
        auth, xds = auth_settings(args), xds_settings(args)
    admin = admin_settings(args)
    return Settings(
        dns=dns, auth=auth, xds=xds, admin=admin, webhook=webhook_settings(args, zone=dns.zone),
        resolvers=resolver_settings(args), policy_server=policy_server_settings(args), role=role,
        stats=StatsSettings(max_age_seconds=max(1.0, args.sidecar_stats_max_age),
                            history_file=args.traffic_history),
        fault_invalid_names=frozenset(n.lower() for n in args.fault_invalid_name),
        fault_crash_tasks=frozenset(args.fault_crash_task))


# Flags of what only --role controlplane serves: refused with --role resolvers, which
# would silently ignore them.
_CONTROLPLANE_ONLY = (
    ("--auth-tokens", "auth_tokens"), ("--auth-tokenreview", "auth_tokenreview"),
    ("--insecure", "insecure"), ("--xds-tls-dir", "xds_tls_dir"),
    ("--xds-plaintext", "xds_plaintext"), ("--webhook-address", "webhook_address"),
    ("--leader-identity", "leader_identity"))


def check_resolvers_role(args: argparse.Namespace) -> None:
    """``--role resolvers`` serves no sidecar and writes no status: every flag of those is
    refused, and it needs tenant resolvers that outlive it."""
    for flag, name in _CONTROLPLANE_ONLY:
        if getattr(args, name, None):
            raise ConfigError(flag=flag, reason=f"{flag} is for --role controlplane: "
                              "--role resolvers serves no ADS, webhook or status")
    if ResolverMode(args.tenant_resolvers) is ResolverMode.NONE:
        raise ConfigError(flag="--tenant-resolvers", reason="--role resolvers runs the tenant "
                          "resolvers: --tenant-resolvers none leaves it nothing to do")
    if ResolverLifetime(args.resolver_lifetime) is not ResolverLifetime.PERSISTENT:
        raise ConfigError(flag="--resolver-lifetime", reason="--role resolvers keeps the "
                          "resolvers answering across its own restarts: give "
                          "--resolver-lifetime persistent (and --resolver-dir)")


def dns_settings(args: argparse.Namespace) -> DnsSettings:
    ttl_by_kind = {}
    for kind, value in args.ttl:
        if kind not in KINDS or not value.isdigit():
            raise ConfigError(flag="--ttl", reason=f"{kind}={value}: the kind is one of "
                              f"{', '.join(KINDS)} and the TTL at least {MIN_TTL}")
        ttl_by_kind[kind] = int(value)
    check_cidr("--vip-range", args.vip_range)  # refused even while unused, as ever
    return DnsSettings(
        zone=args.zone.strip(".").lower(), answer_ttl_seconds=args.answer_ttl,
        ttl_by_kind=ttl_by_kind, default_upstream=args.default_upstream,
        default_view=DefaultView(args.default_view), max_answers=args.max_answers,
        aaaa_mapped=not args.no_aaaa_mapped,
        vip_range=args.vip_range if args.auto_allocate_vips else "")


def auth_settings(args: argparse.Namespace) -> AuthSettings:
    default = AuthSettings()
    if not args.auth_tokens and not args.auth_tokenreview and not args.insecure:
        raise ConfigError(flag="--auth-tokens", reason="give --auth-tokens FILE and/or "
                          "--auth-tokenreview, or --insecure to accept any client "
                          "(local use only)")
    if (args.auth_audience or args.auth_cache_ttl != default.cache_ttl) \
            and not args.auth_tokenreview:
        flag = "--auth-audience" if args.auth_audience else "--auth-cache-ttl"
        raise ConfigError(flag=flag, reason="--auth-audience and --auth-cache-ttl need "
                          "--auth-tokenreview")
    if args.auth_tokens:
        from controlplane.identity.auth import TokenAuthenticator

        try:
            TokenAuthenticator.from_file(Path(args.auth_tokens))
        except ConfigError as exc:
            raise exc.at("--auth-tokens") from exc
    return AuthSettings(
        tokens_file=args.auth_tokens, insecure=args.insecure,
        tokenreview=args.auth_tokenreview,
        audiences=tuple(args.auth_audience) or default.audiences,
        cache_ttl=max(0.0, args.auth_cache_ttl), max_streams=args.sidecar_max_streams,
        max_nodes=args.sidecar_max_nodes)


def xds_settings(args: argparse.Namespace) -> XdsSettings:
    if args.xds_tls_dir and args.xds_plaintext:
        raise ConfigError(flag="--xds-tls-dir",
                          reason="--xds-tls-dir and --xds-plaintext exclude each other")
    if not args.xds_tls_dir and not (args.xds_plaintext or args.insecure):
        raise ConfigError(flag="--xds-tls-dir", reason="give --xds-tls-dir DIR (tls.crt, "
                          "tls.key) to serve ADS over TLS, or --xds-plaintext")
    _check_certificate_files("--xds-tls-dir", args.xds_tls_dir)
    host, port = args.xds_address
    return XdsSettings(host=host, port=port, tls_dir=args.xds_tls_dir,
                       plaintext=not args.xds_tls_dir, debounce_seconds=args.debounce,
                       drain_seconds=max(0.0, args.drain_seconds),
                       front_table_limit=args.front_table_limit)


def admin_settings(args: argparse.Namespace) -> AdminSettings:
    _check_certificate_files("--admin-tls-dir", args.admin_tls_dir)
    host, port = args.admin_address
    return AdminSettings(host=host, port=port, auth=AdminAuthMode(args.admin_auth),
                         auth_audiences=tuple(args.admin_auth_audience),
                         tls_dir=args.admin_tls_dir)


def webhook_settings(args: argparse.Namespace, *, zone: str) -> WebhookSettings:
    from controlplane.injection.webhook import injection_config

    injection = injection_config(args, zone=zone)
    default = WebhookSettings()
    host, port = args.webhook_address or (default.host, default.port)
    _check_client_ca(args.webhook_client_ca)
    return WebhookSettings(
        host=host, port=port, cert_dir=args.webhook_cert_dir, injection=injection,
        server_name=f"dns-controlplane-webhook.{injection.own_namespace}.svc",
        client_ca=args.webhook_client_ca, caller_tokenreview=args.webhook_caller_tokenreview,
        caller_users=_listed(args.webhook_caller_user),
        caller_audiences=_listed(args.webhook_caller_audience))


def _listed(values: list[str]) -> tuple[str, ...]:
    """Repeated and comma-separated flag values, in order, without blanks."""
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


def _check_client_ca(path: str) -> None:
    """--webhook-client-ca must be a CA bundle the TLS server can load."""
    if not path:
        return
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(flag="--webhook-client-ca", reason=f"{path}: not a CA bundle that "
                          f"can be loaded ({exc})") from exc


def resolver_settings(args: argparse.Namespace) -> ResolverSettings:
    _check_file("--upstream-ca-bundle", args.upstream_ca_bundle)
    return ResolverSettings(
        mode=ResolverMode(args.tenant_resolvers), dir=args.resolver_dir,
        lifetime=ResolverLifetime(args.resolver_lifetime),
        table_updates=ResolverTableUpdates(args.resolver_table_updates),
        listen_host=args.resolver_listen, advertise_host=args.resolver_advertise,
        host_spool=args.resolver_host_spool,
        allow=tuple(args.resolver_allow) or ResolverSettings().allow,
        hop=ResolverHop(args.resolver_hop), tls_dir=args.resolver_tls_dir,
        aaaa=ResolverAaaa(args.resolver_aaaa),
        hop_port=args.resolver_hop_port,
        hop_peers=parse_hop_peers(args.resolver_hop_peers, default_port=args.resolver_hop_port),
        hop_cert_lifetime_seconds=parse_duration("--hop-cert-lifetime", args.hop_cert_lifetime),
        upstream_ca_bundle=args.upstream_ca_bundle)


def parse_duration(flag: str, text: str) -> int:
    """Seconds from ``90s``, ``30m``, ``12h`` or ``2d``."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if match is None:
        raise ConfigError(flag=flag, reason=f"{text!r} is not a duration like 12h, 30m or 90s")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def policy_server_settings(args: argparse.Namespace) -> PolicyServerSettings:
    _check_file("--policy-server-ca", args.policy_server_ca)
    _check_file("--policy-server-client-cert", args.policy_server_client_cert)
    _check_file("--policy-server-client-key", args.policy_server_client_key)
    return PolicyServerSettings(ca=args.policy_server_ca,
                                client_cert=args.policy_server_client_cert,
                                client_key=args.policy_server_client_key)


def _check_file(flag: str, path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(flag=flag, reason=f"{path}: no such file")


def _check_certificate_files(flag: str, directory: str) -> None:
    """tls.crt and tls.key in ``directory`` must load (when one is given)."""
    if not directory:
        return
    from controlplane.identity.tlsfiles import CertificateFiles

    try:
        CertificateFiles(Path(directory)).load()
    except ConfigError as exc:
        raise exc.at(flag) from exc
