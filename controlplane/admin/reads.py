"""What the admin API and the console read, handed in explicitly (``AdminReads``).

The admin side never reaches through the hub: it gets the read surfaces it
shows, each typed by what it uses (``ViewsRead``: the views as built;
``StreamsRead``: the connected streams; the hub's counters and snapshot cache;
the query log; the resolver pool and its counters; the policy server's
decisions; the sidecars' traffic; the injection webhook's log; readiness and
the source's status). ``AdminReads.of_hub`` is the wiring for a hub, used by
``app.py`` and by tests; everything that is not the hub's is passed to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory
from controlplane.core.settings import Settings
from controlplane.dns.status import ProxyState
from controlplane.dns.views import TenantView
from controlplane.dns.vips import Allocation
from controlplane.hub.config_history import ConfigHistory
from controlplane.hub.hub import Hub
from controlplane.hub.metrics import HubMetrics
from controlplane.hub.streams import Connection
from controlplane.injection.webhook import InjectionLog
from controlplane.policyserver.client import PolicyDecider
from controlplane.telemetry.querylog import QueryLog
from controlplane.telemetry.traffic import DnsTraffic
from controlplane.xds.snapshot import SnapshotCache

ResolverStats = Mapping[str, Mapping[str, float]]  # unbound's counters by tenant


class ViewsRead(Protocol):
    """The configuration as built: the input, the views, their errors and status."""

    @property
    def inventory(self) -> Inventory: ...
    @property
    def tenant_views(self) -> dict[str, TenantView]: ...
    @property
    def vips(self) -> Allocation: ...
    def input_errors(self) -> list[InputError]: ...
    def policy_statuses(self, *, pods_watched: bool) -> dict[str, dict[str, Any]]: ...


class StreamsRead(Protocol):
    """The connected ADS streams."""

    @property
    def connections(self) -> Mapping[str, Connection]: ...
    @property
    def history(self) -> ConfigHistory: ...
    def nodes(self) -> list[dict[str, Any]]: ...
    def proxy_states(self) -> list[ProxyState]: ...


class ResolversRead(Protocol):
    """The tenant resolvers, as the admin API lists them."""

    def describe(self) -> list[dict[str, object]]: ...


def _no_stats() -> ResolverStats:
    return {}


def _no_window(tenant: str) -> dict[str, Any] | None:
    return None


def _no_peers() -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class AdminReads:
    settings: Settings
    views: ViewsRead
    streams: StreamsRead
    metrics: HubMetrics
    cache: SnapshotCache
    query_log: QueryLog
    readiness: Callable[[], tuple[bool, str]]  # (ready, why not / degraded)
    source_status: Callable[[], dict[str, object]] | None = None
    resolvers: ResolversRead | None = None  # None: --tenant-resolvers none
    resolver_stats: Callable[[], ResolverStats] = _no_stats
    # A tenant resolver's last minute (telemetry/resolver_forwarding.ForwardingWindow)
    resolver_recent: Callable[[str], dict[str, Any] | None] = _no_window
    decider: PolicyDecider | None = None
    traffic: DnsTraffic | None = None
    injections: InjectionLog | None = None
    # The mutual hop's peers the hop cluster lists now (--resolver-hop-peers); (): its own
    hop_peers: Callable[[], tuple[str, ...]] = _no_peers

    @classmethod
    def of_hub(cls, hub: Hub, *, readiness: Callable[[], tuple[bool, str]] | None = None,
               source_status: Callable[[], dict[str, object]] | None = None,
               resolvers: ResolversRead | None = None,
               resolver_stats: Callable[[], ResolverStats] = _no_stats,
               resolver_recent: Callable[[str], dict[str, Any] | None] = _no_window,
               decider: PolicyDecider | None = None, traffic: DnsTraffic | None = None,
               injections: InjectionLog | None = None) -> AdminReads:
        """The hub's read surfaces, with the rest as given. ``readiness``: None for the
        hub's own (the source's problem unknown)."""
        return cls(settings=hub.settings, views=hub, streams=hub.streams, metrics=hub.metrics,
                   cache=hub.cache, query_log=hub.query_log,
                   readiness=readiness if readiness is not None else hub.readiness.state,
                   source_status=source_status, resolvers=resolvers,
                   resolver_stats=resolver_stats, resolver_recent=resolver_recent,
                   decider=decider, traffic=traffic,
                   injections=injections,
                   hop_peers=lambda: tuple(str(p) for p in hub.snapshots.hop_peers))
