"""Live DNS traffic per sidecar and per tenant, from the sidecars' own counters (pure).

Every sidecar's Envoy streams its DNS filter's counters to the control plane
(``stats_sink.py``: the metrics service over ``xds_cluster``) every stats flush
(Envoy's default: 5 s). Each report carries the *cumulative* counters since
that Envoy started; this module turns them into what the console and
``/metrics`` show:

- **per sidecar**: the latest cumulative values, and rates (per second) from its
  last two reports, over Envoy's own flush timestamps;
- **per tenant**: totals that only grow (the sum over its sidecars, plus what
  sidecars that were restarted or aged out had counted), and rates (the sum of
  its live sidecars' rates); a short history of the tenant rates, one point per
  ``tick``, and a longer coarse one, one point (the mean) per ``coarse_every`` ticks,
  for the console's charts and their ranges.

Kinds (Envoy 1.40's DNS filter counters; measured, see stats_sink.py):

==========  =============================================================
queries     ``downstream_rx_queries``
local       queries answered by Envoy itself, from its table (records or
            NXDOMAIN): ``downstream_rx_queries - externally_resolved_queries``
            (``local_*_record_answers`` count *records*, not queries)
forwarded   ``externally_resolved_queries``: sent to the tenant resolver
nxdomain    ``unanswered_queries``: answered without a record, locally or by
            the resolver (NOTIMP for unsupported types is counted here too)
denied      query-log records the policy denies (``querylog.py``)
warn        query-log records answered under WARN
==========  =============================================================

Queries that never reach Envoy's DNS filter (through the DNS front, every pair
outside the tenant's table goes to the tenant resolver) come from the resolver's
own reports (``resolver_reports.py``, which counts them under its own lock):
``resolver_counts`` gives (queries, NXDOMAIN) per tenant; each counts as a query,
forwarded, and NXDOMAIN when it was one; their rates are taken at each ``sample``.

``queries = local + forwarded``; ``nxdomain``, ``denied`` and ``warn`` cut
across both. The first report of a sidecar counts in full (its Envoy's
counters since it started); its rates start with its second report, so a
control-plane restart shows no spike. A counter that goes down means the
Envoy restarted: what it had counted is kept in the tenant's total.

Memory is bounded per tenant, so one tenant cannot fill what another needs: a
sidecar that has not reported for ``max_age`` seconds is dropped (its counts
kept in its tenant's total), each tenant keeps at most ``max_sidecars`` (more
are refused and counted as ``overflow``), ``history`` points and ``coarse`` coarse
points (defaults: 150 of 2 s, the last 5 min; 120 of 30 s, the last hour; kept across
restarts with ``history_state`` and ``restore_history`` when a file is given), the refused
reports of at most ``max_sidecars`` nodes per tenant (least recently refused
out), and tenants without sidecars are forgotten once the caller says they are
gone.
No clock is read here: every call passes ``now``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("queries", "local", "forwarded", "nxdomain", "denied", "warn")
ENVOY_KINDS = KINDS[:4]  # from the sidecars' counters; denied and warn from the query log
QUERIES, LOCAL, FORWARDED, NXDOMAIN, DENIED, WARN = range(6)

Values = tuple[float, ...]  # one per kind, in KINDS order
ZERO: Values = (0.0,) * len(KINDS)


def _add(a: Values, b: Values) -> Values:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def _point(point: Any) -> tuple[float, Values] | None:
    """``[time, [one number per kind]]`` as read back from a file, or None."""
    if not isinstance(point, list) or len(point) != 2:
        return None
    t, values = point
    if (not isinstance(t, int | float) or not isinstance(values, list)
            or len(values) != len(KINDS)
            or not all(isinstance(v, int | float) and v >= 0 for v in values)):
        return None
    return float(t), tuple(float(v) for v in values)


@dataclass(slots=True)
class Sidecar:
    node: str
    tenant: str
    namespace: str
    first_seen: float
    last_seen: float  # control-plane clock of the last report
    envoy_time: float  # Envoy's flush time of the last report (0: unknown)
    values: Values  # cumulative since this Envoy started (denied/warn: since first seen)
    rates: Values | None = None  # per second between the last two reports
    reports: int = 1
    resets: int = 0


@dataclass(slots=True)
class TenantTraffic:
    retired: Values = ZERO  # counted by sidecars that restarted or aged out
    history: collections.deque[tuple[float, Values]] = field(
        default_factory=lambda: collections.deque(maxlen=150))
    coarse: collections.deque[tuple[float, Values]] = field(
        default_factory=lambda: collections.deque(maxlen=120))
    pending: list[Values] = field(default_factory=list)  # ticks not yet in a coarse point


@dataclass(frozen=True, slots=True)
class Report:
    """One sidecar's counters, as ``stats_sink`` parsed them."""

    node: str
    tenant: str
    namespace: str
    envoy_time: float  # seconds; 0 when the report carried no timestamp
    queries: float = 0.0
    forwarded: float = 0.0
    nxdomain: float = 0.0


