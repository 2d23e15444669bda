"""An index of the cluster's names by suffix, to find what a whitelist can match quickly.

A tenant with ``defaultAction: DENY`` answers only whitelisted names, so its
view needs only the records under its whitelist patterns: looking them up by
suffix costs O(visible names) instead of classifying every name in the
cluster (O(names) per tenant, the dominant cost with many tenants).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from controlplane.names import Pattern
from controlplane.records import NameRecord


class RecordIndex:
    def __init__(self, records: list[NameRecord]) -> None:
        self.records = records
        self.by_name = {r.name: r for r in records}
        self.position = {r.name: i for i, r in enumerate(records)}
        self.by_suffix: dict[str, list[NameRecord]] = defaultdict(list)
        self.wildcards = [r for r in records if r.is_wildcard]
        for r in records:
            if r.is_wildcard:
                continue
            pos = r.name.find(".")
            while pos != -1:
                self.by_suffix[r.name[pos + 1:]].append(r)
                pos = r.name.find(".", pos + 1)

    def candidates(self, patterns: Iterable[Pattern]) -> list[NameRecord]:
        """Records a pattern may match (wildcard records always), in record order."""
        found: dict[str, NameRecord] = {r.name: r for r in self.wildcards}
        for p in patterns:
            if p.is_wildcard:
                for r in self.by_suffix.get(p.suffix, ()):
                    found[r.name] = r
            else:
                hit = self.by_name.get(p.text)
                if hit is not None:
                    found[hit.name] = hit
        return sorted(found.values(), key=lambda r: self.position[r.name])
