"""Incremental (delta) ADS as a sans-IO state machine, beside ``SotwStream``.

``DeltaStream.receive(request)`` digests a DeltaDiscoveryRequest;
``DeltaStream.responses(snapshot)`` returns what to send. Per type it keeps
the versions the client has (``initial_resource_versions`` on a new stream,
then everything sent and not NACKed) and sends only resources whose version
differs, plus ``removed_resources`` for names the client has that are gone,
including removals that happened while it was away (checklist #14). A NACKed
(name, version) is never resent; subscription changes are honoured even with
a stale nonce (#8). Every subscribed type gets one response on a new stream
even when there is nothing to send (#20): an empty DeltaDiscoveryResponse
carrying the system version, since Envoy's initialisation waits for the first
response of each type (a wildcard CDS with no clusters would otherwise stall
until ``initial_fetch_timeout``). Tested rule by rule in
``tests/test_xds_delta.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from controlplane.translate.types import CLUSTER_TYPE, LISTENER_TYPE, NAMED_ONLY_TYPES
from controlplane.xds.protocol import (
    Ack,
    Event,
    Nack,
    check_request,
    type_order,
    type_snapshot,
)
from controlplane.xds.snapshot import ViewSnapshot

DeltaRequest = discovery_pb2.DeltaDiscoveryRequest
DeltaResponse = discovery_pb2.DeltaDiscoveryResponse


@dataclass(slots=True)
class DeltaTypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    subscribed: bool = False
    known: dict[str, str] = field(default_factory=dict)  # what the client has: name -> version
    pending: dict[str, dict[str, str]] = field(default_factory=dict)  # nonce -> sent versions
    pending_removed: dict[str, set[str]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)  # name -> NACKed version
    resend: set[str] = field(default_factory=set)  # newly subscribed: send even if known
    system: dict[str, str] = field(default_factory=dict)  # nonce -> system version
    answered: bool = False  # this stream has sent a response of the type (#20)
    # Shared with SotwStream's TypeState for the admin API and metrics:
    sent_version: str | None = None
    sent_nonce: str = ""
    acked_version: str = ""
    nacked_version: str = ""
    nack_error: str = ""
    acks: int = 0
    nacks: int = 0


@dataclass(frozen=True)
class DeltaOutgoing:
    type_url: str
    version: str  # system_version_info: the snapshot version of the type
    nonce: str
    names: frozenset[str]
    removed: frozenset[str]
    payload: bytes

    @property
    def size(self) -> int:
        return len(self.payload)

    def decode(self) -> Any:
        return DeltaResponse.FromString(self.payload)


@dataclass(slots=True)
class DeltaStream:
    stream_id: str
    node: base_pb2.Node | None = None
    types: dict[str, DeltaTypeState] = field(default_factory=dict)
    _nonces: int = 0

    def receive(self, request: Any) -> list[Event]:
        check_request(self, request, "DeltaDiscoveryRequest")
        state = self.types.get(request.type_url)
        if state is None:
            state = self.types[request.type_url] = DeltaTypeState()
            state.known = dict(request.initial_resource_versions)
        subscribe = list(request.resource_names_subscribe)
        unsubscribe = set(request.resource_names_unsubscribe)
        if not state.subscribed:
            state.subscribed = True
            # RDS is subscribed by name only: no names is none, never "all" (#9).
            state.wildcard = ((not subscribe and request.type_url not in NAMED_ONLY_TYPES)
                              or "*" in subscribe)
        elif "*" in subscribe:
            state.wildcard = True
        if "*" in unsubscribe:
            state.wildcard = False
        for name in subscribe:
            if name != "*" and name not in state.names:
                state.names.add(name)
                state.resend.add(name)  # #10: answer a new subscription even if unchanged
        for name in unsubscribe - {"*"}:
            state.names.discard(name)
            state.known.pop(name, None)
        nonce = request.response_nonce
        if not nonce or nonce not in state.pending:
            return []  # initial, or stale (#8): only the subscription counts
        sent = state.pending.pop(nonce)
        removed = state.pending_removed.pop(nonce, set())
        system = state.system.pop(nonce, "")
        # Older outstanding responses are superseded by this answer.
        for older in [n for n in state.pending if _seq(n) < _seq(nonce)]:
            state.pending.pop(older)
            state.pending_removed.pop(older, None)
            state.system.pop(older, None)
        if request.HasField("error_detail"):
            for name, version in sent.items():
                state.rejected[name] = version
                state.known.pop(name, None)
            state.nacked_version = system
            state.nack_error = request.error_detail.message or "rejected without a message"
            state.nacks += 1
            return [Nack(request.type_url, system, state.nack_error)]
        state.known.update(sent)
        for name in removed:
            state.known.pop(name, None)
        for name in sent:
            state.rejected.pop(name, None)
        state.acked_version = system
        state.acks += 1
        return [Ack(request.type_url, system)]

    def _listeners_pending(self, snapshot: ViewSnapshot) -> bool:
        """The client does not run the current listeners yet (not ACKed, not NACKed)."""
        lds = self.types.get(LISTENER_TYPE)
        ts = snapshot.types.get(LISTENER_TYPE)
        if lds is None or ts is None or not lds.subscribed:
            return False
        wanted = set(ts.anys) if lds.wildcard else lds.names & set(ts.anys)
        return any(lds.known.get(n) != ts.resource_versions[n]
                   and lds.rejected.get(n) != ts.resource_versions[n] for n in wanted)

    def responses(self, snapshot: ViewSnapshot | None) -> list[DeltaOutgoing]:
        if snapshot is None:
            return []
        out = []
        for type_url in type_order(self.types):
            state = self.types[type_url]
            if not state.subscribed:
                continue
            ts = type_snapshot(snapshot, type_url)
            wanted = set(ts.anys) if state.wildcard else state.names & set(ts.anys)
            in_flight: dict[str, str] = {}
            for sent in state.pending.values():
                in_flight.update(sent)
            send = sorted(
                n for n in wanted
                if (state.known.get(n) != ts.resource_versions[n] or n in state.resend)
                and state.rejected.get(n) != ts.resource_versions[n]
                and in_flight.get(n) != ts.resource_versions[n])
            watched = set(state.known) | set(in_flight)
            gone = {n for n in watched if n not in ts.anys
                    and (state.wildcard or n in state.names)}
            gone -= {n for removed in state.pending_removed.values() for n in removed}
            if type_url == CLUSTER_TYPE and self._listeners_pending(snapshot):
                gone = set()  # #15: remove clusters only once the new listeners are ACKed
            state.resend -= set(send) | (state.resend - wanted)
            if not send and not gone and state.answered:
                continue  # #6: nothing new, nothing to say (#20: but the first answer goes out)
            state.answered = True
            self._nonces += 1
            nonce = f"{self.stream_id}-{self._nonces}"
            response = DeltaResponse(type_url=type_url, nonce=nonce,
                                     system_version_info=ts.version,
                                     removed_resources=sorted(gone))
            for name in send:
                response.resources.add(name=name, version=ts.resource_versions[name],
                                       resource=ts.anys[name])
            state.pending[nonce] = {n: ts.resource_versions[n] for n in send}
            state.pending_removed[nonce] = gone
            state.system[nonce] = ts.version
            state.sent_version, state.sent_nonce = ts.version, nonce
            out.append(DeltaOutgoing(type_url, ts.version, nonce, frozenset(send),
                                     frozenset(gone), response.SerializeToString()))
        return out


def _seq(nonce: str) -> int:
    return int(nonce.rsplit("-", 1)[1])
