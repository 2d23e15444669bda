"""An immutable mapping whose updated copies cost the change, not the size.

``FrozenMap`` keeps its items in a fixed number of shards (plain dicts, by
key hash). ``evolve`` returns a new map that shares every shard it does not
touch with the old one, so applying one changed object to a map of 100,000
copies one shard of ~400 items instead of the whole map; two maps derived
from one another are compared shard by shard, skipping shared shards
(``changed_keys``). Readers on any thread see a value that never changes
under them: the inventory handed to the view builder's worker thread and
read by the admin API is one of these per kind.

Iteration order is by shard, then by insertion: it is not sorted, and code
that needs an order sorts (as it did with dicts built from several origins).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

SHARDS = 256  # a power of two; 100,000 items -> ~400 per shard
_MASK = SHARDS - 1
_EMPTY: dict[Any, Any] = {}  # shared by every empty shard; never written to


class FrozenMap(Mapping[K, V], Generic[K, V]):
    __slots__ = ("_shards", "_len")

    _shards: tuple[dict[K, V], ...]
    _len: int

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        shards: list[dict[K, V]] = [_EMPTY] * SHARDS
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            i = hash(key) & _MASK
            shard = shards[i]
            if shard is _EMPTY:
                shard = shards[i] = {}
            shard[key] = value
        self._shards = tuple(shards)
        self._len = sum(len(s) for s in shards)

    @classmethod
    def _of(cls, shards: tuple[dict[K, V], ...], length: int) -> FrozenMap[K, V]:
        out: FrozenMap[K, V] = cls.__new__(cls)
        out._shards = shards
        out._len = length
        return out

    # -- Mapping -----------------------------------------------------------
    def __getitem__(self, key: K) -> V:
        return self._shards[hash(key) & _MASK][key]

    @overload
    def get(self, key: K, /) -> V | None: ...
    @overload
    def get(self, key: K, default: V | T, /) -> V | T: ...

    def get(self, key: K, default: Any = None) -> Any:
        return self._shards[hash(key) & _MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) & _MASK]

    def __iter__(self) -> Iterator[K]:
        return itertools.chain.from_iterable(self._shards)

    def __len__(self) -> int:
        return self._len

    def items(self) -> _Items[K, V]:  # type: ignore[override]
        return _Items(self)

    def values(self) -> _Values[V]:  # type: ignore[override]
        return _Values(self)

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self.items())!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FrozenMap):
            if self._len != other._len:
                return False
            return all(a is b or a == b for a, b in zip(self._shards, other._shards,
                                                          strict=True))
        if isinstance(other, Mapping):
            return len(self) == len(other) and all(
                k in other and other[k] == v for k, v in self.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # -- persistent updates ----------------------------------------------------
    def evolve(self, updates: Mapping[K, V], deletes: Iterable[K] = ()) -> FrozenMap[K, V]:
        """A new map with ``updates`` set and ``deletes`` removed; untouched shards shared."""
        if not self._len:  # nothing to share, nothing to delete: the updates alone
            return FrozenMap(updates)
        shards = list(self._shards)
        copied: set[int] = set()
        length = self._len
        for key, value in updates.items():
            i = hash(key) & _MASK
            if i not in copied:
                shards[i] = dict(shards[i])
                copied.add(i)
            if key not in shards[i]:
                length += 1
            shards[i][key] = value
        for key in deletes:
            i = hash(key) & _MASK
            if key not in shards[i]:
                continue
            if i not in copied:
                shards[i] = dict(shards[i])
                copied.add(i)
            del shards[i][key]
            length -= 1
        return FrozenMap._of(tuple(shards), length)

    def changed_keys(self, other: Mapping[K, V]) -> set[K]:
        """Keys whose value differs (by identity) between this map and ``other``.

        Shards the two maps share are skipped, so for maps derived from one another
        with ``evolve`` this costs the shards that changed, not the whole map.
        """
        if not isinstance(other, FrozenMap):
            other = FrozenMap(other)
        out: set[K] = set()
        for mine, theirs in zip(self._shards, other._shards, strict=True):
            if mine is theirs:
                continue
            for key, value in mine.items():
                if theirs.get(key, _MISSING) is not value:
                    out.add(key)
            out.update(key for key in theirs if key not in mine)
        return out


_MISSING = object()


class _Items(Generic[K, V]):
    """``items()`` of a FrozenMap: iterable, sized, and supports ``in``."""

    __slots__ = ("_map",)

    def __init__(self, m: FrozenMap[K, V]) -> None:
        self._map = m

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return itertools.chain.from_iterable(s.items() for s in self._map._shards)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, tuple) or len(item) != 2:
            return False
        key, value = item
        return key in self._map and self._map[key] == value


class _Values(Generic[V]):
    __slots__ = ("_map",)

    def __init__(self, m: FrozenMap[Any, V]) -> None:
        self._map = m

    def __iter__(self) -> Iterator[V]:
        return itertools.chain.from_iterable(s.values() for s in self._map._shards)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, value: object) -> bool:
        return any(v == value for v in self)
