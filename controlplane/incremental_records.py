"""``cluster_records`` kept up to date by change instead of rebuilt (see ``IncrementalRecords``)."""

from __future__ import annotations

import bisect

from controlplane.inventory import Inventory
from controlplane.model import EndpointSlice, Pod, Service, ServiceEntry
from controlplane.records import (
    Contribution,
    NameRecord,
    OptionsKey,
    RecordOptions,
    _Builder,
    _pod,
    _service,
    _service_entry,
    _single,
    options_from_key,
    options_key,
)


class IncrementalRecords:
    """``cluster_records`` kept up to date by change, not rebuilt.

    The store hands over the same (frozen) object for an unchanged Service or
    ServiceEntry, so ``update`` finds what changed by identity, recomputes the
    contributions of those objects only, and rebuilds only the names they
    touch. Pods compare by value too: a status change that is not an IP change
    (readiness, conditions) gives a new but equal object and touches nothing.
    It also keeps a suffix index (see ``record_index``) up to date.
    ``update`` returns the names whose record changed (added, changed or gone).
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
        self._by_name: dict[str, dict[tuple[str, str, str], tuple[Contribution, ...]]] = {}
        self.records: dict[str, NameRecord] = {}
        self.by_suffix: dict[str, dict[str, NameRecord]] = {}
        self.wildcards: dict[str, NameRecord] = {}
        self._names: list[str] = []  # sorted, patched with bisect
        self._sorted: list[NameRecord] = []

    def update(self, inventory: Inventory, opts: RecordOptions) -> set[str]:
        key = options_key(opts)
        if key != self._key:
            self._key = key
            self._reset()
        touched: set[str] = set()
        slices: dict[tuple[str, str], list[EndpointSlice]] = {}
        for (ns, _), sl in sorted(inventory.endpoint_slices.items()):
            slices.setdefault((ns, sl.service_name), []).append(sl)
        for k, svc in inventory.services.items():
            own = tuple(slices.get(k, ())) if svc.headless else ()
            old = self._svc.get(k)
            if old is not None and old[0] is svc and old[1] == own:
                continue
            contributions = _service(svc, own, opts.zone)
            self._replace(("svc",) + k, old[2] if old else (), contributions, touched)
            self._svc[k] = (svc, own, contributions)
        for k in self._svc.keys() - inventory.services.keys():
            self._replace(("svc",) + k, self._svc.pop(k)[2], (), touched)
        vips: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for (ns, name, host), vip in sorted(opts.vips.items()):
            vips.setdefault((ns, name), []).append((host, vip))
        for k, se in inventory.service_entries.items():
            own_vips = tuple(vips.get(k, ()))
            old_se = self._se.get(k)
            if old_se is not None and old_se[0] is se and old_se[1] == own_vips:
                continue
            contributions = _service_entry(se, own_vips)
            self._replace(("se",) + k, old_se[2] if old_se else (), contributions, touched)
            self._se[k] = (se, own_vips, contributions)
        for k in self._se.keys() - inventory.service_entries.keys():
            self._replace(("se",) + k, self._se.pop(k)[2], (), touched)
        for k, pod in inventory.pods.items():
            old_pod = self._pod.get(k)
            if old_pod is not None and (old_pod[0] is pod or old_pod[0] == pod):
                continue
            contributions = _pod(pod, opts.zone)
            self._replace(("pod",) + k, old_pod[1] if old_pod else (), contributions, touched)
            self._pod[k] = (pod, contributions)
        for k in self._pod.keys() - inventory.pods.keys():
            self._replace(("pod",) + k, self._pod.pop(k)[1], (), touched)
        changed = set()
        bulk = len(touched) > 64 and len(touched) * 8 > len(self.records)
        for name in touched:
            rec = self._build(name, key)
            old_rec = self.records.get(name)
            if rec == old_rec:
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
            self._names = sorted(self.records)
            self._sorted = [self.records[n] for n in self._names]
        return changed

    def _replace(self, source: tuple[str, str, str], old: tuple[Contribution, ...],
                 new: tuple[Contribution, ...], touched: set[str]) -> None:
        for c in old:
            slot = self._by_name.get(c[0])
            if slot is not None:
                slot.pop(source, None)
                if not slot:
                    del self._by_name[c[0]]
            touched.add(c[0])
        grouped: dict[str, list[Contribution]] = {}
        for c in new:
            grouped.setdefault(c[0], []).append(c)
        for name, items in grouped.items():
            self._by_name.setdefault(name, {})[source] = tuple(items)
            touched.add(name)

    def _build(self, name: str, key: OptionsKey) -> NameRecord | None:
        slot = self._by_name.get(name)
        if not slot:
            return None
        contributions = [c for items in slot.values() for c in items]
        if len(contributions) == 1:
            return _single(contributions[0], key)
        b = _Builder(options_from_key(key))
        for c in sorted(contributions, key=lambda c: c[1]):
            b.add(*c)
        out = b.records()
        return out[0] if out else None

    def _index(self, rec: NameRecord) -> None:
        if rec.is_wildcard:
            self.wildcards[rec.name] = rec
            return
        pos = rec.name.find(".")
        while pos != -1:
            self.by_suffix.setdefault(rec.name[pos + 1:], {})[rec.name] = rec
            pos = rec.name.find(".", pos + 1)

    def _unindex(self, rec: NameRecord) -> None:
        if rec.is_wildcard:
            self.wildcards.pop(rec.name, None)
            return
        pos = rec.name.find(".")
        while pos != -1:
            suffix = rec.name[pos + 1:]
            bucket = self.by_suffix.get(suffix)
            if bucket is not None:
                bucket.pop(rec.name, None)
                if not bucket:
                    del self.by_suffix[suffix]
            pos = rec.name.find(".", pos + 1)

    def sorted_records(self) -> list[NameRecord]:
        """Every record in name order (the same list object, patched in place)."""
        return self._sorted
