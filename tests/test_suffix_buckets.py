"""``SuffixBuckets`` (parent buckets, the upper ones made on lookup) against ``RecordIndex.of``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.dns.record_index import RecordIndex
from controlplane.dns.records import NameRecord
from controlplane.dns.suffix_buckets import SuffixBuckets

_LABELS = st.sampled_from(["a", "b", "ns", "svc", "pod", "cluster", "local", "x"])
_NAMES = st.lists(_LABELS, min_size=1, max_size=6).map(".".join)
# Steps: add a name (or add it again), or remove one (maybe one never added).
_STEPS = st.lists(st.tuples(st.booleans(), _NAMES), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_STEPS, st.lists(_NAMES, max_size=8))
def test_buckets_equal_the_full_index_after_any_adds_and_removes(
        steps: list[tuple[bool, str]], asked: list[str]) -> None:
    buckets = SuffixBuckets()
    held: dict[str, NameRecord] = {}
    for add, name in steps:
        if add:
            rec = NameRecord(name=name, ipv4=(f"10.0.0.{len(held) % 250}",))
            held[name] = rec
            buckets.add(rec)
        else:
            held.pop(name, None)
            buckets.remove(name)
    full = RecordIndex.of(held.values()).by_suffix
    assert buckets == full
    assert len(buckets) == len(full) and set(buckets) == set(full)
    for suffix in [*asked, *full]:
        assert buckets.get(suffix) == full.get(suffix)
        assert (suffix in buckets) == (suffix in full)
