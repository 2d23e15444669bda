"""The SotW ADS state machine against a scripted fake Envoy, rule by rule.

Numbers refer to ../shared/xds-protocol-checklist.md.
"""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.core.errors import ProtocolError
from controlplane.translate.types import CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE
from controlplane.xds.protocol import Ack, Nack, Outgoing, SotwStream
from controlplane.xds.snapshot import ViewSnapshot, build_snapshot

LDS, CDS, EDS = LISTENER_TYPE, CLUSTER_TYPE, ENDPOINT_TYPE


def snapshot(listeners: tuple[str, ...] = ("l1",), clusters: tuple[str, ...] = (),
             endpoints: tuple[str, ...] = (), tag: str = "") -> ViewSnapshot:
    return build_snapshot("view", {
        LDS: {n: listener_pb2.Listener(name=n, stat_prefix=tag) for n in listeners},
        CDS: {n: cluster_pb2.Cluster(name=n, alt_stat_name=tag) for n in clusters},
        EDS: {n: endpoint_pb2.ClusterLoadAssignment(cluster_name=n) for n in endpoints},
    })


class FakeEnvoy:
    """Scripted client: builds requests the way Envoy does and remembers responses."""

    def __init__(self, stream: SotwStream | None = None, node_id: str = "sidecar-1") -> None:
        self.stream = stream or SotwStream("s1")
        self.node = base_pb2.Node(id=node_id)
        self.first = True
        self.last: dict[str, Outgoing] = {}

    def request(self, type_url: str, names: tuple[str, ...] = (), *, version: str = "",
                nonce: str = "", error: str | None = None) -> list[Ack | Nack]:
        req = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names,
                                             version_info=version, response_nonce=nonce)
        if self.first:
            req.node.CopyFrom(self.node)
            self.first = False
        if error is not None:
            req.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        return self.stream.receive(req)

    def pull(self, snap: ViewSnapshot) -> list[Outgoing]:
        out = self.stream.responses(snap)
        for o in out:
            self.last[o.type_url] = o
        return out

    def ack(self, type_url: str, names: tuple[str, ...] = ()) -> list[Ack | Nack]:
        o = self.last[type_url]
        return self.request(type_url, names, version=o.version, nonce=o.nonce)

    def nack(self, type_url: str, error: str = "bad listener") -> list[Ack | Nack]:
        o = self.last[type_url]
        acked = self.stream.types[type_url].acked_version
        return self.request(type_url, version=acked, nonce=o.nonce, error=error)


def test_rule1_nonces_unique_and_versions_per_type() -> None:
    env = FakeEnvoy()
    env.request(CDS)
    env.request(LDS)
    snap = snapshot(clusters=("c1",))
    first = env.pull(snap)
    assert [o.type_url for o in first] == [CDS, LDS]
    assert first[0].version == snap.types[CDS].version
    assert first[1].version == snap.types[LDS].version
    env.ack(CDS)
    env.ack(LDS)
    later = env.pull(snapshot(clusters=("c1",), listeners=("l1", "l2")))
    nonces = [o.nonce for o in first + later]
    assert len(set(nonces)) == len(nonces) == 3
    # A new stream starts fresh: it is answered even though the content is the same.
    env2 = FakeEnvoy(SotwStream("s2"))
    env2.request(LDS)
    assert [o.type_url for o in env2.pull(snap)] == [LDS]


def test_rule2_node_only_on_first_request_is_remembered() -> None:
    env = FakeEnvoy(node_id="first-node")
    env.request(LDS)
    env.request(CDS)  # no node on this one
    assert env.stream.node is not None and env.stream.node.id == "first-node"


def test_the_stream_keeps_its_node_without_the_envoy_extensions_list() -> None:
    """Envoy names every extension it was built with in its node (hundreds): the
    stream's copy leaves them out and keeps what the view is chosen from."""
    stream = SotwStream("s1")
    node = base_pb2.Node(id="n1", cluster="c")
    node.metadata.update({"NAMESPACE": "acme"})
    node.extensions.add(name="envoy.filters.udp.dns_filter", category="envoy.filters.udp")
    stream.receive(discovery_pb2.DiscoveryRequest(type_url=LDS, node=node))
    assert stream.node is not None
    assert (stream.node.id, stream.node.cluster) == ("n1", "c")
    assert stream.node.metadata["NAMESPACE"] == "acme"
    assert not stream.node.extensions


def test_rule3_empty_type_url_is_invalid_argument() -> None:
    env = FakeEnvoy()
    with pytest.raises(ProtocolError) as info:
        env.request("")
    assert info.value.code == "INVALID_ARGUMENT"


