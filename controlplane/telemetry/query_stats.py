"""What the query log adds up per tenant, in bounded memory (pure: every call passes the
time): the most queried and the most denied names, the answers by rcode over the last
minute (NXDOMAIN and SERVFAIL rates), and the latest queries of every action (allowed
too) for the console's query-log view.

Only the queries the sidecars log reach it: those of tenants whose policy logs
something (a blacklist, or a default action other than ALLOW; ``TenantView.log_queries``),
through Envoy's access log and the tenant resolvers' reports (``querylog.py``,
``resolver_reports.py``).

Bounds, per tenant: ``TopNames`` holds at most ``2 * keep`` names (past that it keeps
the ``keep`` most counted; a name dropped then starts again from zero, so the counts
are exact for the names that stay on top and approximate only at the tail); the rcode
window holds one bucket per second of the last ``window`` seconds; the recent queries
are a ring of ``recent`` records; per sidecar (the node that logged the query), the
``node_names`` most queried names (``TopNames``, so at most ``2 * node_names``) of at most
``nodes`` sidecars (the one heard from least recently is dropped first; defaults 25 and
200). Tenants are those with a policy (the query log forgets the others), so the total
is bounded by the configuration.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any


class TopNames:
    """Counts by name, holding at most ``2 * keep`` names."""

    def __init__(self, keep: int = 500) -> None:
        self.keep = keep
        self.counts: dict[str, int] = {}
        self.pruned = 0  # names dropped at the tail so far

    def add(self, name: str) -> None:
        counts = self.counts
        counts[name] = counts.get(name, 0) + 1
        if len(counts) > 2 * self.keep:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:self.keep]
            self.pruned += len(counts) - len(top)
            self.counts = dict(top)

    def top(self, n: int) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class RcodeWindow:
    """Answers by rcode, one bucket per whole second, over the last ``window`` seconds."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self.buckets: collections.deque[tuple[int, collections.Counter[str]]] = (
            collections.deque())
        self.first = 0.0  # when the first answer came (rates over less than a window)

    def add(self, rcode: str, *, now: float) -> None:
        second = int(now)
        if not self.buckets:
            self.first = now
        if not self.buckets or self.buckets[-1][0] != second:
            self.buckets.append((second, collections.Counter()))
            self._trim(now)
        self.buckets[-1][1][rcode] += 1

    def _trim(self, now: float) -> None:
        while self.buckets and self.buckets[0][0] <= int(now) - self.window:
            self.buckets.popleft()

    def summary(self, *, now: float) -> dict[str, Any]:
        """Counts by rcode over the last ``window`` seconds, and per-second rates over the
        window (or over the time since the first answer, when shorter)."""
        self._trim(now)
        counts: collections.Counter[str] = collections.Counter()
        for _, bucket in self.buckets:
            counts.update(bucket)
        span = max(1.0, min(float(self.window), now - self.first)) if self.buckets else 1.0
        return {"window_seconds": self.window, "counts": dict(sorted(counts.items())),
                "rates": {k: round(v / span, 3) for k, v in sorted(counts.items())}}


@dataclass
class TenantQueries:
    queried: TopNames
    denied: TopNames
    rcodes: RcodeWindow
    recent: collections.deque[Any] = field(default_factory=collections.deque)
    # node -> its most queried names; least recently heard from first
    nodes: collections.OrderedDict[str, TopNames] = field(
        default_factory=collections.OrderedDict)


class QueryStats:
    """Per tenant: ``TenantQueries``. Not thread-safe: the query log calls it under its
    lock."""

    def __init__(self, *, keep_names: int = 500, window: int = 60, recent: int = 1000,
                 nodes: int = 200, node_names: int = 25) -> None:
        self.keep_names = keep_names
        self.max_nodes = nodes
        self.node_names = node_names
        self.window = window
        self.recent_size = recent
        self.tenants: dict[str, TenantQueries] = {}

    def add(self, record: Any) -> None:
        """One classified query (a ``QueryRecord``: time, tenant, name, rcode, action)."""
        t = self.tenants.get(record.tenant)
        if t is None:
            t = self.tenants[record.tenant] = TenantQueries(
                TopNames(self.keep_names), TopNames(self.keep_names), RcodeWindow(self.window),
                collections.deque(maxlen=self.recent_size))
        name = record.name.lower().rstrip(".")
        t.queried.add(name)
        if record.action == "deny":
            t.denied.add(name)
        t.rcodes.add(record.rcode, now=record.time)
        t.recent.append(record)
        if record.node:
            self._node(t, record.node).add(name)

    def _node(self, t: TenantQueries, node: str) -> TopNames:
        top = t.nodes.get(node)
        if top is None:
            top = t.nodes[node] = TopNames(self.node_names)
            if len(t.nodes) > self.max_nodes:
                t.nodes.popitem(last=False)
        else:
            t.nodes.move_to_end(node)
        return top

    def forget(self, keep: set[str]) -> None:
        """Drop the tenants not in ``keep`` (deleted since)."""
        for name in [n for n in self.tenants if n not in keep]:
            del self.tenants[name]

    def summary(self, tenant: str, *, now: float, n: int = 10) -> dict[str, Any]:
        t = self.tenants.get(tenant)
        if t is None:
            return {"queried": [], "denied": [], "answers": RcodeWindow(self.window).summary(
                now=now), "by_sidecar": {}}
        return {"queried": [{"name": k, "count": v} for k, v in t.queried.top(n)],
                "denied": [{"name": k, "count": v} for k, v in t.denied.top(n)],
                "answers": t.rcodes.summary(now=now),
                "by_sidecar": {node: [{"name": k, "count": v} for k, v in top.top(5)]
                               for node, top in sorted(t.nodes.items())}}