class DnsTraffic:
    def __init__(self, *, max_age: float = 60.0, stale_after: float = 15.0,
                 max_sidecars: int = 10_000, history: int = 150, tick: float = 2.0,
                 coarse: int = 120, coarse_every: int = 15) -> None:
        self.max_age = max_age  # a sidecar silent this long is dropped
        self.stale_after = stale_after  # ... and its rates stop counting after this long
        self.max_sidecars = max_sidecars
        self.history_points = history
        self.tick = tick  # seconds between history points (the caller ticks)
        self.coarse_points = coarse
        self.coarse_every = coarse_every  # ticks per coarse point
        self.sidecars: dict[str, Sidecar] = {}
        self._per_tenant: collections.Counter[str] = collections.Counter()  # sidecars
        # tenant -> node -> reason -> refused reports (least recently refused first)
        self.refused: dict[str, collections.OrderedDict[str, collections.Counter[str]]] = {}
        self.tenants: dict[str, TenantTraffic] = {}
        # (tenant, node) -> [denied, warn] (query log); how many nodes per tenant
        self._policy: dict[tuple[str, str], list[float]] = {}
        self._policy_nodes: collections.Counter[str] = collections.Counter()
        self.reports: collections.Counter[str] = collections.Counter()  # outcome -> count
        self.aged_out = 0
        # tenant -> (queries, nxdomain) the tenant resolvers reported (resolver_reports.py)
        self.resolver_counts: Callable[[], Mapping[str, tuple[float, float]]] = dict
        self._resolver_last: tuple[float, dict[str, tuple[float, float]]] | None = None
        self._resolver_rates: dict[str, tuple[float, float]] = {}

    # -- input -------------------------------------------------------------
    def report(self, r: Report, *, now: float) -> str:
        """Apply one report; returns its outcome (``accepted``, ``overflow``)."""
        old = self.sidecars.get(r.node)
        policy = self._policy.get((r.tenant, r.node), [0.0, 0.0])
        values: Values = (r.queries, max(0.0, r.queries - r.forwarded), r.forwarded,
                          r.nxdomain, policy[0], policy[1])
        self._tenant(r.tenant)
        if old is not None and old.tenant != r.tenant:  # moved to another tenant
            self._retire(old)
            old = None
        if old is None:
            if self._per_tenant[r.tenant] >= self.max_sidecars:
                self.reject("overflow", node=r.node, tenant=r.tenant)
                return "overflow"
            self.sidecars[r.node] = Sidecar(r.node, r.tenant, r.namespace, now, now,
                                            r.envoy_time, values)
            self._per_tenant[r.tenant] += 1
            self.reports["accepted"] += 1
            return "accepted"
        if any(v < o for v, o in zip(values[:4], old.values[:4], strict=True)):
            # The Envoy restarted (its counters went down): keep what it had counted;
            # rates start again with its next report.
            t = self.tenants[old.tenant]
            t.retired = _add(t.retired, old.values[:4] + (0.0, 0.0))
            old.resets += 1
            old.rates = None
        else:
            use_envoy = r.envoy_time > 0 and old.envoy_time > 0
            elapsed = (r.envoy_time - old.envoy_time) if use_envoy else (now - old.last_seen)
            if elapsed > 0:
                old.rates = tuple(max(0.0, (v - o) / elapsed)
                                  for v, o in zip(values, old.values, strict=True))
        old.values = values
        old.last_seen = now
        old.envoy_time = r.envoy_time
        old.reports += 1
        self.reports["accepted"] += 1
        return "accepted"

    def reject(self, reason: str, *, node: str = "", tenant: str = "") -> None:
        """A refused report, counted by reason, and for ``node`` (under ``tenant``; ""
        when the node has none) when given."""
        self.reports[reason] += 1
        if not node:
            return
        nodes = self.refused.get(tenant)
        if nodes is None:
            nodes = self.refused[tenant] = collections.OrderedDict()
        counts = nodes.get(node)
        if counts is None:
            if len(nodes) >= self.max_sidecars:
                nodes.popitem(last=False)
            counts = nodes[node] = collections.Counter()
        nodes.move_to_end(node)
        counts[reason] += 1

    def query_record(self, *, node: str, action: str, tenant: str = "") -> None:
        """A denied or WARN query reported by ``node`` of ``tenant`` (from the query log);
        at most ``max_sidecars`` nodes per tenant are counted."""
        if action not in ("deny", "warn"):
            return
        key = (tenant, node)
        counts = self._policy.get(key)
        if counts is None:
            if self._policy_nodes[tenant] >= self.max_sidecars:
                return
            counts = self._policy[key] = [0.0, 0.0]
            self._policy_nodes[tenant] += 1
        counts[0 if action == "deny" else 1] += 1

    def _forget_policy(self, key: tuple[str, str]) -> None:
        if self._policy.pop(key, None) is not None:
            self._policy_nodes[key[0]] -= 1
            if self._policy_nodes[key[0]] <= 0:
                del self._policy_nodes[key[0]]

    def _resolver_values(self) -> dict[str, Values]:
        return {t: (q, 0.0, q, n, 0.0, 0.0) for t, (q, n) in self.resolver_counts().items()}

    def _tenant(self, name: str) -> TenantTraffic:
        t = self.tenants.get(name)
        if t is None:
            t = self.tenants[name] = TenantTraffic(
                history=collections.deque(maxlen=self.history_points),
                coarse=collections.deque(maxlen=self.coarse_points))
        return t

    def _retire(self, car: Sidecar) -> None:
        t = self._tenant(car.tenant)
        t.retired = _add(t.retired, car.values[:4] + (0.0, 0.0))
        del self.sidecars[car.node]
        self._per_tenant[car.tenant] -= 1
        if self._per_tenant[car.tenant] <= 0:
            del self._per_tenant[car.tenant]

    # -- time --------------------------------------------------------------
    def expire(self, *, now: float, tenants: Iterable[str] = ()) -> int:
        """Drop sidecars silent for ``max_age``; forget tenants that have no sidecar and
        are not in ``tenants`` (the ones that still exist). Returns how many aged out."""
        gone = [c for c in self.sidecars.values() if now - c.last_seen > self.max_age]
        for car in gone:
            self._retire(car)
            self._forget_policy((car.tenant, car.node))
        for key in [k for k in self._policy if k[1] not in self.sidecars]:
            if self._policy_nodes[key[0]] > self.max_sidecars // 2:
                self._forget_policy(key)  # records of nodes that never sent counters
        self.aged_out += len(gone)
        keep = set(tenants) | {c.tenant for c in self.sidecars.values()}
        for name in [n for n in self.tenants if n not in keep]:
            del self.tenants[name]
        for name in [n for n in self.refused if n and n not in keep]:
            del self.refused[name]
        return len(gone)

    def sample(self, *, now: float) -> None:
        """Append the current tenant rates to each tenant's history (one tick)."""
        current = dict(self.resolver_counts())
        if self._resolver_last is not None and now > self._resolver_last[0]:
            then, before = self._resolver_last
            self._resolver_rates = {
                t: ((q - before.get(t, (0.0, 0.0))[0]) / (now - then),
                    (n - before.get(t, (0.0, 0.0))[1]) / (now - then))
                for t, (q, n) in current.items()}
        self._resolver_last = (now, current)
        for name in current:
            self._tenant(name)
        rates = self.tenant_rates(now=now)
        for name, t in self.tenants.items():
            values = rates.get(name, ZERO)
            t.history.append((now, values))
            t.pending.append(values)
            if len(t.pending) >= self.coarse_every:
                n = len(t.pending)
                t.coarse.append((now, tuple(sum(col) / n for col in zip(*t.pending,
                                                                          strict=True))))
                t.pending.clear()

    # -- kept across restarts (``history_state`` / ``restore_history``) ---------
    def history_state(self) -> dict[str, Any]:
        """Every tenant's history and coarse points, as JSON-ready values."""
        return {"version": 1, "kinds": list(KINDS), "tenants": {
            name: {"history": [[t, list(v)] for t, v in tt.history],
                   "coarse": [[t, list(v)] for t, v in tt.coarse]}
            for name, tt in self.tenants.items()}}

    def restore_history(self, state: Any, *, now: float) -> int:
        """Put back what ``history_state`` gave (read from a file: anything malformed is
        skipped, point by point), the points still within their range at ``now`` and
        not in its future; returns how many points came back. The time in between shows
        as a gap."""
        tenants = state.get("tenants") if isinstance(state, Mapping) else None
        if not isinstance(tenants, Mapping) or state.get("kinds") != list(KINDS):
            return 0
        ranges = {"history": self.tick * self.history_points,
                  "coarse": self.tick * self.coarse_every * self.coarse_points}
        restored = 0
        for name, series in tenants.items():
            if not isinstance(name, str) or not isinstance(series, Mapping):
                continue
            tt = self._tenant(name)
            for key, span in ranges.items():
                points = series.get(key)
                ring = tt.history if key == "history" else tt.coarse
                if ring or not isinstance(points, list):
                    continue  # never mixed into points taken since the start
                for point in points:
                    values = _point(point)
                    if values is not None and now - span <= values[0] <= now:
                        ring.append(values)
                        restored += 1
        return restored

    # -- read side ---------------------------------------------------------
    def live(self, car: Sidecar, now: float) -> bool:
        return now - car.last_seen <= self.stale_after

    def sidecar_rates(self, car: Sidecar, now: float) -> Values:
        return car.rates if car.rates is not None and self.live(car, now) else ZERO

    def tenant_rates(self, *, now: float) -> dict[str, Values]:
        out: dict[str, Values] = {name: ZERO for name in self.tenants}
        for car in self.sidecars.values():
            out[car.tenant] = _add(out.get(car.tenant, ZERO), self.sidecar_rates(car, now))
        for name, (q, n) in self._resolver_rates.items():
            out[name] = _add(out.get(name, ZERO), (q, 0.0, q, n, 0.0, 0.0))
        return out

    def tenant_totals(self, policy_counts: Mapping[tuple[str, str], int] | None = None
                      ) -> dict[str, Values]:
        """Cumulative per tenant; ``denied``/``warn`` from ``policy_counts`` (the query
        log's exact counts by (tenant, action)) when given."""
        out = {name: t.retired for name, t in self.tenants.items()}
        for car in self.sidecars.values():
            out[car.tenant] = _add(out.get(car.tenant, ZERO), car.values[:4] + (0.0, 0.0))
        for name, values in self._resolver_values().items():
            out[name] = _add(out.get(name, ZERO), values)
        if policy_counts is not None:
            named = {t for t, action in policy_counts if action in ("deny", "warn")}
            for name in set(out) | named:
                v = list(out.get(name, ZERO))
                v[DENIED] = float(policy_counts.get((name, "deny"), 0))
                v[WARN] = float(policy_counts.get((name, "warn"), 0))
                out[name] = tuple(v)
        return out

    def tenant_sidecars(self) -> dict[str, int]:
        return collections.Counter(c.tenant for c in self.sidecars.values())


def as_dict(values: Values) -> dict[str, float]:
    return {k: round(v, 3) for k, v in zip(KINDS, values, strict=True)}
