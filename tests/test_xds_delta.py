"""Delta ADS state machine against a scripted fake Envoy; numbers are checklist rules."""

from __future__ import annotations

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.rpc import status_pb2

from controlplane.core.errors import ProtocolError
from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE
from controlplane.xds.delta import DeltaOutgoing, DeltaStream
from controlplane.xds.protocol import Ack, Nack
from controlplane.xds.snapshot import ViewSnapshot, build_snapshot

LDS, CDS = LISTENER_TYPE, CLUSTER_TYPE


def snap(listeners: dict[str, str] | None = None, clusters: tuple[str, ...] = ()) -> ViewSnapshot:
    listeners = {"l1": "a"} if listeners is None else listeners
    return build_snapshot("v", {
        LDS: {n: listener_pb2.Listener(name=n, stat_prefix=tag) for n, tag in listeners.items()},
        CDS: {n: cluster_pb2.Cluster(name=n) for n in clusters},
    })


class Fake:
    def __init__(self, stream_id: str = "d1") -> None:
        self.stream = DeltaStream(stream_id)
        self.first = True
        self.last: dict[str, DeltaOutgoing] = {}

    def req(self, type_url: str, *, subscribe: tuple[str, ...] = (),
            unsubscribe: tuple[str, ...] = (), nonce: str = "", error: str | None = None,
            initial: dict[str, str] | None = None) -> list[Ack | Nack]:
        r = discovery_pb2.DeltaDiscoveryRequest(
            type_url=type_url, resource_names_subscribe=subscribe,
            resource_names_unsubscribe=unsubscribe, response_nonce=nonce,
            initial_resource_versions=initial or {})
        if self.first:
            r.node.CopyFrom(base_pb2.Node(id="n"))
            self.first = False
        if error:
            r.error_detail.CopyFrom(status_pb2.Status(code=3, message=error))
        return self.stream.receive(r)

    def pull(self, s: ViewSnapshot) -> list[DeltaOutgoing]:
        out = self.stream.responses(s)
        for o in out:
            self.last[o.type_url] = o
        return out

    def ack(self, type_url: str) -> list[Ack | Nack]:
        return self.req(type_url, nonce=self.last[type_url].nonce)


def test_rule3_empty_type_url() -> None:
    with pytest.raises(ProtocolError) as info:
        Fake().req("")
    assert info.value.code == "INVALID_ARGUMENT"


def test_only_changed_resources_are_sent() -> None:
    f = Fake()
    f.req(LDS)
    (first,) = f.pull(snap({"l1": "a", "l2": "b"}))
    assert first.names == {"l1", "l2"} and first.removed == frozenset()
    assert f.ack(LDS) == [Ack(LDS, first.version)]
    assert f.pull(snap({"l1": "a", "l2": "b"})) == []  # #6
    (second,) = f.pull(snap({"l1": "a", "l2": "changed"}))
    assert second.names == {"l2"}
    decoded = second.decode()
    assert [r.name for r in decoded.resources] == ["l2"] and decoded.system_version_info


def test_rule14_removed_resources_and_reconnect() -> None:
    f = Fake()
    f.req(LDS)
    f.pull(snap({"l1": "a", "l2": "b"}))
    f.ack(LDS)
    (out,) = f.pull(snap({"l1": "a"}))
    assert out.removed == {"l2"} and out.names == frozenset()
    f.ack(LDS)
    assert f.pull(snap({"l1": "a"})) == []
    # Reconnect: the client says what it has; what changed or vanished meanwhile is fixed.
    s = snap({"l1": "a", "l3": "c"})
    version_l1 = s.types[LDS].resource_versions["l1"]
    g = Fake("d2")
    g.req(LDS, initial={"l1": version_l1, "gone": "old-version"})
    (out,) = g.pull(s)
    assert out.names == {"l3"} and out.removed == {"gone"}


def test_rule5_nacked_version_is_not_resent() -> None:
    f = Fake()
    f.req(LDS)
    bad = snap({"l1": "bad"})
    f.pull(bad)
    events = f.req(LDS, nonce=f.last[LDS].nonce, error="invalid listener")
    assert events == [Nack(LDS, bad.types[LDS].version, "invalid listener")]
    assert f.pull(bad) == []
    (fixed,) = f.pull(snap({"l1": "good"}))
    assert fixed.names == {"l1"}


def test_rule8_stale_nonce_keeps_subscription() -> None:
    f = Fake()
    f.req(CDS, subscribe=("c1",))
    f.pull(snap(clusters=("c1", "c2")))
    assert f.req(CDS, subscribe=("c2",), nonce="not-a-nonce") == []
    (out,) = f.pull(snap(clusters=("c1", "c2")))
    assert out.names == {"c2"}


def test_rule9_wildcard_and_explicit() -> None:
    f = Fake()
    f.req(CDS, subscribe=("c1",))
    (out,) = f.pull(snap(clusters=("c1", "c2")))
    assert out.names == {"c1"}
    f.ack(CDS)
    f.req(CDS, subscribe=("*",))
    (out,) = f.pull(snap(clusters=("c1", "c2")))
    assert out.names == {"c2"}


