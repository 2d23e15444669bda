"""Every ADS stream and its state: who is connected, which view each one gets.

``Streams`` is the registry the hub keeps: ``open``/``close`` as streams come
and go, ``set_view`` when a stream's view is chosen, and, per view, the
streams to wake when its snapshot changes (``wake``). It also does the
per-stream accounting (ACKs, NACKs, pushes, the push latency of each new
version) and answers the admin API's questions about nodes. Attaching and
closing cost the stream, not the number of streams.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.core.model import Workload
from controlplane.dns.status import ProxyState
from controlplane.hub.config_history import ConfigEvent, ConfigHistory
from controlplane.hub.metrics import HubMetrics
from controlplane.hub.view_key import ViewKey
from controlplane.translate.types import LISTENER_TYPE, ROUTE_TYPE, SHORT_NAMES
from controlplane.xds.delta import DeltaOutgoing, DeltaStream
from controlplane.xds.protocol import Ack, Event, Nack, Outgoing, SotwStream
from controlplane.xds.snapshot import SnapshotCache

log = logging.getLogger("controlplane.hub.hub")

WAKE_BATCH = 16  # streams woken per event-loop iteration when their view changes


@dataclass(slots=True)
class Connection:
    conn_id: str
    peer: str
    stream: SotwStream | DeltaStream
    connected_at: float
    workload: Workload | None = None
    view_key: ViewKey | None = None
    # ``str(view_key)``, the view's label in metrics and logs, made once per view chosen
    # rather than for every response sent ("None" as ``str(None)``: no view yet).
    view_name: str = "None"
    conflicts: tuple[str, ...] = ()
    # The one tenant the caller stands for (a static token's ``tenant:``): its view,
    # whatever the node claims. "": chosen by the workload's namespace and labels.
    bound_tenant: str = ""
    caller: str = ""  # who opened the stream (``Identity.key``); "" without auth
    notify: Callable[[], None] = field(default=lambda: None)
    # (type URL, version) pairs whose ACK was timed already (push latency counts once).
    timed: set[tuple[str, str]] = field(default_factory=set)


class Streams:
    """The connected streams, by id and by view."""

    def __init__(self, metrics: HubMetrics, cache: SnapshotCache, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics = metrics
        self.cache = cache
        self.connections: dict[str, Connection] = {}
        self._by_view: dict[ViewKey, dict[str, Connection]] = {}
        # The streams with a view, by node id: the query log asks per record batch whose
        # a node is (``node_owner``), which must not scan 10,000 connections.
        self._by_node: dict[str, dict[str, Connection]] = {}
        self.changed_at: dict[ViewKey, float] = {}  # when the input behind a view changed
        self._ids = itertools.count(1)
        self._clock = clock
        self._to_wake: collections.deque[Connection] = collections.deque()
        self._waking = False
        self.history = ConfigHistory()  # pushes, ACKs and NACKs, bounded (config_history.py)
        # Told of the first response and the first ACK of each view version (ChangeTrace).
        self.on_sent: Callable[[Connection, Outgoing | DeltaOutgoing], None] = lambda c, o: None
        self.on_acked: Callable[[Connection, Ack], None] = lambda c, e: None

    def open(self, peer: str, *, delta: bool = False,
             notify: Callable[[], None] | None = None) -> Connection:
        conn_id = f"{'d' if delta else 's'}{next(self._ids)}"
        stream: SotwStream | DeltaStream = DeltaStream(conn_id) if delta else SotwStream(conn_id)
        conn = Connection(conn_id=conn_id, peer=peer, stream=stream, connected_at=self._clock())
        if notify is not None:
            conn.notify = notify
        self.connections[conn_id] = conn
        return conn

    def set_view(self, conn: Connection, key: ViewKey) -> bool:
        """Give ``conn`` the view ``key``; True (and the stream woken) when it changed."""
        if key == conn.view_key:
            return False
        self._leave(conn)
        conn.view_key, conn.view_name = key, str(key)
        self._by_view.setdefault(key, {})[conn.conn_id] = conn
        if conn.workload is not None:
            self._by_node.setdefault(conn.workload.node_id, {})[conn.conn_id] = conn
        conn.notify()
        return True

    def close(self, conn: Connection) -> ViewKey | None:
        """Forget ``conn``; returns its view when no other stream has it any more."""
        self.connections.pop(conn.conn_id, None)
        return self._leave(conn)

    def _leave(self, conn: Connection) -> ViewKey | None:
        key = conn.view_key
        if key is None:
            return None
        if conn.workload is not None:
            node = conn.workload.node_id
            same_node = self._by_node.get(node, {})
            same_node.pop(conn.conn_id, None)
            if not same_node:
                self._by_node.pop(node, None)
        members = self._by_view.get(key)
        if members is not None:
            members.pop(conn.conn_id, None)
            if not members:
                del self._by_view[key]
                self.changed_at.pop(key, None)
                return key
        return None

    def active_views(self) -> set[ViewKey]:
        """The view keys at least one stream has."""
        return set(self._by_view)

    def has_view(self, key: ViewKey) -> bool:
        return key in self._by_view

    def wake(self, key: object) -> None:
        """The snapshot of view ``key`` changed: wake its streams.

        On an event loop, ``WAKE_BATCH`` streams at a time, one batch per loop iteration
        (across every view that changed): each woken stream sends its response in the
        next iteration, and a thousand sends in one iteration would hold the loop (every
        other stream and request) for as long as they all take."""
        conns = list(self._by_view.get(key, {}).values())  # type: ignore[call-overload]
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            for conn in conns:
                conn.notify()
            return
        self._to_wake.extend(conns)
        if not self._waking:
            self._waking = True
            loop.call_soon(self._wake_batch, loop)

    def _wake_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        for _ in range(min(WAKE_BATCH, len(self._to_wake))):
            self._to_wake.popleft().notify()
        if self._to_wake:
            loop.call_soon(self._wake_batch, loop)
        else:
            self._waking = False

    # -- per-stream accounting ---------------------------------------------------
    def record(self, conn: Connection, event: Event) -> None:
        node = conn.workload.node_id if conn.workload else conn.peer
        short = SHORT_NAMES.get(event.type_url, event.type_url)
        self.history.add(ConfigEvent(
            self._clock(), node, conn.conn_id, "nack" if isinstance(event, Nack) else "ack",
            short, event.version, event.error if isinstance(event, Nack) else ""))
        if isinstance(event, Nack):
            view = conn.view_name
            self.metrics.nacks_total += 1
            self.metrics.nacks[(view, short)] += 1
            log.error("node %s rejected %s version %s: %s", node, short, event.version,
                      event.error, extra={"node": node, "view": view})
        elif isinstance(event, Ack):
            log.debug("node %s acked %s version %s", node, short, event.version)
            snap = self.cache.get(conn.view_key) if conn.view_key else None
            ts = snap.types.get(event.type_url) if snap else None
            mark = (event.type_url, event.version)
            if (ts is not None and ts.version == event.version and conn.view_key is not None
                    and mark not in conn.timed):
                conn.timed.add(mark)
                started = self.changed_at.get(conn.view_key)
                if started is not None:
                    self.metrics.push_latency.observe(max(0.0, self._clock() - started))
                self.on_acked(conn, event)

    def record_sent(self, conn: Connection, out: Outgoing | DeltaOutgoing) -> None:
        short = SHORT_NAMES.get(out.type_url, out.type_url)
        self.metrics.pushes[(conn.view_name, short)] += 1
        self.history.add(ConfigEvent(
            self._clock(), conn.workload.node_id if conn.workload else conn.peer,
            conn.conn_id, "sent", short, out.version))
        log.debug("sent %s version %s to %s", SHORT_NAMES.get(out.type_url), out.version,
                  conn.conn_id)
        self.on_sent(conn, out)

    # -- read side ---------------------------------------------------------------
    def node_tenant(self, node_id: str) -> str | None:
        """The tenant of a connected node, or None."""
        owner = self.node_owner(node_id)
        return owner[0] if owner is not None else None

    def node_owner(self, node_id: str) -> tuple[str, str] | None:
        """The tenant of a connected node and who opened its stream (``Identity.key``; ""
        without auth), or None."""
        for conn in self._by_node.get(node_id, {}).values():
            if conn.view_key is not None:
                return conn.view_key.tenant, conn.caller
        return None

    def proxy_states(self) -> list[ProxyState]:
        out = []
        for conn in self.connections.values():
            if conn.workload is None or conn.view_key is None:
                continue
            snap = self.cache.get(conn.view_key)
            lds = conn.stream.types.get(LISTENER_TYPE)
            current = bool(snap and lds and lds.acked_version
                           and lds.acked_version == snap.types[LISTENER_TYPE].version)
            rds = conn.stream.types.get(ROUTE_TYPE)  # a DNS front's set, when asked for
            if current and snap and rds is not None and ROUTE_TYPE in snap.types:
                current = rds.acked_version == snap.types[ROUTE_TYPE].version
            out.append(ProxyState(conn.workload, conn.view_key.tenant, current))
        return out

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
