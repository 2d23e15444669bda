"""One snapshot per *view*, serialised once, shared by every stream of that view.

A thousand sidecars of one tenant share one ``ViewSnapshot``: its resources
are packed into ``Any`` messages and the full-state response body
(``version_info``, ``resources``, ``type_url``) is serialised once per
change. A stream only appends its own nonce (protobuf messages concatenate
as a merge), so no stream ever re-serialises the table.

Versions are the first 16 hex digits of a SHA-256 over the type URL and the
deterministic bytes of every resource, sorted by name: equal content gives
the same version on every replica and after any restart, and different
content never repeats an old version (checklist #17).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.any_pb2 import Any
from google.protobuf.message import Message

from controlplane.translate import wire
from controlplane.translate.types import ORDERED_TYPES


@dataclass(frozen=True)
class TypeSnapshot:
    type_url: str
    version: str
    anys: LazyAnys
    size: int  # of ``body``
    resource_versions: Mapping[str, str]  # per resource, for delta xDS
    names: frozenset[str]  # the names of ``anys``: what a wildcard stream is sent (shared)
    # The whole response with a nonce of its own (``shared_nonce``, unique to this object
    # in the process), sent as it is to every stream of the view that gets this version
    # for the first time: no per-stream bytes to join (``protocol.SotwStream._respond``).
    serial: int = 0
    shared_nonce: str = ""
    payload: bytes = b""

    @functools.cached_property
    def body(self) -> bytes:
        """A DiscoveryResponse with every resource, without nonce: ``payload`` without its
        nonce, copied only when a stream needs a nonce of its own (a wide view's listener
        is tens of MB: one copy fewer per build)."""
        return self.payload[:self.size]


class LazyAnys(Mapping[str, Any]):
    """Each resource's ``Any``, made from its bytes when first asked for (most streams
    are sent the shared payload and never ask): a wide listener's tens of MB are not
    copied into an ``Any`` at every build. Read-only; one ``Any`` object per name."""

    def __init__(self, type_url: str, values: dict[str, bytes]) -> None:
        self._type_url = type_url
        self.values_by_name = values
        self._made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        made = self._made.get(name)
        if made is None:
            made = self._made[name] = Any(type_url=self._type_url,
                                          value=self.values_by_name[name])
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(self.values_by_name)

    def __len__(self) -> int:
        return len(self.values_by_name)

    def __contains__(self, name: object) -> bool:
        return name in self.values_by_name


@dataclass(frozen=True)
class ViewSnapshot:
    key: Hashable
    types: Mapping[str, TypeSnapshot]

    @property
    def size(self) -> int:
        return sum(t.size for t in self.types.values())


def _type_snapshot(type_url: str, resources: Mapping[str, Message]) -> TypeSnapshot:
    return _from_values(type_url, {name: resources[name].SerializeToString(deterministic=True)
                                   for name in resources})


def _from_values(type_url: str, values: Mapping[str, bytes]) -> TypeSnapshot:
    """A type's snapshot from each resource's deterministic bytes."""
    url = type_url.encode()
    digest = hashlib.sha256(url)
    values_by_name: dict[str, bytes] = {}
    versions: dict[str, str] = {}
    # The body written as ``DiscoveryResponse(version_info, resources, type_url)``'s
    # deterministic serialisation writes it (``response_body``), each resource's bytes
    # copied once, by the final join: a wide view's listener is tens of MB.
    url_field = wire.length_delimited(_ANY_TYPE_URL, url) if url else b""
    parts: list[bytes] = []
    for name in sorted(values):
        value = values[name]
        digest.update(len(name).to_bytes(4, "big") + name.encode())
        digest.update(len(value).to_bytes(8, "big"))
        digest.update(value)
        values_by_name[name] = value
        versions[name] = hashlib.sha256(value).hexdigest()[:16]
        head = url_field + (wire.field_head(_ANY_VALUE, len(value)) if value else b"")
        parts += (wire.field_head(_RESOURCES, len(head) + len(value)), head, value)
    version = digest.hexdigest()[:16]
    serial = next(_SERIALS)
    shared_nonce = f"v{serial}"
    head = wire.string_field(_VERSION_INFO, version) if version else b""
    tail = wire.length_delimited(_TYPE_URL, url) if url else b""
    # The body and its shared nonce in one join (``body`` is this without the nonce).
    payload = b"".join([head, *parts, tail, wire.string_field(_NONCE, shared_nonce)])
    size = len(head) + sum(map(len, parts)) + len(tail)
    return TypeSnapshot(type_url=type_url, version=version,
                        anys=LazyAnys(type_url, values_by_name), size=size,
                        resource_versions=versions, names=frozenset(values_by_name),
                        serial=serial, shared_nonce=shared_nonce, payload=payload)


# Serials of type snapshots, in the order they are made: a stream takes a shared nonce
# only from a snapshot newer than any it took one from (so never the same one twice).
_SERIALS = itertools.count(1)


_RESPONSE = discovery_pb2.DiscoveryResponse.DESCRIPTOR.fields_by_name
_VERSION_INFO, _RESOURCES, _TYPE_URL, _NONCE = (
    _RESPONSE[f].number for f in ("version_info", "resources", "type_url", "nonce"))
_ANY_TYPE_URL, _ANY_VALUE = (Any.DESCRIPTOR.fields_by_name[f].number
                             for f in ("type_url", "value"))


def response_body(version: str, type_url: str, anys: list[Any]) -> bytes:
    """The body as a message: what ``_from_values`` writes directly (tests compare)."""
    body: bytes = discovery_pb2.DiscoveryResponse(
        version_info=version, type_url=type_url, resources=anys
    ).SerializeToString(deterministic=True)
    return body


def with_resources(snap: ViewSnapshot, type_url: str, resources: Mapping[str, Message]
                   ) -> ViewSnapshot:
    """``snap`` with ``resources`` put in (by name) in one type, every other resource and
    type as they were: re-serialises those resources only (and the type's body). The
    version is the one ``build_snapshot`` gives the same resources."""
    old = snap.types.get(type_url)
    values = dict(old.anys.values_by_name) if old is not None else {}
    values.update({name: m.SerializeToString(deterministic=True)
                   for name, m in resources.items()})
    return ViewSnapshot(key=snap.key, types={**snap.types,
                                             type_url: _from_values(type_url, values)})


def build_snapshot(key: Hashable, resources: Mapping[str, Mapping[str, Message]]) -> ViewSnapshot:
    types = {t: _type_snapshot(t, resources.get(t, {})) for t in ORDERED_TYPES}
    for t in resources:
        if t not in types:
            types[t] = _type_snapshot(t, resources[t])
    return ViewSnapshot(key=key, types=types)


Listener = Callable[[Hashable], None]


class SnapshotCache:
    """Snapshots by view key; tells subscribers when their view changes."""

    def __init__(self) -> None:
        self._snapshots: dict[Hashable, ViewSnapshot] = {}
        self._listeners: list[Listener] = []
        self.serializations = 0  # snapshots built: one per view per change

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def get(self, key: Hashable) -> ViewSnapshot | None:
        return self._snapshots.get(key)

    def snapshots(self) -> list[ViewSnapshot]:
        return list(self._snapshots.values())

    def set(self, key: Hashable, resources: Mapping[str, Mapping[str, Message]]) -> bool:
        """Store the resources of view ``key``; True when any version changed."""
        snap = build_snapshot(key, resources)
        self.serializations += 1
        return self.put(key, snap)

    def put(self, key: Hashable, snap: ViewSnapshot) -> bool:
        """Store a snapshot built elsewhere (``build_snapshot``, e.g. on a worker thread);
        True when any version changed. The caller counts its serialisation."""
        old = self._snapshots.get(key)
        if old is not None and {t: s.version for t, s in old.types.items()} == {
            t: s.version for t, s in snap.types.items()
        }:
            return False
        self._snapshots[key] = snap
        for listener in self._listeners:
            listener(key)
        return True

    def discard(self, key: Hashable) -> None:
        self._snapshots.pop(key, None)
