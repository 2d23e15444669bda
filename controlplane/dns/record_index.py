"""An index of the cluster's names by suffix, to find what a whitelist can match quickly.

A tenant with ``defaultAction: DENY`` answers only whitelisted names, so its
view needs only the records under its whitelist patterns: looking them up by
suffix costs O(visible names) instead of classifying every name in the
cluster (O(names) per tenant, the dominant cost with many tenants).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controlplane.core.names import Pattern
from controlplane.dns.records import NameRecord


class RecordIndex:
    def __init__(self, by_name: Mapping[str, NameRecord],
                 by_suffix: Mapping[str, Mapping[str, NameRecord]],
                 wildcards: Mapping[str, NameRecord]) -> None:
        self.by_name = by_name
        self.by_suffix = by_suffix
        self.wildcards = wildcards

    @classmethod
    def of(cls, records: Iterable[NameRecord]) -> RecordIndex:
        """Build an index from scratch (IncrementalRecords keeps one up to date instead)."""
        by_name: dict[str, NameRecord] = {}
        by_suffix: dict[str, dict[str, NameRecord]] = {}
        wildcards: dict[str, NameRecord] = {}
        for r in records:
            by_name[r.name] = r
            if r.is_wildcard:
                wildcards[r.name] = r
                continue
            pos = r.name.find(".")
            while pos != -1:
                by_suffix.setdefault(r.name[pos + 1:], {})[r.name] = r
                pos = r.name.find(".", pos + 1)
        return cls(by_name, by_suffix, wildcards)

    def candidates(self, patterns: Iterable[Pattern]) -> list[NameRecord]:
        """Records a pattern may match (wildcard records always), in name order."""
        found: dict[str, NameRecord] = dict(self.wildcards)
        for p in patterns:
            if p.is_wildcard:
                found.update(self.by_suffix.get(p.suffix, {}))
            else:
                hit = self.by_name.get(p.text)
                if hit is not None:
                    found[hit.name] = hit
        return [found[n] for n in sorted(found)]
