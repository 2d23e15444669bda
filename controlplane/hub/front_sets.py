"""Which (name, type) pairs each tenant's DNS front may route to Envoy now, and which
table the fronted Envoys get meanwhile.

The front (``docs/dns-front.md``) polls the set every second and routes a listed pair to
Envoy's DNS table. The set and the table must change in order:

- **a pair reaches the table before the set.** The table is sent at once; a pair enters
  the set ``settle`` seconds after the table that answers it was sent (until then the
  front sends it to the tenant resolver, which holds the whole table). Else the front
  would ask an Envoy that does not know the name yet: NXDOMAIN.
- **a pair leaves the set before the table.** A pair that leaves the view leaves the
  set at once, and the fronted Envoys' table keeps the record it came from, as it was,
  for ``settle`` seconds (a *hold*): a front that has not polled yet still gets the
  answer it got before, not NXDOMAIN (a deleted name) or a wrong-shaped one (a name that
  grew past 8 addresses, lost its IPv6, became an ExternalName). While a record is held,
  the pairs its new version gives are not published; they start waiting when the hold
  ends and the table gets the new version.

``FrontSets.publish`` gives, for a view at ``now``, the view the fronted keys' table is
rendered from (the view itself when nothing is held) and the pairs their set lists;
``next_due`` when a waiting pair or a hold is due, so the hub renders the tenant's
fronted keys again then. Only fronted keys call it: the others get the view as it is.

A wide view (more than ``table_limit`` entries, with a resolver) is cut to Envoy's part
first (``translate.envoy_part``: the tenant's own namespaces, at most ``table_limit``):
the pairs and the table are those of the part, so a name that leaves the part leaves the
set first and the table ``settle`` seconds later, like a name that leaves the view; the
resolver answers it meanwhile and after (``docs/wide-tenants.md``).

The first view of each tenant seen while the hub is still loading (``initial``: the
first full build, and the streams that connected before it) is published whole:
sidecars reconnecting to a restarted control plane already have the table, and a new
sidecar receives its listeners (the table) before it asks for the set's route (RDS
follows LDS). A tenant first seen later (a new DnsPolicy, the first fronted sidecar of a
tenant, a view that gained a resolver) waits like any other addition.

Thread-safe (a lock): renders run on the hub's worker (``view_snapshots.render`` calls
``publish`` through its ``SetPublisher`` protocol), the timer on the event loop. The
clock is the caller's (``now``, monotonic: a render made before another view was
published is not let back), so the timing is tested without sleeping.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from controlplane.dns.views import TableEntry, TenantView
from controlplane.translate.envoy_part import envoy_part
from controlplane.translate.front import Pair, envoy_pairs, pair_record_name, record_pairs

DEFAULT_SETTLE_SECONDS = 2.5  # > the front's 1 s poll plus Envoy's table update (0.1-0.15 s)

Entries = tuple[TableEntry, ...]


@dataclass(frozen=True)
class _Hold:
    entries: Entries  # the record(s) of one name as the served table had them
    pairs: frozenset[Pair]  # the pairs they give
    until: float


@dataclass
class _Tenant:
    source: TenantView | None = None  # the latest view published, whole
    view: TenantView | None = None  # Envoy's part of it (``translate.envoy_part``)
    current: frozenset[Pair] = frozenset()  # every pair of ``view``
    ordered: tuple[Pair, ...] = ()  # the same, sorted
    held: dict[str, _Hold] = field(default_factory=dict)  # record name -> its hold
    candidates: frozenset[Pair] = frozenset()  # pairs of the view the served table answers
    seen: dict[Pair, float] = field(default_factory=dict)  # waiting pair -> its table sent
    published: frozenset[Pair] = frozenset()
    # memo: (the view, the holds, the table rendered from them)
    table: tuple[TenantView, tuple[tuple[str, float], ...], TenantView] | None = None
    last_now: float = float("-inf")  # the latest ``now`` a view was published at


def _entries_of(view: TenantView | None, names: Iterable[str]) -> dict[str, Entries]:
    """The entries of ``names`` in ``view`` (one pass; only when something is held)."""
    wanted = set(names)
    out: dict[str, list[TableEntry]] = {}
    if view is not None and wanted:
        for entry in view.entries:
            if entry.record.name in wanted:
                out.setdefault(entry.record.name, []).append(entry)
    return {n: tuple(e) for n, e in out.items()}


def _pairs_of(entries: Entries) -> frozenset[Pair]:
    return frozenset(p for e in entries for p in record_pairs(e.record))


class FrontSets:
    """Per tenant: the pairs of its latest view, the pairs waiting, the records held."""

    def __init__(self, settle: float = DEFAULT_SETTLE_SECONDS, *, table_limit: int = 0
                 ) -> None:
        self.settle = settle
        self.table_limit = table_limit  # Envoy's part of a wide view (0: the whole view)
        self._tenants: dict[str, _Tenant] = {}
        self._lock = threading.Lock()

    def publish(self, view: TenantView, now: float, *, initial: bool = False
                ) -> tuple[TenantView, tuple[Pair, ...]]:
        """(the view to render the fronted keys' table from, the pairs their set lists)
        at ``now``; idempotent for the same view and time (one call per fronted key)."""
        with self._lock:
            t = self._tenants.get(view.tenant)
            fresh = t is None
            if t is not None and now < t.last_now and view is not t.source:
                # A render that a newer view overtook (jobs are made on the loop, rendered
                # on the worker): the hub will not install it; it must not turn the state
                # back to an older view either.
                return view, ()
            if t is None:
                t = self._tenants[view.tenant] = _Tenant()
            t.last_now = max(t.last_now, now)
            previous = t.view
            if t.source is not view:
                t.source = view
                t.view = envoy_part(view, limit=self.table_limit)
                t.ordered = envoy_pairs(t.view)
                t.current = frozenset(t.ordered)
            # From here on: Envoy's part (the whole view unless wide).
            view = t.view if t.view is not None else view
            current_entries = self._hold_removed(t, previous, now)
            candidates = self._candidates(t, current_entries)
            if fresh:
                t.seen = {} if initial else dict.fromkeys(candidates, now)
            else:
                for pair in candidates - t.candidates:
                    t.seen.setdefault(pair, now)
            if t.seen:
                t.seen = {p: s for p, s in t.seen.items()
                          if p in candidates and s + self.settle > now}
            t.candidates = candidates
            t.published = candidates - t.seen.keys() if t.seen else candidates
            listed = (t.ordered if len(t.published) == len(t.current)
                      else tuple(p for p in t.ordered if p in t.published))
            return self._table(t, view, current_entries), listed

    def _hold_removed(self, t: _Tenant, previous: TenantView | None, now: float
                      ) -> dict[str, Entries]:
        """Hold the served record of every published pair that left the view; end the
        holds that are due or whose record is back as it was. Returns the view's entries
        of the names still held."""
        until = now + self.settle
        gone = {pair_record_name(p) for p in t.published - t.current}
        fresh = gone - t.held.keys()
        for name in gone & t.held.keys():
            t.held[name] = replace(t.held[name], until=max(t.held[name].until, until))
        if fresh:  # the served table had the previous view's record for these
            for name, entries in _entries_of(previous, fresh).items():
                t.held[name] = _Hold(entries, _pairs_of(entries), until)
        current = _entries_of(t.view, t.held)
        for name in [n for n, h in t.held.items()
                     if h.until <= now or current.get(n) == h.entries]:
            del t.held[name]
            current.pop(name, None)
        return current

    def _candidates(self, t: _Tenant, current: dict[str, Entries]) -> frozenset[Pair]:
        """The view's pairs that the served table (held records included) answers right."""
        if not t.held:
            return t.current
        out = set(t.current)
        for name, hold in t.held.items():
            out -= _pairs_of(current.get(name, ())) - hold.pairs
        return frozenset(out)

    def _table(self, t: _Tenant, view: TenantView, current: dict[str, Entries]
               ) -> TenantView:
        if not t.held:
            t.table = None
            return view
        key = tuple(sorted((n, h.until) for n, h in t.held.items()))
        if t.table is not None and t.table[0] is view and t.table[1] == key:
            return t.table[2]
        entries: list[TableEntry] = []
        for entry in view.entries:
            name = entry.record.name
            if name not in t.held:
                entries.append(entry)
            elif entry is current[name][0]:  # a held name: its old record(s), once
                entries.extend(t.held[name].entries)
        for name in sorted(t.held.keys() - current.keys()):
            entries.extend(t.held[name].entries)  # gone from the view: kept for now
        table = replace(view, entries=tuple(entries))
        t.table = (view, key, table)
        return table

    def next_due(self) -> tuple[float, frozenset[str]] | None:
        """When the next waiting pair or hold is due, and the tenants due then; None when
        nothing waits."""
        with self._lock:
            due = {name: d for name, t in self._tenants.items()
                   if (d := self._due_at(t)) is not None}
        if not due:
            return None
        first = min(due.values())
        return first, frozenset(n for n, d in due.items() if d <= first)

    def _due_at(self, t: _Tenant) -> float | None:
        times = [s + self.settle for s in t.seen.values()] + [h.until for h in t.held.values()]
        return min(times) if times else None

    def due(self, now: float) -> frozenset[str]:
        """The tenants with a waiting pair or a hold due by ``now`` (to render again)."""
        with self._lock:
            return frozenset(name for name, t in self._tenants.items()
                             if (d := self._due_at(t)) is not None and d <= now)

    def waiting(self, tenant: str) -> frozenset[Pair]:
        """The pairs of ``tenant``'s view not published yet."""
        with self._lock:
            t = self._tenants.get(tenant)
            return t.current - t.published if t is not None else frozenset()

    def held_records(self, tenant: str) -> frozenset[str]:
        """The names whose old record the fronted Envoys' table still serves."""
        with self._lock:
            t = self._tenants.get(tenant)
            return frozenset(t.held) if t is not None else frozenset()

    def forget(self, tenants: Iterable[str]) -> None:
        """Tenants no fronted stream has any more, that are gone, or that lost their
        resolver (their set is then ``* .``)."""
        with self._lock:
            for name in tenants:
                self._tenants.pop(name, None)

    def tenants(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._tenants)
