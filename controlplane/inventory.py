"""The current set of model objects, merged from every origin, with last-good semantics.

An *origin* is where objects come from: one file of the file source, or the
Kubernetes API. Each origin is replaced whole when it changes. What must not
be lost on bad input:

- an origin that cannot be read at all (broken YAML) keeps the objects it
  held before;
- an object that became invalid keeps its last valid version, and the error
  says so;
- the same object defined in two origins: the first origin (by name) wins.

The store keeps the merged result up to date as objects arrive, and hands
the consumer what *changed* (``take``: a ``Batch`` of changed keys with the
new ``Inventory``), so the cost of a change does not grow with the cluster:
nothing walks every object to find the one that changed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.errors import InputError
from controlplane.frozenmap import FrozenMap
from controlplane.manifests import Ignored, ParseResult
from controlplane.model import (
    DnsPolicy,
    EndpointSlice,
    ModelObject,
    Namespace,
    Pod,
    Service,
    ServiceEntry,
    object_key,
)

Key = tuple[str, str, str]  # (kind, namespace, name); namespace "" for cluster-scoped kinds

# The kinds an Inventory holds, and the field each is kept in.
FIELDS = {"Namespace": "namespaces", "Service": "services", "EndpointSlice": "endpoint_slices",
          "Pod": "pods", "ServiceEntry": "service_entries", "DnsPolicy": "policies"}
CLUSTER_SCOPED = ("Namespace", "DnsPolicy")
_CLUSTER_SCOPED_TYPES = (Namespace, DnsPolicy)


def map_key(key: Key) -> Any:
    """The key of an object in its Inventory field: its name, or (namespace, name)."""
    return key[2] if key[0] in CLUSTER_SCOPED else (key[1], key[2])


@dataclass(frozen=True)
class Inventory:
    """An immutable snapshot of every valid object, and the current input errors.

    The store's inventories hold ``FrozenMap``s: an inventory and the one after a
    change share everything the change did not touch. ``Inventory.of`` (tests,
    benchmarks) builds plain dicts.
    """

    namespaces: Mapping[str, Namespace] = field(default_factory=FrozenMap)
    services: Mapping[tuple[str, str], Service] = field(default_factory=FrozenMap)
    endpoint_slices: Mapping[tuple[str, str], EndpointSlice] = field(default_factory=FrozenMap)
    pods: Mapping[tuple[str, str], Pod] = field(default_factory=FrozenMap)
    service_entries: Mapping[tuple[str, str], ServiceEntry] = field(default_factory=FrozenMap)
    policies: Mapping[str, DnsPolicy] = field(default_factory=FrozenMap)
    errors: tuple[InputError, ...] = ()

    @classmethod
    def of(cls, objects: Iterable[ModelObject], errors: Iterable[InputError] = ()) -> Inventory:
        maps: dict[str, dict[Any, ModelObject]] = {name: {} for name in FIELDS.values()}
        for obj in objects:
            key = object_key(obj)
            name = FIELDS.get(key[0])
            if name is not None:
                maps[name][map_key(key)] = obj
        return cls(errors=tuple(errors), **maps)  # type: ignore[arg-type]

    def get(self, key: Key) -> ModelObject | None:
        """The object of ``key``, or None."""
        name = FIELDS.get(key[0])
        if name is None:
            return None
        found: ModelObject | None = getattr(self, name).get(map_key(key))
        return found

    def changed_keys(self, other: Inventory) -> set[Key]:
        """Keys whose object differs (by identity) between ``other`` and this inventory.

        Cheap for inventories derived from one another (shared shards are skipped);
        ``Hub.set_inventory`` uses it when it is not told what changed.
        """
        out: set[Key] = set()
        for kind, name in FIELDS.items():
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine is theirs:
                continue
            if not isinstance(mine, FrozenMap):
                mine = FrozenMap(mine)
            for k in mine.changed_keys(theirs):
                out.add((kind, "", k) if kind in CLUSTER_SCOPED else (kind, *k))
        return out

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.get(namespace)
        return dict(ns.labels) if ns else {}

    def slices_of(self, namespace: str, service: str) -> list[EndpointSlice]:
        return [s for (ns, _), s in sorted(self.endpoint_slices.items())
                if ns == namespace and s.service_name == service]


@dataclass(frozen=True)
class Batch:
    """What changed in the store since the previous ``take``, and the inventory after it."""

    inventory: Inventory
    changed: frozenset[Key]  # objects added, changed or removed (valid objects only)
    errors_changed: bool  # the input errors changed
    seen_at: float | None = None  # wall time the first of these changes reached a source
    # Time the sources spent on these changes: "parse" (theirs), "store" (applying them).
    source_seconds: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _Origin:
    objects: dict[Key, ModelObject] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)


class Store:
    """Holds every origin's objects and errors; produces ``Inventory`` snapshots.

    Thread-safe: the Kubernetes source applies events from one thread per kind
    while the event loop takes batches. Every write marks the keys it touched;
    ``inventory()``/``take()`` merge only those into the next inventory.
    """

    def __init__(self) -> None:
        self._origins: dict[str, _Origin] = {}
        self._lock = threading.RLock()
        self._holders: dict[Key, list[str]] = {}  # the origins that hold a key, sorted
        self._multi: set[Key] = set()  # keys held by more than one origin (conflicts)
        self._maps: dict[str, FrozenMap[Any, Any]] = {name: FrozenMap() for name in FIELDS.values()}
        self._current = Inventory(**self._maps)  # type: ignore[arg-type]
        self._dirty: set[Key] = set()  # written since the last merge
        self._errors_dirty = False
        self._pending: set[Key] = set()  # merged, changed, not yet taken
        self._pending_errors = False
        self._seen_at: float | None = None
        self._seconds: dict[str, float] = {}

    # -- writes --------------------------------------------------------------
    def replace_origin(
        self,
        origin: str,
        results: Iterable[ParseResult],
        *,
        unreadable: InputError | None = None,
        seen_at: float | None = None,
        parse_seconds: float = 0.0,
    ) -> list[Ignored]:
        """Replace what ``origin`` holds. Returns the documents of ignored kinds.

        ``seen_at`` (wall time the source noticed the change) and ``parse_seconds``
        travel with the change to the consumer (``Batch``), for latency accounting.
        """
        results = list(results)
        with self._lock:
            started = time.perf_counter()
            out = self._replace_origin(origin, results, unreadable)
            self._account(seen_at, parse_seconds, started)
            return out

    def _replace_origin(self, origin: str, results: list[ParseResult],
                        unreadable: InputError | None) -> list[Ignored]:
        old = self._origins.get(origin, _Origin())
        if unreadable is not None:
            self._origins[origin] = _Origin(dict(old.objects), [unreadable])
            self._errors_dirty |= old.errors != [unreadable]
            return []
        # One pass, cheap for what did not change: a file of 10,000 objects is re-read
        # whole when one of them changes (an equal object keeps its identity).
        old_objects = old.objects
        objects: dict[Key, ModelObject] = {}
        errors: list[InputError] = []
        ignored: list[Ignored] = []
        dirty = self._dirty
        for result in results:
            cls = type(result)
            if cls is Ignored:
                ignored.append(result)  # type: ignore[arg-type]
            elif cls is InputError:
                error: InputError = result  # type: ignore[assignment]
                key = (error.kind, error.namespace, error.name)
                kept = old_objects.get(key)
                if kept is not None:
                    objects[key] = kept
                    error = replace(error, reason=error.reason + "; the last valid version "
                                    "stays in force")
                errors.append(error)
            else:
                obj: ModelObject = result  # type: ignore[assignment]
                key = (cls.__name__, "" if cls in _CLUSTER_SCOPED_TYPES else obj.namespace,  # type: ignore[union-attr]
                       obj.name)
                previous = old_objects.get(key)
                if previous is not None and (previous is obj or previous == obj):
                    objects[key] = previous
                    continue
                objects[key] = obj
                dirty.add(key)
                if previous is None:
                    self._hold(key, origin)
        for key in old_objects.keys() - objects.keys():
            dirty.add(key)
            self._release(key, origin)
        if old.errors != errors:
            self._errors_dirty = True
        self._origins[origin] = _Origin(objects, errors)
        return ignored

    def apply_object(self, origin: str, key: Key, result: ModelObject | InputError, *,
                     seen_at: float | None = None, parse_seconds: float = 0.0) -> bool:
        """Add or replace one object of ``origin``; True when the inventory changed.

        An invalid update keeps the last valid version of the object.
        """
        with self._lock:
            started = time.perf_counter()
            changed = self._apply_object(origin, key, result)
            if changed:
                self._account(seen_at, parse_seconds, started)
            return changed

    def _apply_object(self, origin: str, key: Key, result: ModelObject | InputError) -> bool:
        o = self._origins.setdefault(origin, _Origin())
        old_errors = [e for e in o.errors if (e.kind, e.namespace, e.name) == key]
        if old_errors:
            o.errors = [e for e in o.errors if (e.kind, e.namespace, e.name) != key]
        if isinstance(result, InputError):
            if key in o.objects:
                result = replace(result, reason=result.reason + "; the last valid version "
                                 "stays in force")
            o.errors.append(result)
            changed = old_errors != [result]
            self._errors_dirty |= changed
            return changed
        previous = o.objects.get(key)
        if previous is not None and previous == result:
            self._errors_dirty |= bool(old_errors)
            return bool(old_errors)
        o.objects[key] = result
        self._dirty.add(key)
        if previous is None:
            self._hold(key, origin)
        self._errors_dirty |= bool(old_errors)
        return True

    def delete_object(self, origin: str, key: Key, *, seen_at: float | None = None) -> bool:
        with self._lock:
            started = time.perf_counter()
            o = self._origins.get(origin)
            if o is None:
                return False
            before = len(o.errors)
            o.errors = [e for e in o.errors if (e.kind, e.namespace, e.name) != key]
            if len(o.errors) != before:
                self._errors_dirty = True
            gone = o.objects.pop(key, None) is not None
            if gone:
                self._dirty.add(key)
                self._release(key, origin)
            changed = gone or len(o.errors) != before
            if changed:
                self._account(seen_at, 0.0, started)
            return changed

    def remove_origin(self, origin: str, *, seen_at: float | None = None) -> None:
        with self._lock:
            started = time.perf_counter()
            old = self._origins.pop(origin, None)
            if old is None:
                return
            for key in old.objects:
                self._dirty.add(key)
                self._release(key, origin)
            self._errors_dirty |= bool(old.errors)
            self._account(seen_at, 0.0, started)

    def seen(self, seen_at: float) -> None:
        """A source noticed the changes it just wrote at ``seen_at`` (wall time)."""
        with self._lock:
            if self._seen_at is None or seen_at < self._seen_at:
                self._seen_at = seen_at

    def _hold(self, key: Key, origin: str) -> None:
        holders = self._holders.setdefault(key, [])
        holders.append(origin)
        if len(holders) > 1:
            holders.sort()
            self._multi.add(key)
            self._errors_dirty = True

    def _release(self, key: Key, origin: str) -> None:
        holders = self._holders.get(key)
        if holders is None or origin not in holders:
            return
        holders.remove(origin)
        if not holders:
            del self._holders[key]
        if key in self._multi:
            self._errors_dirty = True
            if len(holders) <= 1:
                self._multi.discard(key)

    def _account(self, seen_at: float | None, parse_seconds: float, started: float) -> None:
        if seen_at is not None and (self._seen_at is None or seen_at < self._seen_at):
            self._seen_at = seen_at
        if parse_seconds:
            self._seconds["parse"] = self._seconds.get("parse", 0.0) + parse_seconds
        self._seconds["store"] = (self._seconds.get("store", 0.0)
                                  + time.perf_counter() - started)

    # -- reads ---------------------------------------------------------------
    def keys(self, origin: str) -> set[Key]:
        with self._lock:
            o = self._origins.get(origin)
            if o is None:
                return set()
            return set(o.objects) | {(e.kind, e.namespace, e.name) for e in o.errors}

    def origins(self) -> list[str]:
        with self._lock:
            return sorted(self._origins)

    def inventory(self) -> Inventory:
        """The current inventory (what changed stays pending for the next ``take``)."""
        with self._lock:
            self._merge()
            return self._current

    def take(self) -> Batch:
        """The current inventory and what changed since the previous ``take``."""
        with self._lock:
            started = time.perf_counter()
            self._merge()
            seconds = dict(self._seconds)
            seconds["merge"] = time.perf_counter() - started
            batch = Batch(self._current, frozenset(self._pending), self._pending_errors,
                          self._seen_at, seconds)
            self._pending = set()
            self._pending_errors = False
            self._seen_at = None
            self._seconds = {}
            return batch

    def _merge(self) -> None:
        """Fold the keys written since the last merge into a new inventory."""
        if not self._dirty and not self._errors_dirty:
            return
        current = self._current
        updates: dict[str, dict[Any, ModelObject]] = {}
        deletes: dict[str, list[Any]] = {}
        for key in self._dirty:
            name = FIELDS.get(key[0])
            if name is None:
                continue
            holders = self._holders.get(key)
            new = self._origins[holders[0]].objects[key] if holders else None
            mkey = map_key(key)
            old = self._maps[name].get(mkey)
            if new is None:
                if old is not None:
                    deletes.setdefault(name, []).append(mkey)
                    self._pending.add(key)
            elif old is None or (old is not new and old != new):
                updates.setdefault(name, {})[mkey] = new
                self._pending.add(key)
            elif old is not new:  # equal: keep the one consumers already have
                self._origins[holders[0]].objects[key] = old  # type: ignore[index]
        self._dirty = set()
        changes: dict[str, Any] = {}
        for name in set(updates) | set(deletes):
            self._maps[name] = changes[name] = self._maps[name].evolve(
                updates.get(name, {}), deletes.get(name, ()))
        if self._errors_dirty:
            changes["errors"] = self._errors()
            self._pending_errors |= changes["errors"] != current.errors
            self._errors_dirty = False
        if changes:
            self._current = replace(current, **changes)

    def _errors(self) -> tuple[InputError, ...]:
        conflicts: dict[str, list[Key]] = {}
        for key in self._multi:
            for loser in self._holders[key][1:]:
                conflicts.setdefault(loser, []).append(key)
        errors: list[InputError] = []
        for name in sorted(self._origins):
            errors.extend(self._origins[name].errors)
            for key in sorted(conflicts.get(name, ())):
                errors.append(InputError(kind=key[0], namespace=key[1], name=key[2],
                                         origin=name, reason=f"also defined in "
                                         f"{self._holders[key][0]}, which wins"))
        return tuple(errors)