def test_rule4_nack_is_told_by_error_detail_not_by_version() -> None:
    env = FakeEnvoy()
    env.request(LDS)
    env.pull(snapshot())
    # A NACK carries the *previous* version (empty here) and error_detail.
    events = env.nack(LDS, "listener has a bad address")
    assert events == [Nack(LDS, snapshot().types[LDS].version, "listener has a bad address")]
    # An ACK whose version differs from what we think we sent is still an ACK.
    env2 = FakeEnvoy()
    env2.request(LDS)
    o = env2.pull(snapshot())[0]
    assert env2.request(LDS, version="something-else", nonce=o.nonce) == [
        Ack(LDS, "something-else")]


def test_rule5_nacked_version_is_never_resent() -> None:
    env = FakeEnvoy()
    env.request(LDS)
    bad = snapshot(tag="bad")
    env.pull(bad)
    env.nack(LDS)
    state = env.stream.types[LDS]
    assert state.nack_error == "bad listener" and state.nacked_version == bad.types[LDS].version
    for _ in range(3):  # Envoy may re-request; the same version is not resent
        assert env.pull(bad) == []
        env.request(LDS, version="", nonce=env.last[LDS].nonce)
        assert env.pull(bad) == []
    good = snapshot(tag="good")
    (out,) = env.pull(good)
    assert out.version == good.types[LDS].version


def test_rule6_ack_of_current_version_gets_no_response() -> None:
    env = FakeEnvoy()
    env.request(LDS)
    snap = snapshot()
    env.pull(snap)
    assert env.ack(LDS) == [Ack(LDS, snap.types[LDS].version)]
    assert env.pull(snap) == []


def test_rule7_only_latest_request_is_answered() -> None:
    env = FakeEnvoy()
    env.request(LDS, ("a",))
    env.request(LDS, ("a", "b"))
    env.request(LDS, ("b",))
    out = env.pull(snapshot(listeners=("a", "b")))
    assert len(out) == 1 and out[0].names == frozenset({"b"})


def test_rule8_stale_nonce_ignored_but_names_kept() -> None:
    env = FakeEnvoy()
    env.request(EDS, ("c1",))
    snap = snapshot(endpoints=("c1", "c2"))
    first = env.pull(snap)[0]
    env.pull(snapshot(endpoints=("c1", "c2"), tag="x"))  # nothing new for c1: same bytes
    # A request with a stale nonce and an error: not a NACK, but the names count.
    events = env.request(EDS, ("c1", "c2"), nonce="stale-nonce", error="old")
    assert events == []
    assert env.stream.types[EDS].nack_error == ""
    (out,) = env.pull(snap)
    assert out.names == frozenset({"c1", "c2"}) and out.nonce != first.nonce


def test_rule9_wildcard_semantics() -> None:
    snap = snapshot(listeners=("a", "b"))
    env = FakeEnvoy()
    env.request(LDS)  # first request without names: all
    assert env.pull(snap)[0].names == frozenset({"a", "b"})
    env.ack(LDS)  # Envoy's ACK of a wildcard subscription has no names: still all
    assert env.pull(snap) == []
    assert env.stream.types[LDS].wildcard
    env.request(LDS, ("a",), version=env.last[LDS].version, nonce=env.last[LDS].nonce)
    assert env.pull(snap)[0].names == frozenset({"a"})
    env.request(LDS, (), version=env.last[LDS].version, nonce=env.last[LDS].nonce)
    assert env.pull(snap)[0].names == frozenset()  # after names, empty means none
    env.request(LDS, ("*", "a"), version=env.last[LDS].version, nonce=env.last[LDS].nonce)
    assert env.pull(snap)[0].names == frozenset({"a", "b"})


def test_rule10_changed_subscription_is_answered_when_unchanged() -> None:
    env = FakeEnvoy()
    snap = snapshot(endpoints=("c1", "c2"))
    env.request(EDS, ("c1",))
    env.pull(snap)
    env.ack(EDS, ("c1",))
    assert env.pull(snap) == []
    env.request(EDS, ("c1", "c2"), version=env.last[EDS].version, nonce=env.last[EDS].nonce)
    (out,) = env.pull(snap)
    assert out.version == snap.types[EDS].version and out.names == {"c1", "c2"}


def test_rule11_lds_cds_full_set_eds_only_requested() -> None:
    env = FakeEnvoy()
    env.request(CDS)
    env.request(EDS, ("c1",))
    env.request(LDS)
    snap = snapshot(listeners=("l1", "l2"), clusters=("c1", "c2"), endpoints=("c1", "c2"))
    out = {o.type_url: o.decode() for o in env.pull(snap)}
    assert sorted(r.value for r in out[LDS].resources) == sorted(
        a.value for a in snap.types[LDS].anys.values())
    assert len(out[CDS].resources) == 2
    assert len(out[EDS].resources) == 1
    # Removing a listener: the next full set no longer carries it (Envoy deletes it).
    env.ack(LDS)
    (lds,) = [o for o in env.pull(snapshot(listeners=("l1",), clusters=("c1", "c2"),
                                           endpoints=("c1", "c2"))) if o.type_url == LDS]
    assert len(lds.decode().resources) == 1


