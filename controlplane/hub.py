"""The hub: inventory in, per-view snapshots out, and the state of every stream.

It owns no sockets and no tasks: sources call ``set_inventory``; the ADS
driver calls ``open``/``attach``/``record``/``close``; the admin API reads.
A rebuild computes each tenant's view once, works out which view every
connected Envoy gets, and translates and serialises only the views whose
content changed (``SnapshotCache.serializations`` counts it).
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from controlplane.errors import InputError
from controlplane.faults import poison
from controlplane.incremental_records import IncrementalRecords
from controlplane.inventory import Inventory
from controlplane.model import Workload
from controlplane.names import Pattern
from controlplane.policy import CompiledPolicy, select_policy
from controlplane.policy_client import PolicyDecider
from controlplane.querylog import QueryLog
from controlplane.record_index import RecordIndex
from controlplane.records import RecordOptions
from controlplane.resolvers import ResolverDirectory
from controlplane.settings import Settings
from controlplane.snapshot import SnapshotCache, ViewSnapshot
from controlplane.status import ProxyState, conflicts_by_policy, policy_status
from controlplane.translate import translate_view
from controlplane.translate.types import LISTENER_TYPE, SHORT_NAMES
from controlplane.views import (
    DEFAULT_TENANT,
    TenantView,
    Upstream,
    build_tenant_view,
    with_resolver,
)
from controlplane.vips import Allocation, allocate
from controlplane.workload import DEFAULT_HOP_HOST, DEFAULT_HOP_PORT, workload_from_node
from controlplane.xds.delta import DeltaOutgoing, DeltaStream
from controlplane.xds.protocol import Ack, Event, Nack, Outgoing, SotwStream

log = logging.getLogger("controlplane.hub")


PUSH_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Cumulative buckets, the Prometheus way; read by the admin API's collector."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class ViewKey(NamedTuple):
    """Envoys with equal keys get byte-identical resources and share one snapshot."""

    tenant: str
    host: str
    port: int
    stats_host: str = "0.0.0.0"
    stats_port: int = 0
    hop_host: str = DEFAULT_HOP_HOST
    hop_port: int = DEFAULT_HOP_PORT

    def __str__(self) -> str:
        stats = f"+stats:{self.stats_port}" if self.stats_port else ""
        hop = f"+hop:{self.hop_port}" if self.hop_port != DEFAULT_HOP_PORT else ""
        return f"{self.tenant}@{self.host}:{self.port}{stats}{hop}"


@dataclass
class Connection:
    conn_id: str
    peer: str
    stream: SotwStream | DeltaStream
    connected_at: float
    workload: Workload | None = None
    view_key: ViewKey | None = None
    conflicts: tuple[str, ...] = ()
    notify: Callable[[], None] = field(default=lambda: None)


class Hub:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time,
                 resolvers: ResolverDirectory | None = None,
                 decider: PolicyDecider | None = None) -> None:
        self.settings = settings
        self.cache = SnapshotCache()
        self.cache.add_listener(self._view_changed)
        self.inventory = Inventory()
        self.ready = False
        self.not_ready_reason = "the first full load of the source has not finished"
        self.tenant_views: dict[str, TenantView] = {}
        self.policy_errors: dict[str, InputError] = {}
        self._last_good_upstream: dict[str, Upstream] = {}
        self._built: dict[ViewKey, TenantView] = {}
        self.connections: dict[str, Connection] = {}
        self._ids = itertools.count(1)
        self._clock = clock
        self.rebuilds = 0
        self.nacks_total = 0
        self.listeners: list[Callable[[], None]] = []  # told when status-relevant state changes
        self.compiled: dict[str, CompiledPolicy] = {}
        # Per policy: (the policy, its compiled form, name -> decision); reset when it changes.
        self._decisions: dict[str, tuple[Any, CompiledPolicy, dict[str, Any]]] = {}
        self.vips = Allocation({}, ())
        self._incremental = IncrementalRecords()  # the cluster's names, updated by change
        self._policies: dict[str, Any] = {}
        self._namespaces: dict[str, Any] = {}
        self._changed_at = clock()
        self.resolvers: ResolverDirectory | None = resolvers
        self.decider = decider  # external policy servers' decisions (policy_client.py)
        self.resolver_stats: dict[str, dict[str, float]] = {}  # unbound counters by tenant
        self._view_changed_at: dict[ViewKey, float] = {}  # when the input behind a view changed
        self.push_latency = Histogram(PUSH_LATENCY_BUCKETS)
        self.pushes: collections.Counter[tuple[str, str]] = collections.Counter()  # (view, type)
        self.nacks: collections.Counter[tuple[str, str]] = collections.Counter()  # (view, type)
        self._observed: set[tuple[str, str, str]] = set()  # (conn, type, version) timed already
        self.query_log = QueryLog(lambda: self.compiled)
        self.recompute()

    # -- input -------------------------------------------------------------
    def set_inventory(self, inventory: Inventory, *, changed_at: float | None = None) -> None:
        """Apply a new inventory; ``changed_at`` is when the input changed (for push latency)."""
        self.inventory = inventory
        self._changed_at = changed_at if changed_at is not None else self._clock()
        self.recompute()

    def input_errors(self) -> list[InputError]:
        return list(self.inventory.errors) + [self.policy_errors[k]
                                              for k in sorted(self.policy_errors)]

    def recompute(self) -> None:
        """Rebuild every tenant view; re-serialise only the views that changed."""
        self.rebuilds += 1
        inv = self.inventory
        allocation = (allocate(inv, self.settings.vip_range) if self.settings.vip_range
                      else Allocation({}, ()))
        self.vips = allocation
        changed = self._incremental.update(inv, RecordOptions(
            zone=self.settings.zone, ttl=self.settings.ttls(),
            max_answers=self.settings.max_answers, aaaa_mapped=self.settings.aaaa_mapped,
            vips=allocation.vips))
        records = self._incremental.sorted_records()
        views: dict[str, TenantView] = {}
        errors: dict[str, InputError] = {}
        index = RecordIndex(self._incremental.records, self._incremental.by_suffix,
                            self._incremental.wildcards)
        namespaces_changed = inv.namespaces != self._namespaces
        compiled: dict[str, CompiledPolicy] = {}
        for name in sorted(inv.policies):
            policy = inv.policies[name]
            cached = self._decisions.get(name)
            fresh = cached is None or cached[0] != policy
            if cached is None or fresh:
                cached = (policy, CompiledPolicy.of(policy), {})
                self._decisions[name] = cached
            compiled[name] = cached[1]
            previous = self.tenant_views.get(name)
            if (previous is not None and not fresh and not namespaces_changed
                    and name not in self.policy_errors and not previous.forwarding
                    and policy.policy_server is None  # its decisions change the view too
                    and not self._concerns(cached[1], cached[2], changed)):
                views[name] = previous  # nothing it can see changed: reuse the view
                continue
            external = (self.decider.table_decisions(name)
                        if self.decider is not None and policy.policy_server is not None
                        else None)
            view, error = build_tenant_view(policy, records, inv, self.settings,
                                            last_good_upstream=self._last_good_upstream.get(name),
                                            compiled=cached[1], decisions=cached[2],
                                            index=index, external=external)
            if error:
                errors[name] = InputError(kind="DnsPolicy", namespace="", name=name,
                                          reason=error, origin="policy")
            elif view.forward is not None:
                self._last_good_upstream[name] = view.forward.server
            views[view.tenant] = view
        self._namespaces = dict(inv.namespaces)
        for message in allocation.errors:
            errors[f"vip:{message}"] = InputError(kind="ServiceEntry", namespace="", name="",
                                                  reason=message, origin="vip allocation")
        default, error = build_tenant_view(None, records, inv, self.settings)
        if error:
            errors[DEFAULT_TENANT] = InputError(kind="Settings", namespace="",
                                                name="default-upstream", reason=error)
        views[DEFAULT_TENANT] = default
        self.tenant_views = self._with_resolvers(views, errors)
        if self.decider is not None:
            self.decider.sync(views, inv.policies, inv, zone=self.settings.zone)
            problems = {**{t: o.error for t, o in self.decider.outages.items()},
                        **self.decider.target_errors}
            for tenant, reason in problems.items():
                errors[f"policy-server:{tenant}"] = InputError(
                    kind="DnsPolicy", namespace="", name=tenant, origin="policy.server",
                    reason=f"policy server: {reason}; the failure mode decides")
        selection_changed = namespaces_changed or inv.policies != self._policies
        self._policies = dict(inv.policies)
        self.compiled = compiled
        for gone in set(self._decisions) - set(inv.policies):
            del self._decisions[gone]
        self.policy_errors = errors
        if selection_changed:  # which policy applies can only change with these
            for conn in list(self.connections.values()):
                self._assign(conn)
        self._refresh_snapshots()
        self._changed()

    def _with_resolvers(self, views: dict[str, TenantView],
                        errors: dict[str, InputError]) -> dict[str, TenantView]:
        """Point each forwarding view at its running tenant resolver."""
        forwards = {t: v.forward for t, v in views.items() if v.forward is not None}
        addresses: dict[str, Upstream] = {}
        if self.resolvers is not None:
            addresses = self.resolvers.apply(forwards)
            for tenant, reason in self.resolvers.errors.items():
                if tenant in forwards:
                    errors[f"resolver:{tenant}"] = InputError(
                        kind="DnsPolicy", namespace="", name=tenant, origin="tenant resolver",
                        reason=f"{reason}; nothing is forwarded for this tenant")
        hop = self.resolvers.hop if self.resolvers is not None else None
        return {t: with_resolver(v, addresses.get(t), hop) for t, v in views.items()}

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    @staticmethod
    def _concerns(compiled: CompiledPolicy, decisions: dict[str, Any], changed: set[str]
                  ) -> bool:
        """Whether any changed name is, or was, in this tenant's (non-forwarding) view.

        The policy is unchanged (else the view is rebuilt anyway), so a name's
        decision is too: one that is not answered now was not in the view before.
        """
        for name in changed:
            d = decisions.get(name)
            if d is None:
                d = compiled.classify_pattern(Pattern(name))
                decisions[name] = d
            if d.action.answers:
                return True
        return False

    def _refresh_snapshots(self) -> None:
        active = {c.view_key for c in self.connections.values() if c.view_key is not None}
        for key in sorted(active):
            view = self.tenant_views[key.tenant]
            if self._built.get(key) == view and self.cache.get(key) is not None:
                continue
            resources = translate_view(
                view, host=key.host, port=key.port,
                resolver_timeout_ms=int(self.settings.resolver_timeout_seconds * 1000),
                stats=(key.stats_host, key.stats_port) if key.stats_port else None,
                hop=(key.hop_host, key.hop_port))
            if self.settings.fault_invalid_names:
                poison(resources, self.settings.fault_invalid_names)
            self._built[key] = view
            if self.cache.set(key, resources):
                self._view_changed_at[key] = self._changed_at
        for key in [k for k in self._built if k not in active]:
            del self._built[key]
            self.cache.discard(key)

    # -- streams -----------------------------------------------------------
    def open(self, peer: str, *, delta: bool = False) -> Connection:
        conn_id = f"{'d' if delta else 's'}{next(self._ids)}"
        stream: SotwStream | DeltaStream = DeltaStream(conn_id) if delta else SotwStream(conn_id)
        conn = Connection(conn_id=conn_id, peer=peer, stream=stream,
                          connected_at=self._clock())
        self.connections[conn_id] = conn
        return conn

    def attach(self, conn: Connection) -> None:
        """Called once the first request (with the node) has arrived."""
        assert conn.stream.node is not None
        conn.workload = workload_from_node(conn.stream.node)
        for warning in conn.workload.warnings:
            log.warning("node %s: %s", conn.workload.node_id or conn.peer, warning,
                        extra={"node": conn.workload.node_id})
        self._assign(conn)
        log.info("node %s connected: namespace=%s view=%s", conn.workload.node_id,
                 conn.workload.namespace, conn.view_key,
                 extra={"node": conn.workload.node_id, "view": str(conn.view_key)})
        self._refresh_snapshots()
        self._changed()

    def _assign(self, conn: Connection) -> None:
        w = conn.workload
        if w is None:
            return
        selection = select_policy(w, self.inventory.namespace_labels(w.namespace),
                                  self.inventory.policies.values())
        tenant = selection.policy.tenant if selection.policy else DEFAULT_TENANT
        if selection.conflicts and selection.conflicts != conn.conflicts:
            log.warning("node %s: DnsPolicy %s applies; %s also match (conflict)", w.node_id,
                        tenant, ", ".join(selection.conflicts), extra={"node": w.node_id})
        conn.conflicts = selection.conflicts
        # The hop listener exists only with a TLS hop; otherwise its address must not split
        # views that are byte-identical.
        hop = ((w.hop_listen_host, w.hop_listen_port)
               if self.resolvers is not None and self.resolvers.hop is not None
               else (DEFAULT_HOP_HOST, DEFAULT_HOP_PORT))
        key = ViewKey(tenant, w.dns_listen_host, w.dns_listen_port, w.stats_listen_host,
                      w.stats_listen_port, *hop)
        if key != conn.view_key:
            conn.view_key = key
            conn.notify()

    def node_tenant(self, node_id: str) -> str | None:
        """The tenant of a connected node, or None."""
        for conn in self.connections.values():
            if conn.workload is not None and conn.workload.node_id == node_id and conn.view_key:
                return conn.view_key.tenant
        return None

    def snapshot_for(self, conn: Connection) -> ViewSnapshot | None:
        return self.cache.get(conn.view_key) if conn.view_key else None

    def record(self, conn: Connection, event: Event) -> None:
        node = conn.workload.node_id if conn.workload else conn.peer
        short = SHORT_NAMES.get(event.type_url, event.type_url)
        self._changed()
        view = str(conn.view_key)
        if isinstance(event, Nack):
            self.nacks_total += 1
            self.nacks[(view, short)] += 1
            log.error("node %s rejected %s version %s: %s", node, short, event.version,
                      event.error, extra={"node": node, "view": str(conn.view_key)})
        elif isinstance(event, Ack):
            log.debug("node %s acked %s version %s", node, short, event.version)
            snap = self.snapshot_for(conn)
            ts = snap.types.get(event.type_url) if snap else None
            mark = (conn.conn_id, event.type_url, event.version)
            if (ts is not None and ts.version == event.version and conn.view_key is not None
                    and mark not in self._observed):
                self._observed.add(mark)
                started = self._view_changed_at.get(conn.view_key)
                if started is not None:
                    self.push_latency.observe(max(0.0, self._clock() - started))

    def record_sent(self, conn: Connection, out: Outgoing | DeltaOutgoing) -> None:
        self.pushes[(str(conn.view_key), SHORT_NAMES.get(out.type_url, out.type_url))] += 1
        log.debug("sent %s version %s to %s", SHORT_NAMES.get(out.type_url), out.version,
                  conn.conn_id)

    def close(self, conn: Connection) -> None:
        self.connections.pop(conn.conn_id, None)
        self._observed = {m for m in self._observed if m[0] != conn.conn_id}
        if conn.workload:
            log.info("node %s disconnected", conn.workload.node_id,
                     extra={"node": conn.workload.node_id})
        self._refresh_snapshots()
        self._changed()

    def _view_changed(self, key: object) -> None:
        for conn in self.connections.values():
            if conn.view_key == key:
                conn.notify()

    # -- read side (admin API, status) ----------------------------------------
    def proxy_states(self) -> list[ProxyState]:
        out = []
        for conn in self.connections.values():
            if conn.workload is None or conn.view_key is None:
                continue
            snap = self.cache.get(conn.view_key)
            lds = conn.stream.types.get(LISTENER_TYPE)
            current = bool(snap and lds and lds.acked_version
                           and lds.acked_version == snap.types[LISTENER_TYPE].version)
            out.append(ProxyState(conn.workload, conn.view_key.tenant, current))
        return out

    def policy_statuses(self, *, pods_watched: bool) -> dict[str, dict[str, Any]]:
        """The desired status of every DnsPolicy known, valid or not."""
        inv = self.inventory
        proxies = self.proxy_states()
        conflicts = conflicts_by_policy(inv, [p.workload for p in proxies])
        invalid = {e.name: e for e in inv.errors if e.kind == "DnsPolicy"}
        out = {}
        for name in sorted(set(inv.policies) | set(invalid)):
            error = invalid.get(name) or self.policy_errors.get(name)
            out[name] = policy_status(
                inv.policies.get(name), name, inventory=inv, error=error,
                view=self.tenant_views.get(name), proxies=proxies,
                conflicts=conflicts.get(name, set()), pods_watched=pods_watched,
                policy_server=self.decider.reachable(name) if self.decider else None)
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

    # -- read side (admin API) ---------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for conn in sorted(self.connections.values(), key=lambda c: c.conn_id):
            w = conn.workload
            types = {}
            for type_url, st in conn.stream.types.items():
                types[SHORT_NAMES.get(type_url, type_url)] = {
                    "type_url": type_url,
                    "sent_version": st.sent_version,
                    "acked_version": st.acked_version or None,
                    "nacked_version": st.nacked_version or None,
                    "last_nack_error": st.nack_error or None,
                    "acks": st.acks,
                    "nacks": st.nacks,
                }
            out.append({
                "stream": conn.conn_id,
                "protocol": "delta" if isinstance(conn.stream, DeltaStream) else "sotw",
                "peer": conn.peer,
                "node_id": w.node_id if w else None,
                "namespace": w.namespace if w else None,
                "labels": dict(w.labels) if w else None,
                "tenant": conn.view_key.tenant if conn.view_key else None,
                "view": str(conn.view_key) if conn.view_key else None,
                "dns_listen_address": f"{w.dns_listen_host}:{w.dns_listen_port}" if w else None,
                "stats_listen_address": (f"{w.stats_listen_host}:{w.stats_listen_port}"
                                         if w and w.stats_listen_port else None),
                "policy_conflicts": list(conn.conflicts),
                "warnings": list(w.warnings) if w else [],
                "connected_at": conn.connected_at,
                "types": types,
            })
        return out
