"""A type snapshot's body, written directly, is the serialised ``DiscoveryResponse``."""

from __future__ import annotations

import hashlib

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.any_pb2 import Any
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
    # The whole response with the shared nonce (built in one join, the body cut from it).
    assert snap.payload == discovery_pb2.DiscoveryResponse(
        version_info=snap.version, type_url=type_url, nonce=snap.shared_nonce,
        resources=[Any(type_url=type_url, value=resources[n]) for n in sorted(resources)]
    ).SerializeToString(deterministic=True)
    # The Anys (made when asked for) and the versions as they were written before.
    assert {n: (a.type_url, a.value) for n, a in snap.anys.items()} == {
        n: (type_url, v) for n, v in resources.items()}
    if resources:  # one Any per name, made once
        assert snap.anys[min(resources)] is snap.anys[min(resources)]
    digest = hashlib.sha256(type_url.encode())
    for n in sorted(resources):
        digest.update(len(n).to_bytes(4, "big") + n.encode()
                      + len(resources[n]).to_bytes(8, "big") + resources[n])
    assert snap.version == digest.hexdigest()[:16]
    assert snap.resource_versions == {n: hashlib.sha256(v).hexdigest()[:16]
                                      for n, v in resources.items()}
    assert snap.names == frozenset(resources)


def test_a_large_resource() -> None:
    """A length of several bytes (a wide view's listener is tens of MB)."""
    snap = _from_values("t", {"a": b"x" * 3_000_000, "b": b""})
    assert snap.body == response_body(snap.version, "t", list(snap.anys.values()))
