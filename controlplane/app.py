"""Wiring: source -> store -> hub -> ADS server, plus the admin API, in one event loop.

Every long-running task and thread is supervised (``runtime/supervise.py``): a
crash is logged with its context and fails readiness, and for the app's tasks
(and the Kubernetes threads) the process exits non-zero instead of serving with
a dead loop.

Readiness: ``/readyz`` answers 503 until the source's first full load (every
initial list, for Kubernetes) has been applied; nothing is pushed to Envoy
before that, so a restart never pushes a half-loaded configuration. After
that it answers 200, with ``degraded`` naming any current source problem
(directory gone, API unreachable) while the last configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc
import uvicorn
from watchfiles import awatch

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.errors import ConfigError
from controlplane.core.model import Labels, Workload
from controlplane.core.settings import (
    ResolverAaaa,
    ResolverHop,
    ResolverLifetime,
    ResolverMode,
    ResolverSettings,
    Role,
    Settings,
)
from controlplane.hub.hub import Hub
from controlplane.hub.metrics import watch_event_loop
from controlplane.identity.admin_auth import AdminAuthorizer, AuthCollector
from controlplane.identity.auth import Authenticator, TokenAuthenticator, static_token_key
from controlplane.identity.certs import server_tls
from controlplane.identity.hop_issuer import TenantCerts
from controlplane.identity.limits import CallerLimits, LimitsCollector
from controlplane.identity.tlsfiles import (
    CertificateFiles,
    TlsCollector,
    server_credentials,
    server_ssl_context,
)
from controlplane.identity.tokenreview import (
    IdentityApi,
    authenticator_from_settings,
    identity_collectors,
    token_authenticators,
)
from controlplane.injection.webhook import serve_webhook, webhook_log
from controlplane.policy.selection import static_token_problem
from controlplane.policyserver.client import PolicyDecider, serve_gate
from controlplane.resolvers.dnstap import ResolverReply
from controlplane.resolvers.pool import RESOLVER_TLS_NAME, ResolverPool
from controlplane.runtime import heap as runtime
from controlplane.runtime.debounce import Debouncer
from controlplane.runtime.retry import RetryClock
from controlplane.runtime.spawner import SpoolSpawner
from controlplane.runtime.supervise import Crash, Supervisor
from controlplane.sources.files import FileSource
from controlplane.store.store import Store
from controlplane.telemetry.querylog_service import QueryLogCollector, add_query_log_service
from controlplane.telemetry.resolver_forwarding import ForwardingWindow
from controlplane.telemetry.resolver_reports import (
    ReportsCollector,
    ResolverReports,
    SourceIndex,
    peer_address,
)
from controlplane.telemetry.stats_sink import (
    MetricsSink,
    NodeDirectory,
    TrafficCollector,
    add_metrics_service,
    run_traffic,
)
from controlplane.telemetry.traffic import DnsTraffic
from controlplane.xds.server import AdsServicer, add_ads_service, ads_server

log = logging.getLogger("controlplane")


class _AdminServer(uvicorn.Server):
    """uvicorn without its own signal handling: the control plane decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SourceRunner(Protocol):
    """What the app needs from a source."""

    def load(self, supervisor: Supervisor) -> None: ...  # its threads start under it
    def loaded(self) -> bool: ...
    def problem(self) -> str: ...
    def status(self) -> dict[str, object]: ...
    async def run(self, stop: asyncio.Event) -> None: ...
    def hub_changed(self, hub: Hub) -> None: ...


class FileRunner:
    def __init__(self, root: Path, store: Store, poke: Callable[[], None]) -> None:
        self.source = FileSource(root, store, poke)
        self._loaded = False

    def load(self, supervisor: Supervisor) -> None:
        self.source.load_all()
        self._loaded = self.source.healthy

    def loaded(self) -> bool:
        self._loaded = self._loaded or self.source.healthy
        return self._loaded

    def problem(self) -> str:
        return self.source.problem

    def status(self) -> dict[str, object]:
        return {"kind": "files", "path": str(self.source.root), "healthy": self.source.healthy,
                "problem": self.source.problem or None}

    async def run(self, stop: asyncio.Event) -> None:
        await self.source.watch(stop)

    def hub_changed(self, hub: Hub) -> None:
        return None


