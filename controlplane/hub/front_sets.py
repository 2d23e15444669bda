"""Which (name, type) pairs each tenant's DNS front may route to Envoy now.

The front (``docs/dns-front.md``) polls the set every second and routes a listed pair to
Envoy's DNS table. A pair must reach the table before the set: else the front asks an
Envoy that does not know the name yet, which answers NXDOMAIN. The table is sent at
once; the set lags it: a pair new to a tenant's view is published ``settle`` seconds
after it was first seen (it is answered by the tenant resolver meanwhile, which holds the
whole table). ``FrontSets.publish`` says which pairs to publish at ``now`` and when the
next held pair matures; the hub renders the tenant's fronted keys again at that moment.

A pair that leaves the view leaves the set at once, in the same push as the table
(what the front can see meanwhile: "Order the updates" in ``docs/dns-front.md``).

The first view of each tenant seen while the hub is still loading (``initial``: the
first full build, and the streams that connected before it) is published whole: sidecars
reconnecting to a restarted control plane already have the table, and a new sidecar
receives its listeners (the table) before it asks for the set's route (RDS follows LDS).
A tenant first seen later (a new DnsPolicy, the first fronted sidecar of a tenant, a view
that gained a resolver) waits like any other addition: its front sends those pairs to
the tenant resolver meanwhile, which answers them from its copy of the table.

Thread-safe (a lock): renders run on the hub's worker (``view_snapshots.render`` calls
``publish`` through its ``SetPublisher`` protocol), the timer on the event loop. The clock is
the caller's (``now``), so the timing is tested without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.dns.views import TenantView
from controlplane.translate.front import Pair, envoy_pairs

DEFAULT_SETTLE_SECONDS = 2.5  # > the front's 1 s poll plus Envoy's table update (0.1-0.15 s)


@dataclass
class _Tenant:
    view: TenantView | None = None  # the view ``pairs`` were computed from
    pairs: frozenset[Pair] = frozenset()
    ordered: tuple[Pair, ...] = ()
    seen: dict[Pair, float] = field(default_factory=dict)  # held pair -> first seen


class FrontSets:
    """Per tenant: the pairs of its latest view, and since when each new one is held."""

    def __init__(self, settle: float = DEFAULT_SETTLE_SECONDS) -> None:
        self.settle = settle
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.Lock()

    def publish(self, view: TenantView, now: float, *, initial: bool = False
                ) -> tuple[Pair, ...]:
        """The pairs of ``view`` the set lists at ``now``: those seen ``settle`` seconds
        ago or more (all of them for a tenant's ``initial`` view). Computes the view's
        pairs once per view object."""
        with self._lock:
            tenant = self._tenants.get(view.tenant)
            if tenant is not None and tenant.view is view:
                ordered = tenant.ordered
            else:
                ordered = envoy_pairs(view)
            pairs = frozenset(ordered)
            if tenant is None:
                tenant = self._tenants[view.tenant] = _Tenant()
                start = now - self.settle if initial else now
                tenant.seen = {p: start for p in pairs}
            else:
                for pair in pairs - tenant.pairs:
                    tenant.seen.setdefault(pair, now)
            tenant.view, tenant.pairs, tenant.ordered = view, pairs, ordered
            for pair in [p for p, t in tenant.seen.items()
                         if p not in pairs or t + self.settle <= now]:
                del tenant.seen[pair]  # matured, or gone from the view
            if not tenant.seen:
                return ordered
            return tuple(p for p in ordered if p not in tenant.seen)

    def next_due(self) -> tuple[float, frozenset[str]] | None:
        """When the next held pair matures, and the tenants with a pair due then; None
        when nothing is held."""
        with self._lock:
            due = {name: min(t.seen.values()) + self.settle
                   for name, t in self._tenants.items() if t.seen}
        if not due:
            return None
        first = min(due.values())
        return first, frozenset(n for n, d in due.items() if d <= first)

    def due(self, now: float) -> frozenset[str]:
        """The tenants holding a pair that has matured by ``now`` (to render again)."""
        with self._lock:
            return frozenset(name for name, t in self._tenants.items()
                             if any(s + self.settle <= now for s in t.seen.values()))

    def held(self, tenant: str) -> frozenset[Pair]:
        """The pairs of ``tenant`` not published yet (for tests and the admin side)."""
        with self._lock:
            t = self._tenants.get(tenant)
            return frozenset(t.seen) if t is not None else frozenset()

    def forget(self, tenants: Iterable[str]) -> None:
        """Tenants no fronted stream has any more, or that are gone."""
        with self._lock:
            for name in tenants:
                self._tenants.pop(name, None)

    def tenants(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._tenants)