def test_rule10_and_13_new_and_future_names() -> None:
    f = Fake()
    f.req(CDS, subscribe=("later",))
    (empty,) = f.pull(snap(clusters=("c1",)))  # #20: answered, with nothing in it
    assert empty.names == frozenset() and empty.removed == frozenset()
    f.ack(CDS)
    assert f.pull(snap(clusters=("c1",))) == []
    (out,) = f.pull(snap(clusters=("c1", "later")))
    assert out.names == {"later"}
    f.ack(CDS)
    f.req(CDS, unsubscribe=("later",))
    f.req(CDS, subscribe=("later",))
    (again,) = f.pull(snap(clusters=("c1", "later")))
    assert again.names == {"later"}  # resubscribed: sent even though unchanged


def test_ordering_cds_before_lds_and_unique_nonces() -> None:
    f = Fake()
    f.req(LDS)
    f.req(CDS)
    out = f.pull(snap({"l1": "a"}, clusters=("c1",)))
    assert [o.type_url for o in out] == [CDS, LDS]
    assert len({o.nonce for o in out}) == 2


def test_rule15_cluster_removal_waits_for_the_listeners() -> None:
    f = Fake()
    f.req(CDS)
    f.req(LDS)
    f.pull(snap({"l1": "uses-old"}, clusters=("old",)))
    f.ack(CDS)
    f.ack(LDS)
    out = f.pull(snap({"l1": "uses-new"}, clusters=("new",)))
    assert [(o.type_url, o.names, o.removed) for o in out] == [
        (CDS, {"new"}, frozenset()), (LDS, {"l1"}, frozenset())]
    f.ack(CDS)
    assert f.pull(snap({"l1": "uses-new"}, clusters=("new",))) == []
    f.ack(LDS)
    (removal,) = f.pull(snap({"l1": "uses-new"}, clusters=("new",)))
    assert removal.type_url == CDS and removal.removed == {"old"}


ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"


def test_rule20_empty_wildcard_type_is_answered_on_a_new_stream() -> None:
    """A wildcard CDS with no clusters: Envoy waits for this empty answer (facts #22)."""
    s = snap({"l1": "a"}, clusters=())
    f = Fake()
    f.req(CDS)
    f.req(LDS)
    cds, lds = f.pull(s)
    assert (cds.type_url, cds.names, cds.removed) == (CDS, frozenset(), frozenset())
    assert (lds.type_url, lds.names) == (LDS, {"l1"})
    decoded = cds.decode()
    assert decoded.system_version_info == s.types[CDS].version == cds.version
    assert decoded.nonce == cds.nonce and decoded.type_url == CDS
    assert list(decoded.resources) == [] and list(decoded.removed_resources) == []
    assert f.ack(CDS) == [Ack(CDS, s.types[CDS].version)]
    assert f.ack(LDS) == [Ack(LDS, s.types[LDS].version)]
    assert f.pull(s) == []  # #6: answered once, then only changes
    (added,) = f.pull(snap({"l1": "a"}, clusters=("c1",)))
    assert added.type_url == CDS and added.names == {"c1"}


def test_rule20_reconnect_with_everything_known_is_answered() -> None:
    """On a new stream the client already has every resource: still one answer per type."""
    s = snap({"l1": "a"}, clusters=("c1",))
    g = Fake("d2")
    g.req(CDS, initial=dict(s.types[CDS].resource_versions))
    g.req(LDS, initial=dict(s.types[LDS].resource_versions))
    out = g.pull(s)
    assert [(o.type_url, o.names, o.removed, o.version) for o in out] == [
        (CDS, frozenset(), frozenset(), s.types[CDS].version),
        (LDS, frozenset(), frozenset(), s.types[LDS].version)]
    g.ack(CDS)
    g.ack(LDS)
    assert g.pull(s) == []
    assert g.stream.types[CDS].acked_version == s.types[CDS].version
    # ... and an empty set on reconnect, too.
    empty = snap({"l1": "a"}, clusters=())
    h = Fake("d3")
    h.req(CDS)
    (cds,) = h.pull(empty)
    assert cds.names == frozenset() and cds.version == empty.types[CDS].version


def test_rule20_a_type_the_view_has_nothing_of_is_answered_empty() -> None:
    f = Fake()
    f.req(ROUTE)
    (out,) = f.pull(snap())
    decoded = out.decode()
    assert decoded.type_url == ROUTE and list(decoded.resources) == []
    assert out.version  # a stable version for the empty set
    f.ack(ROUTE)
    assert f.pull(snap()) == []


def test_rule20_and_5_a_nacked_first_answer_is_not_resent() -> None:
    s = snap({"l1": "bad"}, clusters=())
    f = Fake()
    f.req(CDS)
    f.req(LDS)
    f.pull(s)
    f.req(CDS, nonce=f.last[CDS].nonce, error="rejected")
    f.req(LDS, nonce=f.last[LDS].nonce, error="rejected")
    assert f.pull(s) == []
