"""A type snapshot's body, written directly, is the serialised ``DiscoveryResponse``."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.xds.snapshot import _from_values, response_body

values = st.dictionaries(st.text(max_size=8),
                         st.one_of(st.binary(max_size=40), st.binary(min_size=120, max_size=300)),
                         max_size=5)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["", "type.googleapis.com/envoy.config.listener.v3.Listener",
                        "x" * 200]), values)
def test_the_body_is_the_serialised_response(type_url: str, resources: dict[str, bytes]) -> None:
    snap = _from_values(type_url, resources)
    assert snap.body == response_body(snap.version, type_url, list(snap.anys.values()))
    assert snap.size == len(snap.body)
    assert list(snap.anys) == sorted(resources)


def test_a_large_resource() -> None:
    """A length of several bytes (a wide view's listener is tens of MB)."""
    snap = _from_values("t", {"a": b"x" * 3_000_000, "b": b""})
    assert snap.body == response_body(snap.version, "t", list(snap.anys.values()))
