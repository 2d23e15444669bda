"""The cluster's names by suffix, kept by parent only (see ``SuffixBuckets``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from controlplane.dns.records import NameRecord


class SuffixBuckets(Mapping[str, Mapping[str, NameRecord]]):
    """suffix -> {name: record} of every name under it, as ``RecordIndex.of`` makes it.

    Only each name's parent bucket is kept (one insert per name, not one per suffix);
    a bucket above the parents (``svc.cluster.local``, ``cluster.local``) is the union of
    the parent buckets under it, made when a lookup asks. Lookups are few (a DENY
    tenant's wildcard patterns), the names many. The buckets read must not be changed.
    """

    def __init__(self) -> None:
        self._parents: dict[str, dict[str, NameRecord]] = {}  # parent -> names right under
        self._under: dict[str, set[str]] = {}  # suffix -> the parents at or under it

    def add(self, rec: NameRecord) -> None:
        """Index ``rec`` (not a wildcard) under its parent."""
        name = rec.name
        pos = name.find(".")
        if pos == -1:
            return
        parent = name[pos + 1:]
        bucket = self._parents.get(parent)
        if bucket is None:
            bucket = self._parents[parent] = {}
            for suffix in _self_and_above(parent):
                self._under.setdefault(suffix, set()).add(parent)
        bucket[name] = rec

    def remove(self, name: str) -> None:
        pos = name.find(".")
        if pos == -1:
            return
        parent = name[pos + 1:]
        bucket = self._parents.get(parent)
        if bucket is None:
            return
        bucket.pop(name, None)
        if bucket:
            return
        del self._parents[parent]
        for suffix in _self_and_above(parent):
            held = self._under[suffix]
            held.discard(parent)
            if not held:
                del self._under[suffix]

    def __getitem__(self, suffix: str) -> Mapping[str, NameRecord]:
        parents = self._under[suffix]  # KeyError: no name under it
        if len(parents) == 1:
            (parent,) = parents
            return self._parents[parent]
        out: dict[str, NameRecord] = {}
        for parent in parents:
            out.update(self._parents[parent])
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._under)

    def __len__(self) -> int:
        return len(self._under)

    def __contains__(self, suffix: object) -> bool:
        return suffix in self._under


def _self_and_above(suffix: str) -> Iterator[str]:
    """``suffix`` and each suffix of it: ``a.b.c``, ``b.c``, ``c``."""
    yield suffix
    at = suffix.find(".")
    while at != -1:
        suffix = suffix[at + 1:]
        yield suffix
        at = suffix.find(".")