def test_rule12_no_duplicate_names_in_a_response() -> None:
    env = FakeEnvoy()
    env.request(EDS, ("c1", "c1", "c2"))
    (out,) = env.pull(snapshot(endpoints=("c1", "c2")))
    names = [endpoint_pb2.ClusterLoadAssignment.FromString(r.value).cluster_name
             for r in out.decode().resources]
    assert sorted(names) == ["c1", "c2"]


def test_rule13_requested_names_that_appear_later_are_pushed() -> None:
    env = FakeEnvoy()
    env.request(EDS, ("later",))
    out = env.pull(snapshot(endpoints=("c1",)))
    assert out[0].names == frozenset()
    env.ack(EDS, ("later",))
    (out2,) = env.pull(snapshot(endpoints=("c1", "later")))
    assert out2.names == frozenset({"later"})


def test_full_response_is_shared_bytes_plus_nonce() -> None:
    """The snapshot body is reused verbatim: streams never re-serialise the table."""
    snap = snapshot(listeners=("a", "b"))
    outs = []
    for i in range(3):
        env = FakeEnvoy(SotwStream(f"s{i}"))
        env.request(LDS)
        outs.append(env.pull(snap)[0])
    for o in outs:
        assert o.payload.startswith(snap.types[LDS].body)
        decoded = o.decode()
        assert decoded.nonce == o.nonce and decoded.version_info == snap.types[LDS].version


def test_versions_are_content_hashes() -> None:
    assert snapshot(tag="a").types[LDS].version == snapshot(tag="a").types[LDS].version
    assert snapshot(tag="a").types[LDS].version != snapshot(tag="b").types[LDS].version


def test_rule15_clusters_in_use_are_removed_after_the_listeners() -> None:
    env = FakeEnvoy()
    env.request(CDS)
    env.request(LDS)
    old = snapshot(listeners=("l1",), clusters=("c-old",), tag="uses-c-old")
    env.pull(old)
    env.ack(CDS)
    env.ack(LDS)
    new = snapshot(listeners=("l1",), clusters=("c-new",), tag="uses-c-new")
    first = env.pull(new)
    # Clusters first, still carrying c-old, then the listener that no longer uses it.
    assert [o.type_url for o in first] == [CDS, LDS]
    assert first[0].names == {"c-old", "c-new"}
    env.ack(CDS)
    assert env.pull(new) == []  # c-old stays until the listener is ACKed
    env.ack(LDS)
    (final,) = env.pull(new)
    assert final.type_url == CDS and final.names == {"c-new"}
    assert final.version == new.types[CDS].version


def test_rule20_empty_types_are_answered_on_a_new_stream() -> None:
    """Envoy waits for the first response of each type: an empty set is answered too."""
    snap = snapshot(listeners=("l1",), clusters=())
    env = FakeEnvoy()
    env.request(CDS)
    env.request(LDS)
    cds, lds = env.pull(snap)
    assert (cds.type_url, cds.names, lds.type_url) == (CDS, frozenset(), LDS)
    decoded = cds.decode()
    assert list(decoded.resources) == [] and decoded.version_info == snap.types[CDS].version
    assert decoded.nonce == cds.nonce and decoded.type_url == CDS
    assert env.ack(CDS) == [Ack(CDS, snap.types[CDS].version)]
    env.ack(LDS)
    assert env.pull(snap) == []  # #6 still holds for the empty type
    # Reconnect: the client already has this version; the new stream answers it again.
    again = FakeEnvoy(SotwStream("s2"))
    again.request(CDS, version=snap.types[CDS].version)
    again.request(LDS, version=snap.types[LDS].version)
    assert [(o.type_url, o.version) for o in again.pull(snap)] == [
        (CDS, snap.types[CDS].version), (LDS, snap.types[LDS].version)]
    again.ack(CDS)
    again.ack(LDS)
    assert again.pull(snap) == []


def test_rule20_explicit_names_that_do_not_exist_are_answered_empty() -> None:
    env = FakeEnvoy()
    env.request(EDS, ("missing",))
    (out,) = env.pull(snapshot(endpoints=()))
    assert out.names == frozenset() and list(out.decode().resources) == []


def test_rule20_a_type_the_view_has_nothing_of_is_answered_empty() -> None:
    route = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
    snap = snapshot()
    env = FakeEnvoy()
    env.request(route)
    (out,) = env.pull(snap)
    decoded = out.decode()
    assert decoded.type_url == route and list(decoded.resources) == []
    other = FakeEnvoy(SotwStream("s2"))
    other.request(route)
    assert out.version and [o.version for o in other.pull(snap)] == [out.version]  # stable
    env.ack(route)
    assert env.pull(snap) == []
    # A NACKed empty answer (whatever the reason) is not resent either (#5).
    other.nack(route, "no routes")
    assert other.pull(snap) == []
