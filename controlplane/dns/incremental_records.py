"""``cluster_records`` kept up to date by change instead of rebuilt (see ``IncrementalRecords``)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from controlplane.core.inventory import Inventory, Key
from controlplane.core.model import EndpointSlice, Pod, Service, ServiceEntry
from controlplane.dns.records import (
    Contribution,
    NameRecord,
    OptionsKey,
    RecordOptions,
    _Builder,
    _pod,
    _service,
    _service_entry,
    options_from_key,
    options_key,
    single_record,
)
from controlplane.dns.suffix_buckets import SuffixBuckets
from controlplane.dns.vips import VipKey

_Slot = tuple[Contribution, ...] | dict[str, tuple[Contribution, ...]]
_service_of = _service.__wrapped__  # not through its memo (``_apply_service``)


class IncrementalRecords:
    """``cluster_records`` kept up to date by change, not rebuilt.

    ``apply`` takes the keys of the objects that changed (the store's ``Batch``)
    and recomputes the contributions of those objects only, then rebuilds only
    the names they touch: its cost grows with the change, not with the cluster.
    ``update`` is the same for a caller that does not know what changed: it
    walks the inventory and finds the changed objects by identity (the store
    hands over the same frozen object for an unchanged one). Pods compare by
    value too: a status change that is not an IP change (readiness, conditions)
    gives a new but equal object and touches nothing. A suffix index (see
    ``record_index``) is kept up to date as well. Both return the names whose
    record changed (added, changed or gone).
    """

    def __init__(self) -> None:
        self._key: OptionsKey | None = None
        self._reset()

    def _reset(self) -> None:
        self._svc: dict[tuple[str, str], tuple[Service, tuple[EndpointSlice, ...],
                                              tuple[Contribution, ...]]] = {}
        self._se: dict[tuple[str, str], tuple[ServiceEntry, tuple[tuple[str, str], ...],
                                             tuple[Contribution, ...]]] = {}
        self._pod: dict[tuple[str, str], tuple[Pod, tuple[Contribution, ...]]] = {}
        self._slices: dict[tuple[str, str], EndpointSlice] = {}  # the slices applied
        self._slices_of: dict[tuple[str, str], set[tuple[str, str]]] = {}  # service -> slices
        self._vips_from: Mapping[VipKey, str] | None = None
        self._vips: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}  # by ServiceEntry
        # A name -> what its sources say of it: one source's contributions (the common
        # case: no dict per name), or, with several sources, a dict by source (c[1], e.g.
        # "Service ns/name": one per object).
        self._by_name: dict[str, _Slot] = {}
        self.records: dict[str, NameRecord] = {}
        self.by_suffix = SuffixBuckets()
        self.wildcards: dict[str, NameRecord] = {}
        self._names: list[str] = []  # sorted, patched with bisect
        self._sorted: list[NameRecord] = []

    def update(self, inventory: Inventory, opts: RecordOptions) -> set[str]:
        """Find what changed by walking the inventory, then ``apply`` it."""
        if options_key(opts) != self._key:
            self._reset()
            self._key = options_key(opts)
        changed: list[set[tuple[str, str]]] = []
        for have, now in ((self._se, inventory.service_entries), (self._pod, inventory.pods)):
            if not have:  # a first load: every object is new
                changed.append(set(now))
                continue
            keys = {k for k, obj in now.items()
                    if (old := have.get(k)) is None or old[0] is not obj}
            keys.update(have.keys() - now.keys())
            changed.append(keys)
        services: set[tuple[str, str]] | None = None  # a first load: every Service
        if self._svc:
            services = {k for k, svc in inventory.services.items()
                        if (had := self._svc.get(k)) is None or had[0] is not svc}
            services.update(self._svc.keys() - inventory.services.keys())
        slices = {k for k, sl in inventory.endpoint_slices.items()
                  if self._slices.get(k) is not sl}
        slices.update(self._slices.keys() - inventory.endpoint_slices.keys())
        entries, pods = changed
        return self._apply(inventory, opts, services=services, entries=entries, pods=pods,
                           slices=slices)

    def apply(self, inventory: Inventory, changed: Iterable[Key], opts: RecordOptions
              ) -> set[str]:
        """Apply the objects of ``changed`` (their keys) as ``inventory`` has them now."""
        key = options_key(opts)
        if key != self._key:  # other options shape every record: start over
            self._reset()
            self._key = key
            return self.update(inventory, opts)
        services: set[tuple[str, str]] = set()
        entries: set[tuple[str, str]] = set()
        pods: set[tuple[str, str]] = set()
        slices: list[tuple[str, str]] = []
        for kind, ns, name in changed:
            k = (ns, name)
            if kind == "Service":
                services.add(k)
            elif kind == "EndpointSlice":
                slices.append(k)
            elif kind == "ServiceEntry":
                entries.add(k)
            elif kind == "Pod":
                pods.add(k)
        return self._apply(inventory, opts, services=services, entries=entries, pods=pods,
                           slices=slices)

    def _apply(self, inventory: Inventory, opts: RecordOptions, *,
               services: set[tuple[str, str]] | None, entries: set[tuple[str, str]],
               pods: set[tuple[str, str]], slices: Iterable[tuple[str, str]]) -> set[str]:
        """Apply these objects (by key; ``slices``: EndpointSlices, which change the
        services they belong to; ``services`` None: every Service of ``inventory``, none
        applied yet) as ``inventory`` has them now."""
        for k in slices:
            moved = self._move_slice(k, inventory.endpoint_slices.get(k))
            if services is not None:  # else every Service is applied below
                services.update(moved)
        if opts.vips is not self._vips_from:
            entries.update(self._regroup_vips(opts.vips))
        touched: set[str] = set()
        zone, apply_service = opts.zone, self._apply_service
        if services is None or not self._svc:  # a first load (the hub's: every key)
            self._first_services(inventory, zone, touched, services)
        else:  # a Service a slice names but the inventory lacks: nothing
            service_of = inventory.services.get
            for k in services:
                apply_service(k, service_of(k), zone, inventory, touched)
        for k in entries:
            self._apply_entry(k, inventory.service_entries.get(k), touched)
        for k in pods:
            self._apply_pod(k, inventory.pods.get(k), zone, touched)
        return self._rebuild(touched, self._key or options_key(opts))

    def _move_slice(self, k: tuple[str, str], sl: EndpointSlice | None
                    ) -> list[tuple[str, str]]:
        """Record slice ``k`` (None: gone); the services whose slices changed."""
        out = []
        old = self._slices.pop(k, None)
        if old is not None:
            owner = (k[0], old.service_name)
            self._slices_of.get(owner, set()).discard(k)
            if not self._slices_of.get(owner, True):
                del self._slices_of[owner]
            out.append(owner)
        if sl is not None:
            self._slices[k] = sl
            owner = (k[0], sl.service_name)
            self._slices_of.setdefault(owner, set()).add(k)
            out.append(owner)
        return out

    def _regroup_vips(self, vips: Mapping[VipKey, str]) -> set[tuple[str, str]]:
        """Group VIPs by ServiceEntry; the entries whose VIPs changed."""
        grouped: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for (ns, name, host), vip in sorted(vips.items()):
            grouped.setdefault((ns, name), []).append((host, vip))
        new = {k: tuple(v) for k, v in grouped.items()}
        changed = {k for k in new.keys() | self._vips.keys() if new.get(k) != self._vips.get(k)}
        self._vips, self._vips_from = new, vips
        return changed

    def _apply_service(self, k: tuple[str, str], svc: Service | None, zone: str,
                       inventory: Inventory, touched: set[str]) -> None:
        old = self._svc.get(k)
        if svc is None:
            if old is not None:
                self._replace(self._svc.pop(k)[2], (), touched)
            return
        own = (tuple(inventory.endpoint_slices[s] for s in sorted(self._slices_of.get(k, ())))
               if svc.headless else ())
        if old is not None and old[0] is svc and old[1] == own:
            return
        # Not through _service's memo: this map is the memo here (an object is recomputed
        # only when it changed), and hashing 100,000 Services costs as much as the work.
        contributions = _service_of(svc, own, zone)
        self._replace(old[2] if old else (), contributions, touched)
        self._svc[k] = (svc, own, contributions)

    def _first_services(self, inventory: Inventory, zone: str, touched: set[str],
                        keys: set[tuple[str, str]] | None) -> None:
        """``_apply_service`` of the Services of ``inventory`` in ``keys`` (None: all), none
        applied yet (a first load): walked in the inventory's order, not looked up by key
        (a key it lacks is no Service, and none was applied: nothing to remove), and a
        ClusterIP Service's contributions made without ``_apply_service``'s steps."""
        apply_service, svc_state = self._apply_service, self._svc
        for k, svc in inventory.services.items():
            if keys is not None and k not in keys:
                continue
            if svc.headless or svc.type == "ExternalName":
                apply_service(k, svc, zone, inventory, touched)
                continue
            contributions = _service_of(svc, (), zone)
            self._replace((), contributions, touched)
            svc_state[k] = (svc, (), contributions)

    def _apply_entry(self, k: tuple[str, str], se: ServiceEntry | None,
                     touched: set[str]) -> None:
        old = self._se.get(k)
        if se is None:
            if old is not None:
                self._replace(self._se.pop(k)[2], (), touched)
            return
        own_vips = self._vips.get(k, ())
        if old is not None and old[0] is se and old[1] == own_vips:
            return
        contributions = _service_entry(se, own_vips)
        self._replace(old[2] if old else (), contributions, touched)
        self._se[k] = (se, own_vips, contributions)

    def _apply_pod(self, k: tuple[str, str], pod: Pod | None, zone: str,
                   touched: set[str]) -> None:
        old = self._pod.get(k)
        if pod is None:
            if old is not None:
                self._replace(self._pod.pop(k)[1], (), touched)
            return
        if old is not None and (old[0] is pod or old[0] == pod):
            self._pod[k] = (pod, old[1])
            return
        contributions = _pod(pod, zone)
        self._replace(old[1] if old else (), contributions, touched)
        self._pod[k] = (pod, contributions)

    def _rebuild(self, touched: set[str], key: OptionsKey) -> set[str]:
        options = options_from_key(key)
        if not self.records:  # a first load (or every record gone before)
            return self._first_rebuild(touched, options)
        changed = set()
        bulk = len(touched) > 64 and len(touched) * 8 > len(self.records)
        for name in touched:
            rec = self._build(name, options)
            old_rec = self.records.get(name)
            # rec == old_rec, without a dataclass __eq__ call for a new name (a first load)
            if rec is old_rec or (rec is not None and old_rec is not None and rec == old_rec):
                continue
            changed.add(name)
            if bulk:  # many changes (a first load): update the maps, sort once below
                if old_rec is not None:
                    self._unindex(old_rec)
                    del self.records[name]
                if rec is not None:
                    self.records[name] = rec
                    self._index(rec)
                continue
            at = bisect.bisect_left(self._names, name)
            if old_rec is not None:
                self._unindex(old_rec)
                del self.records[name]
                if rec is None:
                    del self._names[at]
                    del self._sorted[at]
            if rec is not None:
                self.records[name] = rec
                self._index(rec)
                if old_rec is None:
                    self._names.insert(at, name)
                    self._sorted.insert(at, rec)
                else:
                    self._sorted[at] = rec
        if bulk and changed:
            self._names = _sorted_in_runs(self.records)
            self._sorted = [self.records[n] for n in self._names]
        return changed

    def _first_rebuild(self, touched: set[str], options: RecordOptions) -> set[str]:
        """``_rebuild`` with no record yet (a first load): every record made is new, so
        nothing is compared, and the names are sorted once; the names with a record."""
        records, by_name, index = self.records, self._by_name, self._index
        # In name order (the order the views, tables and listeners read them): the records
        # lie in memory as they are walked later, not scattered in a set's order.
        names: list[str] = []
        for name in _sorted_in_runs(touched):
            slot = by_name.get(name)
            if not slot:
                continue
            rec = (single_record(slot[0], options) if isinstance(slot, tuple) and len(slot) == 1
                   else self._build(name, options))
            if rec is not None:
                records[name] = rec
                names.append(name)
                index(rec)
        self._names = names
        self._sorted = list(records.values())
        return set(records)

    def _replace(self, old: tuple[Contribution, ...], new: tuple[Contribution, ...],
                 touched: set[str]) -> None:
        """One object's contributions ``old`` replaced by ``new`` (each names its source)."""
        by_name = self._by_name
        for c in old:
            name = c[0]
            touched.add(name)
            slot = by_name.get(name)
            if slot is None:
                continue
            if isinstance(slot, tuple):
                if slot[0][1] == c[1]:
                    del by_name[name]
            else:
                slot.pop(c[1], None)
                if len(slot) == 1:  # one source left: its contributions alone
                    (by_name[name],) = slot.values()
        if len(new) == 1:  # the common case: one name
            self._put(new[0][0], new)
            touched.add(new[0][0])
            return
        grouped: dict[str, list[Contribution]] = {}
        for c in new:
            grouped.setdefault(c[0], []).append(c)
        for name, items in grouped.items():
            self._put(name, tuple(items))
            touched.add(name)

    def _put(self, name: str, items: tuple[Contribution, ...]) -> None:
        """Set one source's contributions ``items`` (not empty) to ``name``."""
        source = items[0][1]
        slot = self._by_name.get(name)
        if slot is None:
            self._by_name[name] = items
        elif isinstance(slot, tuple):
            self._by_name[name] = items if slot[0][1] == source else {slot[0][1]: slot,
                                                                      source: items}
        else:
            slot[source] = items

    def _build(self, name: str, options: RecordOptions) -> NameRecord | None:
        slot = self._by_name.get(name)
        if not slot:
            return None
        contributions = (slot if isinstance(slot, tuple)
                         else tuple(c for items in slot.values() for c in items))
        if len(contributions) == 1:
            # Not through _single's memo: a name is rebuilt when something said about it
            # changed, and an equal record is then found equal to the one kept (_rebuild).
            return single_record(contributions[0], options)
        b = _Builder(options)
        for c in sorted(contributions, key=lambda c: c[1]):
            b.add(*c)
        out = b.records()
        return out[0] if out else None

    def _index(self, rec: NameRecord) -> None:
        if rec.name.startswith("*."):  # rec.is_wildcard
            self.wildcards[rec.name] = rec
        else:
            self.by_suffix.add(rec)

    def _unindex(self, rec: NameRecord) -> None:
        if rec.is_wildcard:
            self.wildcards.pop(rec.name, None)
        else:
            self.by_suffix.remove(rec.name)

    def sorted_records(self) -> list[NameRecord]:
        """Every record in name order (the same list object, patched in place)."""
        return self._sorted


def _sorted_in_runs(names: Iterable[str], run: int = 8192) -> list[str]:
    """``sorted(names)``, as short sorts of runs and a merge of the sorted runs: the same
    result, but no single call holds the GIL for long (one sort of 100,000 names would
    hold it ~30 ms, and the event loop with it; here ~4 ms, then ~12 ms to merge)."""
    items = list(names)
    runs: list[str] = []
    for i in range(0, len(items), run):
        runs.extend(sorted(items[i:i + run]))
    runs.sort()  # timsort finds the sorted runs and merges them
    return runs