def _check_static_tokens(hub: Hub, tokens: list[TokenAuthenticator], *,
                         fatal: bool) -> set[str]:
    """Refuse every static token that cannot stand for one tenant in this configuration
    (``static_token_problem``: its tenant is gone, its labels get another, or it could get
    more than one tenant's view). Before serving (``fatal``) that is a ConfigError naming
    them; after a configuration change they are refused (UNAUTHENTICATED, with the reason)
    until a change makes them good again, and the other tokens keep working. Returns the
    names of the tokens refused now and not before (their open streams must end)."""
    inventory = hub.inventory
    problems: list[str] = []
    newly: set[str] = set()
    for authenticator in tokens:
        refused: dict[str, str] = {}
        for identity in authenticator.identities:
            problem = static_token_problem(
                namespace=identity.namespace,
                namespace_labels=inventory.namespace_labels(identity.namespace),
                labels=dict(identity.labels), tenant=identity.tenant,
                policies=inventory.policies.values())
            if problem is not None:
                refused[identity.name] = problem
                problems.append(f"static token {identity.name!r}: {problem}")
                if authenticator.refused.get(identity.name) != problem and not fatal:
                    log.error("static token %r refused: %s", identity.name, problem)
                    newly.add(identity.name)
        for name in sorted(set(authenticator.refused) - set(refused)):
            log.info("static token %r accepted again", name)
        authenticator.refused = refused
    if fatal and problems:
        raise ConfigError(flag="--auth-tokens", reason="; ".join(problems))
    return newly


async def _watch_tokens(path: Path, tokens: TokenAuthenticator, *,
                        recheck: Callable[[], set[str]], ads: AdsServicer[Any],
                        stop: asyncio.Event) -> None:
    """Read the static token file again whenever it changes (a rotated Secret too: its
    directory is watched). A file that does not parse is logged with its reason and the
    last good tokens stay; otherwise the streams opened with a token that is gone or
    changed end (UNAUTHENTICATED) and reconnect with what their sidecar holds now."""
    def content() -> bytes:
        try:
            return path.read_bytes()
        except OSError:
            return b""
    last = content()
    async for _ in awatch(path.parent, stop_event=stop, debounce=200, recursive=False):
        now = content()
        if now == last:
            continue
        last = now
        try:
            fresh = TokenAuthenticator.from_file(path)
        except ConfigError as exc:
            log.error("static tokens not reloaded, the last good ones stay: %s", exc)
            continue
        gone = tokens.replace(fresh) | recheck()
        ended = ads.end_callers({static_token_key(name) for name in gone},
                                "static token revoked or changed: reconnect")
        log.warning("static tokens reloaded from %s: %d token(s); gone, changed or refused: "
                    "%s; %d stream(s) ended", path, len(fresh.identities),
                    ", ".join(sorted(gone)) or "none", ended)


async def _wait_grpc(server: grpc.aio.Server) -> None:
    await server.wait_for_termination()


async def _stop_ads(server: grpc.aio.Server, ads: AdsServicer[Any], drain_seconds: float) -> None:
    """Move the sidecars to another replica without losing a query.

    First the server stops accepting (listener closed, HTTP/2 GOAWAY on every
    connection), so a reconnection cannot land here again; then the open ADS
    streams are ended with UNAVAILABLE, spread over ``drain_seconds``; Envoy
    reconnects at once (to another endpoint of its xds_cluster, or through the
    Service to another ready pod) and keeps answering from its last
    configuration meanwhile. Calls still open after the grace are cancelled.
    """
    stopping = asyncio.ensure_future(server.stop(grace=drain_seconds + 1.0))
    await asyncio.sleep(0.05)  # let the shutdown (GOAWAY, listener closed) begin first
    ended = await ads.drain(drain_seconds)
    log.info("ADS drained: %d streams told to reconnect elsewhere", ended)
    await stopping


