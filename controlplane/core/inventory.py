"""The current set of model objects as one immutable value (``Inventory``), and what
changed between two of them (``Batch``). Pure: the thread-safe ``Store`` that merges
every origin into these lives in ``controlplane.store``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controlplane.core.errors import InputError
from controlplane.core.frozenmap import FrozenMap
from controlplane.core.model import (
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
