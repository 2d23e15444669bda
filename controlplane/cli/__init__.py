"""Command line: ``controlplane serve``, ``bootstrap``, ``sidecar``, ``xds-certs`` and
``resolver-host``.

``main`` parses (``flags.py``), turns the flags into ``Settings`` (``serve_settings.py``)
and hands over to ``app.serve``. Anything that cannot be used is one ``ConfigError``
with the flag and the reason, printed once as ``controlplane: error: --flag: reason``
with exit code 2.

May import every package: this is the composition root's entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from controlplane.cli.flags import build_parser
from controlplane.cli.serve_settings import serve_settings
from controlplane.core.errors import ConfigError
from controlplane.core.settings import AdminAuthMode, AdminSettings, AuthSettings
from controlplane.injection.bootstrap import bootstrap_config
from controlplane.kube.leadership import LeaseTimings
from controlplane.telemetry.logs import setup_logging

if TYPE_CHECKING:
    from controlplane.app import SourceRunner
    from controlplane.identity.admin_auth import AdminAuthorizer
    from controlplane.identity.tokenreview import IdentityApi
    from controlplane.kube.leader import Election
    from controlplane.store.store import Store

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        command: Callable[[argparse.Namespace], int] = {
            "bootstrap": _bootstrap, "sidecar": _sidecar, "xds-certs": _xds_certs,
            "resolver-host": _resolver_host, "serve": _serve}[args.command]
        return command(args)
    except ConfigError as exc:
        print(f"controlplane: error: {exc}", file=sys.stderr)
        return 2


def _bootstrap(args: argparse.Namespace) -> int:
    try:
        config = bootstrap_config(
            node_id=args.node_id, namespace=args.namespace, labels=dict(args.label),
            xds_address=args.xds_address, dns_address=args.dns_address,
            admin_address=args.admin_address, stats_address=args.stats_address,
            token=args.token, delta=args.delta,
            token_path=str(Path(args.token_path).absolute()) if args.token_path else "",
            xds_ca=str(Path(args.xds_ca).absolute()) if args.xds_ca else "",
            xds_server_name=args.xds_server_name, stats_sink=not args.no_stats_sink,
            stats_flush_interval=args.stats_flush_interval,
            front_set_address=args.front_set_address)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    from controlplane.cli.sidecar_settings import sidecar_settings
    from controlplane.injection.node import run

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.workdir is not None:
        return run(sidecar_settings(args, args.workdir.absolute()), say=say)
    with tempfile.TemporaryDirectory(prefix="dns-sidecar-") as workdir:
        return run(sidecar_settings(args, Path(workdir)), say=say)


def _resolver_host(args: argparse.Namespace) -> int:
    """Start what ``serve --resolver-host-spool`` asks for until SIGTERM or SIGINT, then
    stop it (runtime/spawner.py)."""
    import signal
    import threading

    from controlplane.runtime.spawner import ResolverHost

    setup_logging("info")
    try:
        host = ResolverHost(args.spool)
    except OSError as exc:
        raise ConfigError(flag="--spool", reason=str(exc)) from exc
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        host.run(stop)
    finally:
        host.stop_children()
    return 0


def _xds_certs(args: argparse.Namespace) -> int:
    from controlplane.identity.tlsfiles import write_server_files

    try:
        info = write_server_files(args.dir, args.name, days=args.days)
    except (OSError, ValueError) as exc:
        raise ConfigError(str(exc), flag="--dir") from exc
    print(f"wrote {args.dir}/tls.crt and tls.key ({info.describe()}), signed by "
          f"{args.dir}/ca.crt; keep ca.key out of the Secret")
    return 0


def _serve(args: argparse.Namespace) -> int:
    setup_logging(args.log_level)
    if args.fault_invalid_name:
        logging.getLogger("controlplane").warning(
            "TEST FAULT INJECTION ON: Envoy will reject views containing %s",
            ", ".join(args.fault_invalid_name))
    if args.fault_crash_task:
        logging.getLogger("controlplane").warning(
            "TEST FAULT INJECTION ON: these supervised tasks crash as they start: %s",
            ", ".join(args.fault_crash_task))
    settings = serve_settings(args)
    admin_auth = _admin_authorizer(args, settings.admin)
    identity_api = _identity_api(args, settings.auth,
                                 webhook=settings.webhook.caller_tokenreview)
    from controlplane.app import serve, serve_files

    if args.source != "kubernetes":
        return asyncio.run(serve_files(Path(args.source), settings, admin_auth=admin_auth,
                                       identity_api=identity_api))
    return asyncio.run(serve(settings, _kube_runner(args), admin_auth=admin_auth,
                             identity_api=identity_api))


def _admin_authorizer(args: argparse.Namespace,
                      admin: AdminSettings) -> AdminAuthorizer | None:
    """The admin API's reviews: the API of --kubeconfig/--context, or in-cluster."""
    if admin.auth is not AdminAuthMode.KUBERNETES:
        return None
    from controlplane.identity.admin_auth import AdminAuthorizer
    from controlplane.kube.admin_review import KubeReviewer
    from controlplane.kube.runner import api_client

    try:
        return AdminAuthorizer(KubeReviewer(api_client(args.kubeconfig, args.context),
                                            audiences=list(admin.auth_audiences)))
    except ConfigError as exc:
        raise ConfigError(str(exc), flag="--admin-auth kubernetes") from exc


def _identity_api(args: argparse.Namespace, auth: AuthSettings, *,
                  webhook: bool = False) -> IdentityApi | None:
    """Where sidecars' tokens (and the webhook caller's, ``webhook``) are reviewed: the
    API of --kubeconfig, or in-cluster."""
    if not auth.tokenreview and not webhook:
        return None
    from controlplane.kube.identity import KubeIdentityApi
    from controlplane.kube.runner import api_client

    try:
        return KubeIdentityApi(api_client(args.kubeconfig, args.context))
    except ConfigError as exc:
        raise exc.at("--auth-tokenreview" if auth.tokenreview
                     else "--webhook-caller-tokenreview") from exc


def _kube_runner(args: argparse.Namespace) -> Callable[[Store, Callable[[], None]],
                                                       SourceRunner]:
    from controlplane.kube.runner import KubeRunner, api_client

    try:
        api = api_client(args.kubeconfig, args.context)
    except ConfigError as exc:
        raise exc.at("--kubeconfig") from exc
    # --role resolvers writes no status: the control-plane replicas do (one, by the lease)
    controlplane = args.role == "controlplane"
    election = _election(args) if controlplane else None
    return lambda store, poke: KubeRunner(
        api, store, poke, watch_pods=args.watch_pods,
        write_status=controlplane and not args.no_status,
        watch_timeout=args.watch_timeout, status_min_interval=args.status_interval,
        election=election)


def _election(args: argparse.Namespace) -> Election | None:
    """The leader election the arguments ask for, or None when off; ConfigError when the
    lease or its timings cannot work."""
    from controlplane.kube.leader import Election

    if not args.leader_election:
        return None
    namespace, sep, name = args.lease.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ConfigError(flag="--lease", reason=f"{args.lease!r} is not NAMESPACE/NAME")
    timings = LeaseTimings(duration=args.lease_duration,
                           renew_deadline=args.lease_duration * 2 / 3,
                           renew=args.lease_renew, retry=args.lease_retry)
    if timings.problems():
        raise ConfigError(flag="--lease-duration", reason="leader election: " + "; ".join(
            timings.problems()) + " (the renew deadline is 2/3 of --lease-duration)")
    identity = args.leader_identity or socket.gethostname()
    return Election(identity=identity, namespace=namespace, name=name, timings=timings)