async def serve(settings: Settings, make_runner: Callable[[Store, Callable[[], None]],
                                                         SourceRunner],
                *, admin_auth: AdminAuthorizer | None = None,
                identity_api: IdentityApi | None = None) -> int:
    """Run the control plane with the source ``make_runner`` builds, until SIGINT/SIGTERM.

    ``identity_api``: the API server that sidecars' tokens are reviewed with
    (``settings.auth.tokenreview``, tokenreview.py).

    ``admin_auth``: check every admin API request but the probes (admin_auth.py)."""
    loop = asyncio.get_running_loop()
    store = Store()
    pool = make_resolver_pool(settings.resolvers)
    # external policy servers (policy.server), fed in the background
    decider = PolicyDecider(
        default_ca=_read(settings.policy_server.ca),
        client_cert=_read(settings.policy_server.client_cert),
        client_key=_read(settings.policy_server.client_key))
    gate = None
    if pool is not None:  # the tenant resolvers ask it for forwarded names
        pool.gate_socket = str(pool.workdir / "policy-gate.sock")
        gate = await serve_gate(decider, Path(pool.gate_socket))
    # Views are built and serialised on this one thread, never on the event loop (hub.py);
    # the GIL and full garbage collections set up so that it never stalls the loop either.
    views_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="views")
    # The tenant resolvers are started, reloaded and supervised on this one thread, never on
    # the event loop (a start waits for unbound: 0.1-0.2 s). It lives as long as the
    # process, so the resolvers' death signal (``setpriv --pdeathsig``, which follows the
    # thread that started them) fires only when the control plane dies.
    resolver_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolvers")
    runtime.activate()
    supervisor = Supervisor(crash_faults=settings.fault_crash_tasks)
    hub = Hub(settings, resolvers=pool, decider=decider, worker=views_worker,
              resolver_worker=resolver_worker, supervisor=supervisor)
    stop = asyncio.Event()
    runner: SourceRunner

    async def rebuild() -> None:
        if not runner.loaded():
            return  # never push a half-loaded source
        await hub.apply(store.take, poked_at=debouncer.fired_poke)  # taken on the worker
        if not hub.readiness.is_loaded:
            hub.readiness.loaded()
            log.info("first full load applied: ready")
        log.info("configuration rebuilt: %d tenants, %d input errors",
                 len(hub.tenant_views) - 1, len(hub.input_errors()))
        for check in after_rebuild:
            check()

    after_rebuild: list[Callable[[], object]] = []  # checks of the new configuration
    debouncer = Debouncer(settings.xds.debounce_seconds, rebuild)
    decider.on_change = debouncer.poke  # a table name's decision changed: rebuild

    def poke_threadsafe() -> None:
        loop.call_soon_threadsafe(debouncer.poke)

    runner = make_runner(store, poke_threadsafe)
    status_debouncer = Debouncer(0.2, lambda: runner.hub_changed(hub))
    hub.listeners.append(status_debouncer.poke)
    runner.load(supervisor)
    await rebuild()

    # The sidecars' DNS counters (stats_sink.py, dns_traffic.py).
    traffic = DnsTraffic(max_age=settings.stats.max_age_seconds,
                         stale_after=min(15.0, settings.stats.max_age_seconds))
    # What the tenant resolvers answered, for queries that never reach Envoy's DNS filter.
    resolver_reports = ResolverReports(
        hub.query_log, sources=SourceIndex(lambda: _sidecars(hub)),
        on_record=lambda r: _call_soon(loop, traffic.query_record, node=r.node,
                                       action=r.action, tenant=r.tenant))
    traffic.resolver_counts = resolver_reports.tenant_counts
    if pool is not None:
        def report(tenant: str, reply: ResolverReply) -> None:
            resolver_reports.answer(tenant=tenant, source=reply.source, name=reply.name,
                                    qtype=reply.type, rcode=reply.rcode)
        pool.report_to(report)
    sidecars: _SidecarChannels | None = None
    if settings.role is Role.CONTROLPLANE:
        sidecars = await _serve_sidecars(settings, hub, identity_api=identity_api,
                                         traffic=traffic, after_rebuild=after_rebuild)
    else:
        log.info("--role resolvers: the tenant resolvers only; no ADS, webhook or status "
                 "writes (the control-plane replicas serve the sidecars)")

    def readiness() -> tuple[bool, str]:
        return hub.readiness.state(runner.problem())

    collectors: list[object] = []
    # The source's own metrics (Kubernetes: dnscp_leader, who writes status).
    collectors.extend(getattr(runner, "collectors", list)())
    if sidecars is not None and sidecars.tls_files is not None:
        collectors.append(TlsCollector(sidecars.tls_files))
    if sidecars is not None:  # sidecar TokenReviews, if on
        collectors.extend(identity_collectors(sidecars.authenticator))
    if admin_auth is not None:
        collectors.append(AuthCollector(admin_auth))
        log.info("admin API: bearer token, TokenReview and SubjectAccessReview required "
                 "(except /healthz and /readyz)")
    # the injection webhook's decisions, if on
    injections = webhook_log(settings.webhook) if sidecars is not None else None
    if injections is not None:
        collectors.append(injections)
    collectors.append(TrafficCollector(traffic))
    collectors.append(QueryLogCollector(hub.query_log))
    if sidecars is not None and sidecars.authenticator is not None:
        collectors.append(LimitsCollector(sidecars.limits))
    collectors.append(ReportsCollector(resolver_reports))
    resolver_stats: dict[str, dict[str, float]] = {}  # by tenant, refreshed every second
    resolver_window = ForwardingWindow()  # and their last minute
    admin_app = create_app(AdminReads.of_hub(
        hub, readiness=readiness, source_status=runner.status, resolvers=pool,
        resolver_stats=lambda: resolver_stats,
        resolver_recent=lambda tenant: resolver_window.recent(tenant, time.monotonic()),
        decider=decider, traffic=traffic,
        injections=injections), auth=admin_auth, collectors=collectors)
    config = uvicorn.Config(admin_app, host=settings.admin.host, port=settings.admin.port,
                            log_config=None, access_log=False, lifespan="off")
    if settings.admin.tls_dir:  # HTTPS, the certificate reloaded when its files change
        config.load()
        config.ssl = server_ssl_context(CertificateFiles(Path(settings.admin.tls_dir)))
    admin = _AdminServer(config)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def run_admin() -> None:
        await admin.serve()
        if not stop.is_set():
            raise RuntimeError("admin server stopped (is the port in use?)")

    work: dict[str, Coroutine[Any, Any, None]] = {
        "resolvers": _supervise_resolvers(pool, hub, stop, stats=resolver_stats,
                                          window=resolver_window, thread=resolver_worker),
        "policy-server": decider.run(stop),
        "source": runner.run(stop),
        "rebuild": debouncer.run(stop),
        "status": status_debouncer.run(stop),
        "admin": run_admin(),
        "loop-lag": watch_event_loop(hub.metrics, stop),
        "traffic": run_traffic(traffic, lambda: hub.tenant_views, stop,
                               history_file=(Path(settings.stats.history_file)
                                             if settings.stats.history_file else None)),
    }
    if sidecars is not None:
        work["ads"] = _wait_grpc(sidecars.server)
        if settings.auth.tokens_file and sidecars.static_tokens:
            work["tokens"] = _watch_tokens(
                Path(settings.auth.tokens_file), sidecars.static_tokens[0],
                recheck=sidecars.recheck, ads=sidecars.ads, stop=stop)
    if injections is not None:
        work["webhook"] = serve_webhook(settings.webhook, injections, stop,
                                        identity_api=identity_api)
    # Each runs until stop: a crash, or an end before stop, ends the process.
    tasks = {name: supervisor.task(name, coro, crash=Crash.EXIT, until=stop)
             for name, coro in work.items()}
    admin_url = (f"{'https' if settings.admin.tls_dir else 'http'}://{settings.admin.host}:"
                 f"{settings.admin.port}")
    if sidecars is not None:
        log.info("control plane serving: xds=%s admin=%s console=%s/console/",
                 sidecars.xds_address, admin_url, admin_url)
    else:
        log.info("tenant resolvers serving (--role resolvers): admin=%s", admin_url)
    code = await supervisor.wait(stop)
    stop.set()
    admin.should_exit = True
    if sidecars is not None:
        await _stop_ads(sidecars.server, sidecars.ads, settings.xds.drain_seconds)
    for task in tasks.values():
        task.cancel()
    for task in tasks.values():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if gate is not None:
        gate.close()
    if pool is not None:
        pool.stop_all()
    views_worker.shutdown(wait=False, cancel_futures=True)
    resolver_worker.shutdown(wait=False, cancel_futures=True)
    log.info("control plane stopped")
    return code


