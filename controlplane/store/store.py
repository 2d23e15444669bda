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
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from controlplane.core.errors import InputError
from controlplane.core.frozenmap import FrozenMap
from controlplane.core.inventory import (
    _CLUSTER_SCOPED_TYPES,
    CLUSTER_SCOPED,
    FIELDS,
    Batch,
    Inventory,
    Key,
)
from controlplane.core.manifests import Ignored, ParseResult
from controlplane.core.model import ModelObject


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
        # Per kind: its map's lookup, or None while the map is empty (a first load: every
        # key is new, and 100,000 lookups of nothing cost as much as the merge).
        lookups = {name: m.get if m else None for name, m in self._maps.items()}
        holders_of, origins, pending = self._holders.get, self._origins, self._pending
        for key in self._dirty:
            kind = key[0]
            name = FIELDS.get(kind)
            if name is None:
                continue
            holders = holders_of(key)
            new = origins[holders[0]].objects[key] if holders else None
            mkey = key[2] if kind in CLUSTER_SCOPED else (key[1], key[2])  # map_key(key)
            lookup = lookups[name]
            old = lookup(mkey) if lookup is not None else None
            if old is None:
                if new is None:
                    continue
                update = updates.get(name)  # an object to add
                if update is None:
                    update = updates[name] = {}
                update[mkey] = new
                pending.add(key)
            elif new is None:
                deletes.setdefault(name, []).append(mkey)
                self._pending.add(key)
            elif old is not new and old != new:
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
