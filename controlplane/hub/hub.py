"""The hub: changes in, per-view snapshots out. It coordinates; the work lives elsewhere.

- ``view_builder.py`` turns the inventory and what changed into tenant views
  (records, policies, VIPs), redoing only what a change reaches;
- ``view_snapshots.py`` translates and serialises the views that changed, once
  per view key, and installs them in the ``SnapshotCache``;
- ``streams.py`` keeps every ADS stream, the view each one gets, and their
  accounting; ``metrics.py`` the counters, histograms and change traces.

The hub holds a reference to each and applies, on the event loop, what must
happen there: the policy server's targets (asyncio), the policy each stream
gets, and the new snapshots. With a ``worker`` (``serve``), ``apply`` runs the
view builder and the renderer on that one thread, and the tenant resolvers'
``apply`` (starts, table reloads: ``unbound-control`` calls of tens of ms) on
``resolver_worker``, the one thread that starts every resolver (their death
signal follows it: ``resolvers/pool.py``), so a rebuild never holds the loop.
Without them (tests, benchmarks, tools), the same path (``_rebuild``) runs inline
through ``set_inventory``/``recompute``. (``serve`` also sets the interpreter up
for it: ``runtime/heap.py``.)

A change does not wait for the resolvers when they need no start: when every
forwarding tenant already has a resolver up (the last apply gave each an address,
no error), the views are rendered and installed with those addresses, and the
resolvers reload their tables after that (their zone texts cost 0.1 s of CPU at
10,000 names: not in the change's path, nor competing with its render); a
different answer from the resolvers (one restarted on new ports, an error) renders
and installs again (``_rebuild``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar

from controlplane.core.errors import InputError
from controlplane.core.inventory import Batch, Inventory, Key
from controlplane.core.model import FailureMode
from controlplane.core.settings import Settings
from controlplane.core.workload import DEFAULT_HOP_HOST, DEFAULT_HOP_PORT, workload_from_node
from controlplane.dns.hop_peers import hop_peers, peers_may_change
from controlplane.dns.status import (
    PolicySelector,
    ProxyState,
    conflicts_by_policy,
    policy_status,
)
from controlplane.dns.view_builder import ViewBuild, ViewBuilder
from controlplane.dns.views import (
    DEFAULT_TENANT,
    Forwarding,
    ResolverHop,
    TenantView,
    Upstream,
    with_resolver,
)
from controlplane.dns.vips import Allocation
from controlplane.hub.front_sets import FrontSets
from controlplane.hub.metrics import (
    PUSH_LATENCY_BUCKETS,
    ChangeTrace,
    Histogram,
    HubMetrics,
)
from controlplane.hub.streams import Connection, Streams
from controlplane.hub.view_key import ViewKey
from controlplane.hub.view_snapshots import (
    FrontTurn,
    Job,
    Rendered,
    ViewSnapshots,
    render_all,
)
from controlplane.policy.decisions import ExternalDecision, failure_mode
from controlplane.policy.selection import CompiledPolicy, Selection, select_policy
from controlplane.policyserver.client import PolicyDecider
from controlplane.resolvers.pool import ResolverDirectory
from controlplane.runtime import heap as runtime
from controlplane.runtime.readiness import Readiness
from controlplane.runtime.supervise import Crash, Supervisor
from controlplane.telemetry.querylog import QueryLog
from controlplane.xds.delta import DeltaOutgoing
from controlplane.xds.protocol import Ack, Event, Outgoing
from controlplane.xds.snapshot import SnapshotCache, ViewSnapshot

log = logging.getLogger("controlplane.hub.hub")

T = TypeVar("T")
SELECTIONS_KEPT = 4096  # workloads (namespace, labels) whose policy selection is kept


class Offload(Protocol):
    """Runs one heavy step (build, render): on the worker thread, or inline."""

    def __call__(self, fn: Callable[..., T], *args: Any) -> Awaitable[T]: ...


__all__ = ["PUSH_LATENCY_BUCKETS", "Connection", "Histogram", "Hub", "ViewKey"]

# What the tenant resolvers said: tenant -> (address, hop) of each one up, and why the
# others are not (``ResolverDirectory.errors``).
Resolved = tuple[dict[str, tuple[Upstream, ResolverHop | None]], dict[str, str]]
NOT_RESOLVED: Resolved = ({}, {})


class Hub:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 resolvers: ResolverDirectory | None = None,
                 decider: PolicyDecider | None = None,
                 worker: Executor | None = None,
                 resolver_worker: Executor | None = None,
                 supervisor: Supervisor | None = None,
                 front_clock: Callable[[], float] = time.monotonic) -> None:
        """``resolver_worker``: the one thread ``resolvers`` are applied on (with a
        ``worker``; app.py also supervises them there). ``supervisor``: starts the
        rebuilds and renders the hub schedules on the loop (a crash fails readiness,
        ``runtime/supervise.py``); its readiness is the replica's (``readiness``).
        ``front_clock``: when the DNS fronts' waiting pairs and held records are
        due (monotonic, like the loop's timers)."""
        self.settings = settings
        self.metrics = HubMetrics()
        self.cache = SnapshotCache()
        self.streams = Streams(self.metrics, self.cache, clock=clock)
        self.cache.add_listener(self.streams.wake)
        self.snapshots = ViewSnapshots(self.cache, changed_at=self.streams.changed_at)
        self.builder = ViewBuilder(settings.dns)
        self.inventory = Inventory()
        # The policy selected per (namespace, labels) for ``_selected_for`` (an inventory:
        # which policy applies depends on it alone): the streams of one workload, and a
        # fleet reconnecting, select once per workload (``_selections``).
        self._selected_for: Inventory | None = None
        self._selected: dict[tuple[str, Any], Selection] = {}
        self.tenant_views: dict[str, TenantView] = {}
        self.policy_errors: dict[str, InputError] = {}
        self.compiled: dict[str, CompiledPolicy] = {}
        self.vips = Allocation({}, ())
        self.listeners: list[Callable[[], None]] = []  # told when status-relevant state changes
        self.resolvers: ResolverDirectory | None = resolvers
        self.decider = decider  # external policy servers' decisions (policy_client.py)
        self.query_log = QueryLog(lambda: self.compiled, server_verdict=self._server_verdict)
        self._clock = clock
        self._worker = worker
        self._resolver_worker = resolver_worker
        self._last_resolved: Resolved | None = None  # the resolvers' last answer
        self._supervisor = supervisor if supervisor is not None else Supervisor()
        self._lock: asyncio.Lock | None = None  # one rebuild at a time (with a worker)
        self._rendering: set[ViewKey] = set()  # keys being rendered for a new stream
        self._built = False  # the first full build is done: streams may be answered
        self._resolved: dict[str, tuple[TenantView, Upstream | None, object, TenantView]] = {}
        self._trace: ChangeTrace | None = None  # the last rebuild, until its first ACK
        self._wave: ChangeTrace | None = None  # the last rebuild that changed a snapshot
        self._changed_at = clock()
        # The DNS fronts' sets: new pairs lag the table (front_sets.py); the timer renders
        # the fronted keys of a tenant again when its held pairs are due.
        self.front_sets = FrontSets(settings.xds.front_settle_seconds,
                                    table_limit=settings.xds.front_table_limit)
        self._front_clock = front_clock
        self._front_initial = True  # until the first full build's views are dispatched
        self._front_timer: asyncio.TimerHandle | None = None
        self._front_timer_at = 0.0
        self._front_rendering = False  # a due render is on the worker
        self.streams.on_sent = self._sent
        self.streams.on_acked = self._acked
        self._rebuild_inline(self.inventory, None)
        self._built = False  # that was the empty start, not a load: streams wait for one
        self._front_initial = True

    # -- what other modules read ----------------------------------------------
    @property
    def readiness(self) -> Readiness:
        """Whether this replica takes new streams: loaded once the first full load of the
        source is applied (``app.py`` says when), failed by a crashed task."""
        return self._supervisor.readiness

    def input_errors(self) -> list[InputError]:
        return list(self.inventory.errors) + [self.policy_errors[k]
                                              for k in sorted(self.policy_errors)]

    # -- input: inline (no worker) ------------------------------------------------
    def set_inventory(self, inventory: Inventory, *, changed_at: float | None = None,
                      changed: Collection[Key] | None = None) -> None:
        """Apply a new inventory inline; ``changed``: the keys of the objects that changed
        (None: found by comparing with the previous inventory); ``changed_at``: when the
        input changed (for push latency)."""
        self._changed_at = changed_at if changed_at is not None else self._clock()
        self._rebuild_inline(inventory, changed)

    def recompute(self) -> None:
        """Rebuild with what the hub has (e.g. after a tenant resolver restarted).

        With a worker and a running loop, the rebuild is scheduled there instead."""
        if self._worker is not None and _running_loop() is not None:
            self._spawn(self.apply(None), "rebuild", {})
            return
        self._rebuild_inline(self.inventory, ())

    def _rebuild_inline(self, inventory: Inventory, changed: Collection[Key] | None) -> None:
        """``_rebuild`` here and now, its heavy steps called inline (no loop needed)."""
        _run_inline(self._rebuild(inventory, changed, self._start_trace(None, None),
                                  offload=_call, resolver_offload=_call, overlap=False))

    # -- input: on a worker thread ----------------------------------------------
    async def apply(self, batch: Batch | Callable[[], Batch] | None, *,
                    poked_at: float | None = None) -> None:
        """Apply what the store says changed, the heavy parts on the worker thread.

        ``batch``: the store's ``Batch``, or its ``take`` (then taken on the worker: a
        large batch costs time to merge); None: nothing changed in the input (resolvers
        restarted, the policy server's decisions changed), the views are redone where
        needed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if callable(batch):
                batch = await self._offload(batch)
            inventory = batch.inventory if batch is not None else self.inventory
            changed = batch.changed if batch is not None else frozenset()
            seen = batch.seen_at if batch is not None else None
            self._changed_at = seen or poked_at or self._clock()
            trace = self._start_trace(seen, poked_at)
            if batch is not None:
                trace.phases.update(batch.source_seconds)
                trace.changed = len(batch.changed)
            await self._rebuild(inventory, changed, trace, offload=self._offload,
                                resolver_offload=self._offload_resolvers,
                                overlap=self._resolver_worker is not None)

    async def _rebuild(self, inventory: Inventory, changed: Collection[Key] | None,
                       trace: ChangeTrace, *, offload: Offload, resolver_offload: Offload,
                       overlap: bool) -> None:
        """The one build path: build -> resolvers -> adopt -> render -> install.

        Build and render go through ``offload`` (the worker thread, or inline), the
        resolvers through ``resolver_offload`` (their thread, or inline); adopting and
        installing happen here, on the caller's thread (the loop). ``overlap``: the
        resolvers may apply after the views are installed (``_resolve_first``)."""
        started = time.perf_counter()
        build = await offload(self.builder.build, inventory, changed,
                              self._externals(inventory))
        trace.phases["build"] = time.perf_counter() - started
        forwards = {t: v.forward for t, v in build.views.items() if v.forward is not None}
        if self.resolvers is not None and not overlap:  # the resolvers' table texts, off
            await offload(self.resolvers.prepare, forwards)  # the loop too (else: _resolve)
        resolved, later = await self._resolve_first(forwards, trace, overlap=overlap,
                                                    resolver_offload=resolver_offload)
        jobs = self._adopt(inventory, build, trace, resolved)
        self._update_hop_peers(inventory, changed)
        started = time.perf_counter()
        rendered = await offload(render_all, jobs, self.settings, self._front_turn(),
                               self.snapshots.hop_peers)
        trace.phases["render"] = time.perf_counter() - started
        self._install(rendered, trace)
        if later:  # the views are out: now the resolvers' tables (not competing for CPU)
            started = time.perf_counter()
            actual = await resolver_offload(self._resolve, forwards, True)
            trace.phases["resolvers"] = time.perf_counter() - started
            self._last_resolved = actual
            if actual != resolved:  # e.g. one restarted on new ports: the views again
                jobs = self._adopt(inventory, build, trace, actual)
                rendered = await offload(render_all, jobs, self.settings,
                                         self._front_turn(), self.snapshots.hop_peers)
                trace.views |= self.snapshots.install(rendered, current=self._current,
                                                      changed_at=self._changed_at)
                self._changed()
        if not self._built:
            # Streams that connected before the first full build got nothing (see
            # ``snapshot_for``): give them their views now, built from the whole inventory.
            self._built = True
            self._assign_all()
            self._refresh_snapshots()
            self._front_initial = False
            for key in self.streams.active_views():
                self.streams.wake(key)
        self._schedule_front()

    async def _offload(self, fn: Callable[..., T], *args: Any) -> T:
        if self._worker is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._worker, _quietly, fn,
                                                                *args)

    async def _offload_resolvers(self, fn: Callable[..., T], *args: Any) -> T:
        if self._resolver_worker is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self._resolver_worker, fn,
                                                                *args)

    async def _resolve_first(self, forwards: dict[str, Forwarding], trace: ChangeTrace, *,
                             overlap: bool, resolver_offload: Offload
                             ) -> tuple[Resolved, bool]:
        """What to render the views with, and whether the resolvers apply after install.

        With ``overlap``, when the last apply had every forwarding tenant up (no start
        can be needed but a restart's), its answer is used and the apply (the tables'
        files, made by the names that changed, and unbound's reload of them: ~26 ms of
        unbound's CPU for a 10,000-name zone) waits until the views are installed: beside
        the render it slowed the render and Envoy's answer by 10-30 ms at 10,000 names
        for 5-25 ms less to the resolver's answer (RESULTS.md section 21). Otherwise the
        apply is waited for first."""
        if self.resolvers is None:
            return NOT_RESOLVED, False
        last = self._last_resolved
        if overlap and last is not None and not last[1] and set(last[0]) == set(forwards):
            return last, True
        started = time.perf_counter()
        resolved = await resolver_offload(self._resolve, forwards, overlap)
        trace.phases["resolvers"] = time.perf_counter() - started
        self._last_resolved = resolved
        return resolved, False

    def _resolve(self, forwards: Mapping[str, Forwarding], prepare: bool) -> Resolved:
        """The resolvers made to match ``forwards`` (on the resolvers' thread): where each
        listens, its hop, and why the others are not up. ``prepare``: make the tables' zone
        texts here first (the rebuild did not, on the worker)."""
        assert self.resolvers is not None
        if prepare:
            self.resolvers.prepare(forwards)
        addresses = self.resolvers.apply(forwards)
        return ({t: (a, self.resolvers.hop_for(t)) for t, a in addresses.items()},
                dict(self.resolvers.errors))

    # -- the steps ------------------------------------------------------------------
    def _start_trace(self, seen_at: float | None, poked_at: float | None) -> ChangeTrace:
        self.metrics.rebuilds += 1
        trace = ChangeTrace(number=self.metrics.rebuilds, seen_at=seen_at, poked_at=poked_at,
                            started_at=time.time())
        return trace

    def _server_verdict(self, tenant: str, name: str) -> tuple[bool, str] | None:
        """What decides ``name`` for the query log: None without a policy server, else the
        server's live decision or the failure mode's (``querylog.ServerVerdict``)."""
        policy = self.inventory.policies.get(tenant)
        if self.decider is None or policy is None or policy.policy_server is None:
            return None
        d = self.decider.cache.get(tenant, name, self.decider.clock())
        if d is not None:
            return d.allow, d.source
        mode = failure_mode(policy)
        return mode is FailureMode.OPEN, f"failure mode {mode.value}"

    def _externals(self, inventory: Inventory) -> dict[str, Mapping[str, ExternalDecision]]:
        """The policy server's decisions for each tenant that has one (read on the loop)."""
        if self.decider is None:
            return {}
        return {name: self.decider.table_decisions(name)
                for name, p in inventory.policies.items() if p.policy_server is not None}

    def _adopt(self, inventory: Inventory, build: ViewBuild, trace: ChangeTrace,
               resolved: Resolved) -> list[Job]:
        """On the loop: resolvers' addresses, policy-server targets, policy selection;
        what to render."""
        started = time.perf_counter()
        errors = dict(build.errors)
        views = self._with_resolvers(build.views, errors, resolved)
        if self.decider is not None:
            self.decider.sync(views, inventory.policies, inventory, zone=self.settings.dns.zone)
            problems = {**{t: o.error for t, o in self.decider.outages.items()},
                        **self.decider.target_errors}
            for tenant, reason in problems.items():
                errors[f"policy-server:{tenant}"] = InputError(
                    kind="DnsPolicy", namespace="", name=tenant, origin="policy.server",
                    reason=f"policy server: {reason}; the failure mode decides")
        self.inventory = inventory
        self.vips = build.vips
        self.compiled = build.compiled
        self.tenant_views = views
        self.policy_errors = errors
        trace.names = len(build.changed_names)
        trace.rebuilt = build.rebuilt
        if build.selection_changed:  # which policy applies can only change with these
            self._selected_for = None
            self._assign_all()
        jobs = self.snapshots.stale(self.streams.active_views(), views)
        trace.phases["adopt"] = time.perf_counter() - started
        return jobs

    def _install(self, rendered: list[Rendered], trace: ChangeTrace) -> None:
        started = time.perf_counter()
        trace.views = self.snapshots.install(rendered, current=self._current,
                                             changed_at=self._changed_at)
        self.front_sets.forget(self.front_sets.tenants() - set(self.tenant_views))
        trace.phases["install"] = time.perf_counter() - started
        trace.installed_at = time.time()
        self.metrics.observe_phases(trace)
        self.metrics.traces.append(trace)
        if trace.views:
            self._trace = self._wave = trace
        self._changed()

    def _current(self, key: ViewKey, view: TenantView) -> bool:
        """Whether a snapshot rendered from ``view`` is still wanted for ``key``."""
        return self.streams.has_view(key) and self.tenant_views.get(key.tenant) is view

    def _with_resolvers(self, views: dict[str, TenantView], errors: dict[str, InputError],
                        resolved: Resolved) -> dict[str, TenantView]:
        """Point each forwarding view at its running tenant resolver (``resolved``)."""
        forwards = {t for t, v in views.items() if v.forward is not None}
        addresses, failures = resolved
        for tenant, reason in failures.items():
            if tenant in forwards:
                errors[f"resolver:{tenant}"] = InputError(
                    kind="DnsPolicy", namespace="", name=tenant, origin="tenant resolver",
                    reason=f"{reason}; nothing is forwarded for this tenant")
        out = {}
        for tenant, view in views.items():
            address, hop = addresses.get(tenant, (None, None))
            last = self._resolved.get(tenant)
            if (last is not None and last[0] is view and last[1] == address
                    and last[2] == hop):
                out[tenant] = last[3]  # the same view object as before: renders are skipped
                continue
            out[tenant] = with_resolver(view, address, hop)
            self._resolved[tenant] = (view, address, hop, out[tenant])
        for gone in set(self._resolved) - set(views):
            del self._resolved[gone]
        return out

    def _update_hop_peers(self, inventory: Inventory, changed: Collection[Key] | None) -> None:
        """The mutual hop's peers from ``--resolver-hop-peers`` (a Service's EndpointSlices
        are read again only when one in its namespace changed); a change re-renders the hop
        cluster of the installed snapshots, nothing else (``ViewSnapshots.set_hop_peers``)."""
        spec = self.settings.resolvers.hop_peers
        if not spec.given or (spec.service is not None and not peers_may_change(spec, changed)):
            return
        peers = hop_peers(spec, inventory)
        if peers == self.snapshots.hop_peers:
            return
        log.info("resolver hop peers: %s", ", ".join(map(str, peers)) or
                 "none known: each sidecar's hop reaches its own replica")
        self.snapshots.set_hop_peers(peers, changed_at=self._changed_at)

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    # -- streams -------------------------------------------------------------------
    def open(self, peer: str, *, delta: bool = False,
             notify: Callable[[], None] | None = None) -> Connection:
        return self.streams.open(peer, delta=delta, notify=notify)

    def attach(self, conn: Connection, *, tenant: str = "", caller: str = "") -> None:
        """Called once the first request (with the node) has arrived; ``tenant``: the
        one tenant the caller stands for, whatever the node claims."""
        assert conn.stream.node is not None
        conn.bound_tenant, conn.caller = tenant, caller
        conn.workload = workload_from_node(conn.stream.node)
        for warning in conn.workload.warnings:
            log.warning("node %s: %s", conn.workload.node_id or conn.peer, warning,
                        extra={"node": conn.workload.node_id})
        self._assign(conn)
        log.info("node %s connected: namespace=%s view=%s", conn.workload.node_id,
                 conn.workload.namespace, conn.view_key,
                 extra={"node": conn.workload.node_id, "view": conn.view_name})
        self._refresh_snapshots()
        self._changed()

    def _assign(self, conn: Connection,
                selections: dict[tuple[str, Any], Selection] | None = None) -> None:
        w = conn.workload
        if w is None:
            return
        # The hop listener exists only with a TLS hop or a DNS front; otherwise its address
        # must not split views that are byte-identical.
        fronted = bool(w.front_set_port)
        hop = ((w.hop_listen_host, w.hop_listen_port)
               if fronted or (self.resolvers is not None and self.resolvers.hop is not None)
               else (DEFAULT_HOP_HOST, DEFAULT_HOP_PORT))
        if selections is None:
            selections = self._selections()
        memo = (w.namespace, w.labels)
        selection = selections.get(memo)
        if selection is None:
            selection = select_policy(w, self.inventory.namespace_labels(w.namespace),
                                      self.inventory.policies.values())
            selections[memo] = selection
        tenant = selection.policy.tenant if selection.policy else DEFAULT_TENANT
        if conn.bound_tenant and tenant != conn.bound_tenant:
            # A static token's tenant: its view, or (the tenant gone) the default one.
            tenant = (conn.bound_tenant if conn.bound_tenant in self.tenant_views
                      else DEFAULT_TENANT)
            selection = Selection(None)
        if selection.conflicts and selection.conflicts != conn.conflicts:
            log.warning("node %s: DnsPolicy %s applies; %s also match (conflict)", w.node_id,
                        tenant, ", ".join(selection.conflicts), extra={"node": w.node_id})
        conn.conflicts = selection.conflicts
        key = ViewKey(tenant, w.dns_listen_host, w.dns_listen_port, w.stats_listen_host,
                      w.stats_listen_port, *hop, w.front_set_host if fronted else "",
                      w.front_set_port)
        self._set_view(conn, key)

    def _selections(self) -> dict[tuple[str, Any], Selection]:
        """The selections made for the current inventory (none kept past
        ``SELECTIONS_KEPT`` workloads: pods come and go with new labels)."""
        if self._selected_for is not self.inventory or len(self._selected) >= SELECTIONS_KEPT:
            self._selected_for, self._selected = self.inventory, {}
        return self._selected

    def _assign_all(self) -> None:
        selections: dict[tuple[str, Any], Selection] = {}  # streams of one workload agree
        for conn in list(self.streams.connections.values()):
            self._assign(conn, selections)

    def _set_view(self, conn: Connection, key: ViewKey) -> None:
        old = conn.view_key
        self.streams.set_view(conn, key)
        if old is not None and old != key and not self.streams.has_view(old):
            self.snapshots.discard(old)

    def _refresh_snapshots(self) -> None:
        """Render the snapshots that streams need and do not have yet (a new view key).

        Without a worker, inline; with one, on the worker, and the streams are woken when
        it is in place (until then they wait: a stream sends nothing without a snapshot).
        """
        jobs = self.snapshots.stale(self.streams.active_views(), self.tenant_views)
        if not jobs:
            return
        if self._worker is None or _running_loop() is None:
            self._end_wave(self.snapshots.install(
                render_all(jobs, self.settings, self._front_turn(), self.snapshots.hop_peers),
                current=self._current, changed_at=self._changed_at))
            self._schedule_front()
            return
        jobs = [j for j in jobs if j[0] not in self._rendering]
        if jobs:
            self._rendering.update(job[0] for job in jobs)
            self._spawn(self._render_later(jobs, self._front_turn()), "render for new streams",
                        {"view": ", ".join(str(job[0]) for job in jobs)})

    async def _render_later(self, jobs: list[Job], front: FrontTurn) -> None:
        try:
            rendered = await self._offload(render_all, jobs, self.settings, front,
                                           self.snapshots.hop_peers)
        finally:
            self._rendering.difference_update(job[0] for job in jobs)
        self._end_wave(self.snapshots.install(rendered, current=self._current,
                                              changed_at=self._changed_at))
        self._schedule_front()
        self._refresh_snapshots()  # a view that changed while these were rendered

    # -- the DNS fronts' sets ----------------------------------------------------------
    def _front_turn(self) -> FrontTurn:
        return FrontTurn(self.front_sets, self._front_clock(), self._front_initial)

    def render_due_sets(self) -> set[ViewKey]:
        """Render again the fronted keys of every tenant whose held pairs are due (the
        timer calls it; without a loop, tests call it after moving their clock). Returns
        the keys rendered (inline) or scheduled (on the worker)."""
        if self._front_rendering:
            return set()  # its end arms the timer again if anything is still due
        turn = self._front_turn()
        due = self.front_sets.due(turn.now)
        jobs: list[Job] = [(key, self.tenant_views[key.tenant], None, self.snapshots.domains)
                           for key in sorted(self.streams.active_views())
                           if key.front is not None and key.tenant in due
                           and key.tenant in self.tenant_views]
        # A tenant no fronted stream shows any more: nothing to publish to, so nothing due.
        self.front_sets.forget(due - {job[0].tenant for job in jobs})
        if jobs and (self._worker is None or _running_loop() is None):
            self._end_wave(self.snapshots.install(
                render_all(jobs, self.settings, turn, self.snapshots.hop_peers),
                current=self._current, changed_at=self._changed_at))
            self._schedule_front()
        elif jobs:
            self._front_rendering = True
            self._spawn(self._render_due(jobs, turn), "render due DNS front sets",
                        {"view": ", ".join(str(job[0]) for job in jobs)})
        else:
            self._schedule_front()
        return {job[0] for job in jobs}

    async def _render_due(self, jobs: list[Job], turn: FrontTurn) -> None:
        try:
            rendered = await self._offload(render_all, jobs, self.settings, turn,
                                           self.snapshots.hop_peers)
        finally:
            self._front_rendering = False
        self._end_wave(self.snapshots.install(rendered, current=self._current,
                                              changed_at=self._changed_at))
        self._schedule_front()

    def _schedule_front(self) -> None:
        """Arm the timer for the next held pair (on the loop; none without one)."""
        nxt = self.front_sets.next_due()
        loop = _running_loop()
        if nxt is None or loop is None:
            return
        at = nxt[0]
        if self._front_timer is not None:
            if self._front_timer_at <= at:
                return  # an earlier (or the same) moment is already armed
            self._front_timer.cancel()
        self._front_timer_at = at
        self._front_timer = loop.call_later(max(0.0, at - self._front_clock()),
                                            self._front_due)

    def _front_due(self) -> None:
        self._front_timer = None
        self.render_due_sets()

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str,
               context: Mapping[str, str]) -> None:
        """Run ``coro`` on the loop; a crash is a bug: logged, and readiness fails."""
        self._supervisor.task(what, coro, crash=Crash.READINESS, context=context)

    def node_tenant(self, node_id: str) -> str | None:
        """The tenant of a connected node, or None."""
        return self.streams.node_tenant(node_id)

    def node_caller(self, node_id: str) -> str:
        """Who opened a connected node's ADS stream (``Identity.key``), "" when unknown."""
        owner = self.streams.node_owner(node_id)
        return owner[1] if owner is not None else ""

    def snapshot_for(self, conn: Connection) -> ViewSnapshot | None:
        """Nothing before the first full build: a stream that connects while a restarted
        control plane is still loading waits (its Envoy keeps serving what it has) rather
        than getting a view of a partial inventory (the ``_default`` view, NXDOMAIN for
        every name). "Built": a build since construction (``apply``, ``set_inventory``),
        or readiness said loaded (an empty source is a full one)."""
        if conn.view_key is None or not (self._built or self.readiness.is_loaded):
            return None
        return self.cache.get(conn.view_key)

    def record(self, conn: Connection, event: Event) -> None:
        self._changed()
        self.streams.record(conn, event)

    def record_sent(self, conn: Connection, out: Outgoing | DeltaOutgoing) -> None:
        self.streams.record_sent(conn, out)

    def close(self, conn: Connection) -> None:
        gone = self.streams.close(conn)
        if gone is not None:
            self.snapshots.discard(gone)
        if conn.workload:
            log.info("node %s disconnected", conn.workload.node_id,
                     extra={"node": conn.workload.node_id})
        self._changed()

    # -- change traces -----------------------------------------------------------------
    def _end_wave(self, installed: set[ViewKey]) -> None:
        """Snapshots installed outside a rebuild (a front set's held pairs due, a new
        stream's view): the responses that follow are no longer the last rebuild's wave."""
        if self._wave is not None and installed & self._wave.views:
            self._wave = None

    def _sent(self, conn: Connection, out: Outgoing | DeltaOutgoing) -> None:
        trace = self._trace
        if trace is not None and trace.first_sent_at is None and conn.view_key in trace.views:
            trace.first_sent_at = time.time()
        wave = self._wave
        if wave is None or conn.view_key not in wave.views:
            return
        snap = self.cache.get(conn.view_key)
        ts = snap.types.get(out.type_url) if snap is not None else None
        if ts is not None and ts.version == out.version:  # not a CDS keeping clusters
            wave.sent += 1
            wave.last_sent_at = time.time()

    def _acked(self, conn: Connection, event: Ack) -> None:
        trace = self._trace
        if (trace is None or trace.first_ack_at is not None or trace.first_sent_at is None
                or conn.view_key not in trace.views):
            return
        trace.first_ack_at = time.time()
        trace.first_ack_node = conn.workload.node_id if conn.workload else conn.peer
        self._trace = None
        log.info("%s; first ACK from %s", trace.summary(), trace.first_ack_node,
                 extra={"node": trace.first_ack_node})

    # -- read side (admin API, status) ----------------------------------------
    def policy_statuses(self, *, pods_watched: bool) -> dict[str, dict[str, Any]]:
        """The desired status of every DnsPolicy known, valid or not."""
        inv = self.inventory
        proxies = self.streams.proxy_states()
        selector = PolicySelector(inv)  # one selection per workload for the whole walk
        conflicts = conflicts_by_policy(inv, [p.workload for p in proxies], selector=selector)
        by_tenant: dict[str, list[ProxyState]] = {}
        for proxy in proxies:
            by_tenant.setdefault(proxy.tenant, []).append(proxy)
        invalid = {e.name: e for e in inv.errors if e.kind == "DnsPolicy"}
        out = {}
        for name in sorted(set(inv.policies) | set(invalid)):
            error = invalid.get(name) or self.policy_errors.get(name)
            out[name] = policy_status(
                inv.policies.get(name), name, inventory=inv, error=error,
                view=self.tenant_views.get(name), proxies=by_tenant.get(name, []),
                conflicts=conflicts.get(name, set()), pods_watched=pods_watched,
                policy_server=self.decider.reachable(name) if self.decider else None,
                selector=selector)
        return out

    def service_entry_statuses(self) -> dict[tuple[str, str], dict[str, Any]]:
        """VIPs per ServiceEntry (only those that have one)."""
        out: dict[tuple[str, str], dict[str, Any]] = {}
        for (ns, name, host), vip in sorted(self.vips.vips.items()):
            status = out.setdefault((ns, name), {"addresses": [], "conditions": []})
            status["addresses"].append({"host": host, "value": vip})
        for status in out.values():
            status["conditions"] = [{"type": "VIPAllocated", "status": "True",
                                     "reason": "Allocated", "message": ", ".join(
                                         f"{a['host']}={a['value']}"
                                         for a in status["addresses"])}]
        return out


def _quietly(fn: Callable[..., T], *args: Any) -> T:
    """``fn`` on the worker, without a full garbage collection midway (runtime.py)."""
    with runtime.quiet():
        return fn(*args)


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """``fn`` inline: awaiting this never suspends."""
    return fn(*args)


def _run_inline(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` to its end now, without a loop: every await in it must complete at
    once (its steps go through ``_call``); one that would suspend is a bug."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("an inline rebuild tried to wait")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None