@dataclass
class _SidecarChannels:
    """What ``--role controlplane`` serves the sidecars: the gRPC server (ADS, the stats
    sink, the query log) and who may use it."""

    server: grpc.aio.Server
    ads: AdsServicer[Any]
    authenticator: Authenticator | None
    limits: CallerLimits
    static_tokens: list[TokenAuthenticator]
    recheck: Callable[[], set[str]]
    tls_files: CertificateFiles | None
    xds_address: str  # host:port, as bound


async def _serve_sidecars(settings: Settings, hub: Hub, *, identity_api: IdentityApi | None,
                          traffic: DnsTraffic, after_rebuild: list[Callable[[], object]]
                          ) -> _SidecarChannels:
    """Start the gRPC server the sidecars use, with their identities and limits."""
    def pod_labels(namespace: str, name: str) -> Labels | None:  # the Pod watch, if on
        pod = hub.inventory.pods.get((namespace, name))
        return pod.labels if pod is not None else None

    authenticator = authenticator_from_settings(settings.auth, identity_api,
                                                pod_labels=pod_labels)
    static_tokens = token_authenticators(authenticator)
    grpc_server = ads_server()
    # Per-caller caps on every channel a sidecar writes to (identity/limits.py).
    limits = CallerLimits(max_streams=settings.auth.max_streams,
                          max_nodes=settings.auth.max_nodes)
    ads = add_ads_service(grpc_server, hub, authenticator, limits)

    def recheck_tokens() -> set[str]:
        refused = _check_static_tokens(hub, static_tokens, fatal=False)
        if refused:
            ads.end_callers({static_token_key(name) for name in refused},
                            "static token refused by the new configuration")
        return refused
    if static_tokens:  # fatal only when the first full load came before serving
        after_rebuild.append(recheck_tokens)
        if hub.readiness.is_loaded:
            _check_static_tokens(hub, static_tokens, fatal=True)
    add_query_log_service(grpc_server, hub.query_log, hub.node_tenant,
                          on_record=lambda r: traffic.query_record(node=r.node, action=r.action,
                                                                   tenant=r.tenant),
                          authenticator=authenticator, limits=limits,
                          node_caller=hub.node_caller)
    add_metrics_service(grpc_server, MetricsSink(
        traffic, NodeDirectory(lambda: list(hub.streams.connections.values())),
        authenticator=authenticator, limits=limits))
    tls_files = (CertificateFiles(Path(settings.xds.tls_dir)) if settings.xds.tls_dir
                 else None)
    xds_bind = f"{settings.xds.host}:{settings.xds.port}"
    if tls_files is not None:
        xds_port = grpc_server.add_secure_port(xds_bind, server_credentials(tls_files))
        log.info("ADS over TLS on %s:%d (certificate from %s, reloaded when it changes)",
                 settings.xds.host, xds_port, settings.xds.tls_dir)
    else:
        xds_port = grpc_server.add_insecure_port(xds_bind)
        log.warning("ADS in PLAINTEXT on %s:%d: tokens and views cross the network "
                    "unencrypted and sidecars cannot verify the server. Use --xds-tls-dir "
                    "outside local runs.", settings.xds.host, xds_port)
    if authenticator is None:
        log.warning("INSECURE MODE: ADS on %s:%d accepts any client, and any sidecar can ask "
                    "for any tenant's view. For local use only.", settings.xds.host, xds_port)
    else:
        log.info("ADS, the stats sink and the query log on %s:%d require a bearer token "
                 "bound to the node (at most %d streams and %d node ids per caller)",
                 settings.xds.host, xds_port, limits.max_streams, limits.max_nodes)
    await grpc_server.start()
    return _SidecarChannels(grpc_server, ads, authenticator, limits, static_tokens,
                            recheck_tokens, tls_files, f"{settings.xds.host}:{xds_port}")


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., object],
               **kwargs: object) -> None:
    """``fn(**kwargs)`` on the event loop, from another thread."""
    loop.call_soon_threadsafe(lambda: fn(**kwargs))


