"""State-of-the-world ADS, as a sans-IO state machine: no sockets, no clock.

``SotwStream.receive(request)`` digests one DiscoveryRequest;
``SotwStream.responses(snapshot)`` says what must be sent now, given the
view's current snapshot. The grpcio servicer calls these two and nothing
else decides protocol questions. Rules from the checklist
(``../shared/xds-protocol-checklist.md``), each tested in
``tests/test_xds_protocol.py``:

1. nonces unique per stream; versions kept per type URL; new stream, fresh state.
2. only the first request must carry ``node``; it is remembered.
3. an empty ``type_url`` is an error (INVALID_ARGUMENT).
4. a NACK is a request with ``error_detail``; never compare versions for it.
5. a NACKed version is never resent; the error is kept until a new version.
6. an ACK of the current version gets no response.
7. responses are computed from state, so only the latest request is answered.
8. a stale nonce is ignored for ACK/NACK, but its ``resource_names`` count.
9. wildcard: first request without names means all; later empty means none;
   ``*`` may be combined with names. RDS (``NAMED_ONLY_TYPES``) is subscribed by
   name only: an empty list means none, also on the first request.
10. a changed subscription is answered even when the version is unchanged.
11. LDS/CDS responses carry the full set; EDS and RDS only the requested names (a
    name missing from a response deletes nothing).
12. a name appears once per response (resources are keyed by name).
13. requested names that do not exist yet are sent once they appear.
20. every subscribed type is answered on a new stream, also when it has no
    resources (an empty response; a type the view has nothing of counts as
    empty): Envoy's initialisation waits for each type's first response.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.core.errors import ProtocolError
from controlplane.translate.types import (
    CLUSTER_TYPE,
    LISTENER_TYPE,
    NAMED_ONLY_TYPES,
    ORDERED_TYPES,
)
from controlplane.xds.snapshot import TypeSnapshot, ViewSnapshot, build_snapshot

KEEP = "+keep"  # version suffix of a CDS response that still carries clusters in use

DiscoveryRequest = discovery_pb2.DiscoveryRequest
DiscoveryResponse = discovery_pb2.DiscoveryResponse
# The generated (upb) classes come without type stubs: to mypy they are Any.
Request = Any
Response = Any


NO_NAMES: frozenset[str] = frozenset()  # one empty set, not one per stream and type


@dataclass(slots=True)
class TypeState:
    """What one stream knows about one resource type."""

    wildcard: bool = False
    legacy_wildcard: bool = False  # subscribed with an empty list and never named anything
    names: frozenset[str] = frozenset()
    subscribed: bool = False
    subscription_changed: bool = False
    sent_version: str | None = None
    sent_nonce: str = ""
    sent_names: frozenset[str] = frozenset()
    acked_version: str = ""
    nacked_version: str = ""
    nack_error: str = ""
    nacks: int = 0
    acks: int = 0
    # The newest ``TypeSnapshot.serial`` whose shared nonce this stream was sent: a
    # snapshot's shared payload goes to a stream once at most, and only while newer than
    # that, so the stream's nonces stay unique (#1); else its own nonce is joined on.
    shared_serial: int = 0
    # What the client has, by name: after a full-state response the snapshot's own
    # mapping (shared by every stream of the view), else this stream's.
    sent_anys: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Ack:
    type_url: str
    version: str


@dataclass(frozen=True, slots=True)
class Nack:
    type_url: str
    version: str  # the version that was rejected
    error: str


Event = Ack | Nack


@dataclass(frozen=True)
class Outgoing:
    type_url: str
    version: str
    nonce: str
    names: frozenset[str]
    # A serialised DiscoveryResponse in two parts: ``body``, for a full-state response the
    # view's own bytes, and ``tail``, this stream's nonce when it has one of its own.
    # Usually ``body`` is the whole response with the snapshot's shared nonce
    # (``TypeSnapshot.payload``, one object for every stream of the view and version) and
    # ``tail`` is empty: nothing per stream is joined or copied. Else (the stream had that
    # snapshot's shared nonce already) ``body`` is ``TypeSnapshot.body`` and the two are
    # joined only when sent (``payload``), within the byte budget.
    body: bytes
    tail: bytes = b""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.tail)

    @property
    def payload(self) -> bytes:
        return self.body + self.tail if self.tail else self.body

    def decode(self) -> Response:
        return DiscoveryResponse.FromString(self.payload)


def check_request(stream: SotwStream | Any, request: Any, what: str) -> None:
    """Rules #3 and #2, shared by both variants: a type URL is required, and the node
    comes on the first request only and is remembered."""
    if not request.type_url:
        raise ProtocolError("INVALID_ARGUMENT", f"{what}.type_url is empty (ADS)")
    if stream.node is None:
        # Envoy lists every extension it was built with in its node (hundreds of
        # entries): nothing here reads them, so the stream's copy leaves them out.
        if request.node.extensions:
            request.node.ClearField("extensions")
        stream.node = base_pb2.Node()
        stream.node.CopyFrom(request.node)


@lru_cache(maxsize=16)
def _empty_type(type_url: str) -> TypeSnapshot:
    return build_snapshot(type_url, {type_url: {}}).types[type_url]


def type_snapshot(snapshot: ViewSnapshot, type_url: str) -> TypeSnapshot:
    """The view's resources of ``type_url``; a type it has nothing of is an empty set,
    still answered (#20), with a version that depends on the type URL only."""
    ts = snapshot.types.get(type_url)
    return ts if ts is not None else _empty_type(type_url)


def type_order(types: Any) -> tuple[str, ...]:
    """Make-before-break (#15): CDS, EDS, LDS, RDS, then anything else by name. Asked on
    every turn of every stream, for the few type sets there are: one answer per set."""
    return _type_order(tuple(types))


@lru_cache(maxsize=256)
def _type_order(types: tuple[str, ...]) -> tuple[str, ...]:
    return tuple([t for t in ORDERED_TYPES if t in types] + sorted(
        t for t in types if t not in ORDERED_TYPES))


@dataclass(slots=True)
class SotwStream:
    stream_id: str
    node: base_pb2.Node | None = None
    types: dict[str, TypeState] = field(default_factory=dict)
    _nonces: int = 0

    def receive(self, request: Request) -> list[Event]:
        """Digest one request; raise ProtocolError if the stream must end."""
        check_request(self, request, "DiscoveryRequest")
        state = self.types.get(request.type_url)
        if state is None:
            state = self.types[request.type_url] = TypeState()
        self._update_subscription(state, list(request.resource_names),
                                  named_only=request.type_url in NAMED_ONLY_TYPES)
        nonce = request.response_nonce
        if not nonce:
            return []  # an initial request (or a re-request after reconnect)
        if nonce != state.sent_nonce:
            return []  # stale (checklist #8): only the subscription above counts
        if request.HasField("error_detail"):
            state.nacked_version = state.sent_version or ""
            state.nack_error = request.error_detail.message or "rejected without a message"
            state.nacks += 1
            return [Nack(request.type_url, state.nacked_version, state.nack_error)]
        state.acked_version = request.version_info
        state.acks += 1
        return [Ack(request.type_url, request.version_info)]

    def _update_subscription(self, state: TypeState, names: list[str], *,
                             named_only: bool = False) -> None:
        if not names:
            # An empty first list means "all", and stays so while nothing was named;
            # once names were given, an empty list means "none" (#9). RDS: always none.
            wildcard = not named_only and (not state.subscribed or state.legacy_wildcard)
            state.legacy_wildcard = wildcard
        else:
            wildcard = "*" in names
            state.legacy_wildcard = False
        explicit = frozenset(n for n in names if n != "*") if names else NO_NAMES
        if not state.subscribed or wildcard != state.wildcard or explicit != state.names:
            state.subscription_changed = state.subscribed
            state.subscribed = True
            state.wildcard, state.names = wildcard, explicit

    def responses(self, snapshot: ViewSnapshot | None) -> list[Outgoing]:
        """What to send now, in make-before-break order (CDS, EDS, LDS, RDS)."""
        if snapshot is None:
            return []
        out = []
        for type_url in type_order(self.types):
            state = self.types[type_url]
            if not state.subscribed:
                continue
            ts = type_snapshot(snapshot, type_url)
            names = self._names_to_send(state, ts)
            if type_url == CLUSTER_TYPE and self._listeners_pending(snapshot):
                # #15 make-before-break: clusters the running listeners may still use are
                # kept (with the content the client has) until the new listeners are ACKed.
                kept = {n: a for n, a in state.sent_anys.items() if n not in ts.anys}
                if kept:
                    if state.sent_version != ts.version + KEEP or state.sent_names != (
                            names | set(kept)):
                        out.append(self._respond(state, ts, names, keep=kept))
                    continue
            if state.sent_version is None:
                pass  # #20: the first response on this stream, also when it is empty
            elif state.subscription_changed:
                pass  # #10
            elif ts.version == state.sent_version and names == state.sent_names:
                continue  # #6
            elif ts.version == state.nacked_version:
                continue  # #5
            out.append(self._respond(state, ts, names))
        return out

    def _listeners_pending(self, snapshot: ViewSnapshot) -> bool:
        lds = self.types.get(LISTENER_TYPE)
        ts = snapshot.types.get(LISTENER_TYPE)
        return (lds is not None and ts is not None and lds.sent_version is not None
                and lds.acked_version != ts.version and lds.nacked_version != ts.version)

    def _names_to_send(self, state: TypeState, ts: TypeSnapshot) -> frozenset[str]:
        if state.wildcard:
            return ts.names  # shared by the view's streams
        if state.names <= ts.names:
            return state.names  # the stream's own set: no copy per response
        return frozenset(n for n in state.names if n in ts.anys)

    def _respond(self, state: TypeState, ts: TypeSnapshot, names: frozenset[str],
                 keep: dict[str, Any] | None = None) -> Outgoing:
        full = not keep and names == ts.names
        if full and ts.serial > state.shared_serial and ts.payload:
            # The view's whole response, nonce included, as it is: shared by its streams.
            state.shared_serial = ts.serial
            state.sent_version, state.sent_nonce, state.sent_names = (
                ts.version, ts.shared_nonce, names)
            state.sent_anys = ts.anys
            state.subscription_changed = False
            return Outgoing(ts.type_url, ts.version, ts.shared_nonce, names, ts.payload)
        self._nonces += 1
        nonce = f"{self.stream_id}-{self._nonces}"
        if keep:
            version = ts.version + KEEP
            payload = DiscoveryResponse(
                version_info=version, type_url=ts.type_url, nonce=nonce,
                resources=[ts.anys[n] for n in sorted(names)]
                + [keep[n] for n in sorted(keep)]).SerializeToString()
            all_names = names | frozenset(keep)
            state.sent_version, state.sent_nonce, state.sent_names = version, nonce, all_names
            state.sent_anys = {**{n: ts.anys[n] for n in names}, **keep}
            state.subscription_changed = False
            return Outgoing(ts.type_url, version, nonce, all_names, payload)
        if full:
            # The shared bytes, serialised once per view, plus this stream's nonce.
            body, tail = ts.body, DiscoveryResponse(nonce=nonce).SerializeToString()
        else:
            body, tail = DiscoveryResponse(
                version_info=ts.version, type_url=ts.type_url, nonce=nonce,
                resources=[ts.anys[n] for n in sorted(names)],
            ).SerializeToString(), b""
        state.sent_version, state.sent_nonce, state.sent_names = ts.version, nonce, names
        state.sent_anys = ts.anys if full else {n: ts.anys[n] for n in names}
        state.subscription_changed = False
        return Outgoing(ts.type_url, ts.version, nonce, names, body, tail)
