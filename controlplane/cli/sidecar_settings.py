"""``controlplane sidecar``'s flags -> ``SidecarSettings``, each problem a ``ConfigError``
naming its flag (printed as ``controlplane: error: --flag: reason``, exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from controlplane.core.errors import ConfigError
from controlplane.core.names import split_host_port
from controlplane.injection.front import FrontAddresses
from controlplane.injection.node import SidecarSettings

_ADDRESS_FLAGS = (("--xds-address", "xds_address"), ("--dns-address", "dns_address"),
                  ("--envoy-dns-address", "envoy_dns_address"),
                  ("--set-address", "set_address"), ("--hop-address", "hop_address"),
                  ("--admin-address", "admin_address"))


def sidecar_settings(args: argparse.Namespace, workdir: Path) -> SidecarSettings:
    if not args.node_id.strip():
        raise ConfigError(flag="--node-id", reason="empty")
    if not args.namespace.strip():
        raise ConfigError(flag="--namespace", reason="empty")
    xds, *more_xds = [a.strip() for a in args.xds_address.split(",")]
    for flag, name in _ADDRESS_FLAGS[1:]:
        _check_address(flag, getattr(args, name))
    for address in (xds, *more_xds):
        _check_address("--xds-address", address)
    if args.stats_address.lower() != "off":
        _check_address("--stats-address", args.stats_address)
    if args.concurrency < 1:
        raise ConfigError(flag="--concurrency", reason="at least 1")
    front = args.front == "on"
    addresses = FrontAddresses(dns=args.dns_address, envoy_dns=args.envoy_dns_address,
                               set=args.set_address, hop=args.hop_address)
    if front and (problem := addresses.problem()):
        raise ConfigError(flag="--dns-address", reason=problem)
    labels = dict(args.label)
    for group in args.labels:
        labels.update(group)
    for path_flag, value in (("--token-path", args.token_path), ("--xds-ca", args.xds_ca)):
        if value and not Path(value).is_file():
            raise ConfigError(flag=path_flag, reason=f"{value}: no such file")
    return SidecarSettings(
        node_id=args.node_id, namespace=args.namespace, labels=labels, workdir=workdir,
        xds_address=xds, more_xds_addresses=tuple(more_xds), addresses=addresses, front=front,
        admin_address=args.admin_address, stats_address=args.stats_address,
        token=args.token,
        token_path=str(Path(args.token_path).absolute()) if args.token_path else "",
        xds_ca=str(Path(args.xds_ca).absolute()) if args.xds_ca else "",
        xds_server_name=args.xds_server_name, delta=args.delta,
        stats_sink=not args.no_stats_sink, concurrency=args.concurrency,
        envoy=args.envoy, kresd=args.kresd)


def _check_address(flag: str, text: str) -> None:
    try:
        _, port = split_host_port(text, 0)
    except ValueError as exc:
        raise ConfigError(flag=flag, reason=str(exc)) from exc
    if port == 0:
        raise ConfigError(flag=flag, reason=f"{text!r} is not HOST:PORT")