def _fronted(workload: Workload) -> bool:
    """Whether the sidecar's DNS front sends its queries to the resolver (then Envoy's DNS
    filter forwards nothing itself): its node metadata names the set listener
    (DNS_FRONT_SET_ADDRESS, docs/dns-front.md)."""
    return workload.front_set_port != 0


def _sidecars(hub: Hub) -> Iterator[tuple[str, str, str, bool]]:
    """(tenant, address, node id, whether its Envoy forwards A/AAAA itself) of every
    connected sidecar, the address its ADS stream comes from (the same pod). Called from
    the report readers' threads: the event loop may change the dict meanwhile."""
    for _ in range(5):
        try:
            connections = list(hub.streams.connections.values())
            break
        except RuntimeError:
            continue
    else:
        return
    for c in connections:
        if c.workload is not None and c.view_key is not None:
            yield (c.view_key.tenant, peer_address(c.peer), c.workload.node_id,
                   not _fronted(c.workload))


def _read(path: str) -> str:
    return Path(path).read_text() if path else ""


def make_resolver_pool(settings: ResolverSettings) -> ResolverPool | None:
    if settings.mode is ResolverMode.NONE:
        log.warning("tenant resolvers are off (--tenant-resolvers none): forwarding views "
                    "forward nothing")
        return None
    workdir = (Path(settings.dir) if settings.dir
               else Path(tempfile.mkdtemp(prefix="dns-cp-resolvers-")))
    hop_tls = hop_mtls = None
    hop_certs = None
    tls_dir = Path(settings.tls_dir) if settings.tls_dir else workdir / "hop-tls"
    if settings.hop is ResolverHop.TLS:
        hop_tls = server_tls(tls_dir, RESOLVER_TLS_NAME)
    elif settings.hop is ResolverHop.MTLS:
        try:
            hop_mtls = server_tls(tls_dir, RESOLVER_TLS_NAME, signing=True)
        except ValueError as exc:
            raise ConfigError(flag="--resolver-tls-dir", reason=str(exc)) from exc
        assert hop_mtls.ca_key_file is not None
        hop_certs = TenantCerts(
            hop_mtls.ca_pem.encode(), hop_mtls.ca_key_file.read_bytes(),
            lifetime=datetime.timedelta(seconds=settings.hop_cert_lifetime_seconds))
    return ResolverPool(workdir, hop_tls=hop_tls, hop_mtls=hop_mtls, hop_certs=hop_certs,
                        hop_port=settings.hop_port,
                        default_ca_bundle=settings.upstream_ca_bundle,
                        listen_host=settings.listen_host,
                        advertise_host=settings.advertise_host,
                        access=settings.allow, owns_workdir=not settings.dir,
                        persistent=settings.lifetime is ResolverLifetime.PERSISTENT,
                        spawner=(SpoolSpawner(Path(settings.host_spool))
                                 if settings.host_spool else None),
                        map_aaaa=settings.aaaa is ResolverAaaa.MAPPED,
                        table_updates=settings.table_updates)


