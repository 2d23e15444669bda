"""The current set of model objects, merged from every origin, with last-good semantics.

An *origin* is where objects come from: one file of the file source, or the
Kubernetes API. Each origin is replaced whole when it changes. What must not
be lost on bad input:

- an origin that cannot be read at all (broken YAML) keeps the objects it
  held before;
- an object that became invalid keeps its last valid version, and the error
  says so;
- the same object defined in two origins: the first origin (by name) wins.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from controlplane.errors import InputError
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

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Inventory:
    """An immutable snapshot of every valid object, and the current input errors."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    services: dict[tuple[str, str], Service] = field(default_factory=dict)
    endpoint_slices: dict[tuple[str, str], EndpointSlice] = field(default_factory=dict)
    pods: dict[tuple[str, str], Pod] = field(default_factory=dict)
    service_entries: dict[tuple[str, str], ServiceEntry] = field(default_factory=dict)
    policies: dict[str, DnsPolicy] = field(default_factory=dict)
    errors: tuple[InputError, ...] = ()

    @classmethod
    def of(cls, objects: Iterable[ModelObject], errors: Iterable[InputError] = ()) -> Inventory:
        inv = cls(errors=tuple(errors))
        for obj in objects:
            inv._add(obj)
        return inv

    def _add(self, obj: ModelObject) -> None:
        if isinstance(obj, Namespace):
            self.namespaces[obj.name] = obj
        elif isinstance(obj, Service):
            self.services[(obj.namespace, obj.name)] = obj
        elif isinstance(obj, EndpointSlice):
            self.endpoint_slices[(obj.namespace, obj.name)] = obj
        elif isinstance(obj, Pod):
            self.pods[(obj.namespace, obj.name)] = obj
        elif isinstance(obj, ServiceEntry):
            self.service_entries[(obj.namespace, obj.name)] = obj
        elif isinstance(obj, DnsPolicy):
            self.policies[obj.name] = obj

    def namespace_labels(self, namespace: str) -> dict[str, str]:
        ns = self.namespaces.get(namespace)
        return dict(ns.labels) if ns else {}

    def slices_of(self, namespace: str, service: str) -> list[EndpointSlice]:
        return [s for (ns, _), s in sorted(self.endpoint_slices.items())
                if ns == namespace and s.service_name == service]


@dataclass
class _Origin:
    objects: dict[Key, ModelObject] = field(default_factory=dict)
    errors: list[InputError] = field(default_factory=list)


class Store:
    """Holds every origin's objects and errors; produces ``Inventory`` snapshots.

    Thread-safe: the Kubernetes source applies events from one thread per kind
    while the event loop reads ``inventory()``.
    """

    def __init__(self) -> None:
        self._origins: dict[str, _Origin] = {}
        self._lock = threading.RLock()

    def replace_origin(
        self,
        origin: str,
        results: Iterable[ParseResult],
        *,
        unreadable: InputError | None = None,
    ) -> list[Ignored]:
        """Replace what ``origin`` holds. Returns the documents of ignored kinds."""
        with self._lock:
            return self._replace_origin(origin, list(results), unreadable)

    def _replace_origin(self, origin: str, results: list[ParseResult],
                        unreadable: InputError | None) -> list[Ignored]:
        old = self._origins.get(origin, _Origin())
        if unreadable is not None:
            self._origins[origin] = _Origin(dict(old.objects), [unreadable])
            return []
        new = _Origin()
        ignored: list[Ignored] = []
        for result in results:
            if isinstance(result, Ignored):
                ignored.append(result)
            elif isinstance(result, InputError):
                key = (result.kind, result.namespace, result.name)
                kept = old.objects.get(key)
                if kept is not None:
                    new.objects[key] = kept
                    result = replace(result, reason=result.reason + "; the last valid version "
                                     "stays in force")
                new.errors.append(result)
            else:
                new.objects[object_key(result)] = result
        self._origins[origin] = new
        return ignored

    def apply_object(self, origin: str, key: Key, result: ModelObject | InputError) -> bool:
        """Add or replace one object of ``origin``; True when the inventory changed.

        An invalid update keeps the last valid version of the object.
        """
        with self._lock:
            o = self._origins.setdefault(origin, _Origin())
            old_errors = [e for e in o.errors if (e.kind, e.namespace, e.name) == key]
            o.errors = [e for e in o.errors if (e.kind, e.namespace, e.name) != key]
            if isinstance(result, InputError):
                if key in o.objects:
                    result = replace(result, reason=result.reason + "; the last valid version "
                                     "stays in force")
                o.errors.append(result)
                return old_errors != [result]
            changed = o.objects.get(key) != result or bool(old_errors)
            o.objects[key] = result
            return changed

    def delete_object(self, origin: str, key: Key) -> bool:
        with self._lock:
            o = self._origins.get(origin)
            if o is None:
                return False
            before = len(o.errors)
            o.errors = [e for e in o.errors if (e.kind, e.namespace, e.name) != key]
            return o.objects.pop(key, None) is not None or len(o.errors) != before

    def keys(self, origin: str) -> set[Key]:
        with self._lock:
            o = self._origins.get(origin)
            if o is None:
                return set()
            return set(o.objects) | {(e.kind, e.namespace, e.name) for e in o.errors}

    def remove_origin(self, origin: str) -> None:
        with self._lock:
            self._origins.pop(origin, None)

    def origins(self) -> list[str]:
        with self._lock:
            return sorted(self._origins)

    def inventory(self) -> Inventory:
        with self._lock:
            return self._inventory()

    def _inventory(self) -> Inventory:
        seen: dict[Key, str] = {}
        objects: list[ModelObject] = []
        errors: list[InputError] = []
        for name in sorted(self._origins):
            origin = self._origins[name]
            errors.extend(origin.errors)
            for key, obj in sorted(origin.objects.items()):
                if key in seen:
                    errors.append(InputError(kind=key[0], namespace=key[1], name=key[2],
                                             origin=name,
                                             reason=f"also defined in {seen[key]}, which wins"))
                    continue
                seen[key] = name
                objects.append(obj)
        return Inventory.of(objects, errors)