async def _supervise_resolvers(pool: ResolverPool | None, hub: Hub, stop: asyncio.Event, *,
                               stats: dict[str, dict[str, float]], thread: Executor,
                               window: ForwardingWindow | None = None,
                               interval: float = 0.25, stats_every: int = 4) -> None:
    """Restart dead tenant resolvers every ``interval`` (a dead one is back on its own port
    within about 0.3 s, while the sidecars' connects wait for it: clusters.RESTART_*), and
    read their statistics into ``stats`` every ``stats_every`` rounds (once a second).
    Restarts run on ``thread``, the one that starts every resolver (see
    ``ResolverPool._prefix``), so the event loop never waits for one."""
    if pool is None:
        await stop.wait()
        return
    loop = asyncio.get_running_loop()
    retry = RetryClock()
    rounds = 0
    while not stop.is_set():
        restarted = await loop.run_in_executor(thread, pool.supervise)
        # tenants' hop certificates at half-life: new views
        renewed = await loop.run_in_executor(thread, pool.renew_due)
        # Tenants whose resolver could not start (e.g. the resolver host was not up yet)
        # are tried again with the next rebuild: 5 s after, then doubling up to 60 s.
        failed = retry.due(bool(pool.errors), now=time.monotonic())
        if restarted or renewed or failed:
            hub.recompute()
        if rounds % stats_every == 0:
            latest = await asyncio.to_thread(pool.stats)
            stats.clear()
            stats.update(latest)
            if window is not None:
                window.observe(time.monotonic(), latest)
        rounds += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def serve_files(source_dir: Path, settings: Settings, *,
                      admin_auth: AdminAuthorizer | None = None,
                      identity_api: IdentityApi | None = None) -> int:
    return await serve(settings, lambda store, poke: FileRunner(source_dir, store, poke),
                       admin_auth=admin_auth, identity_api=identity_api)
