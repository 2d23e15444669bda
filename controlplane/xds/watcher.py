"""What an ADS stream needs from whoever holds the configuration, and nothing more.

The grpcio driver (``server.py``) knows these two small interfaces, never the hub
(go-control-plane's servers know a ``ConfigWatcher`` and ``Callbacks`` the same way):

- ``ConfigWatcher``: a stream opens (``open``, with the wake-up to call when its
  snapshot changes), names its node (``attach``: the view it gets is chosen
  then), asks for the snapshot its next responses are computed from
  (``snapshot_for``), and goes (``close``).
- ``StreamCallbacks``: told what each request meant (an ACK or a NACK:
  ``record``) and each response sent (``record_sent``), for accounting.

``Watch`` is the stream's handle: its id and peer, and its protocol state machine
(``SotwStream`` or ``DeltaStream``), which the watcher creates.
The hub implements ``AdsBackend`` (both) with its ``Connection`` as the handle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from controlplane.xds.delta import DeltaOutgoing, DeltaStream
from controlplane.xds.protocol import Event, Outgoing, SotwStream
from controlplane.xds.snapshot import ViewSnapshot


class Watch(Protocol):
    """One open stream, as the configuration side keeps it."""

    @property
    def conn_id(self) -> str: ...
    @property
    def peer(self) -> str: ...
    @property
    def stream(self) -> SotwStream | DeltaStream: ...


W = TypeVar("W", bound=Watch)
W_contra = TypeVar("W_contra", bound=Watch, contravariant=True)


class ConfigWatcher(Protocol[W]):
    def open(self, peer: str, *, delta: bool = False,
             notify: Callable[[], None] | None = None) -> W:
        """A new stream from ``peer``; its node is not known yet. ``notify`` wakes the
        stream's send loop (its snapshot changed, or it got a view)."""
        ...

    def attach(self, watch: W, *, tenant: str = "", caller: str = "") -> None:
        """The stream's first request (with the node) arrived: choose its view.
        ``tenant``: the one tenant the caller stands for (a static token's ``tenant:``),
        whatever the node claims; ``caller``: who opened it (``Identity.key``), to bind
        the node's stats reports to the same caller."""
        ...

    def snapshot_for(self, watch: W) -> ViewSnapshot | None:
        """The snapshot the stream's next responses are computed from (None: not yet)."""
        ...

    def close(self, watch: W) -> None:
        """The stream ended."""
        ...


class StreamCallbacks(Protocol[W_contra]):
    def record(self, watch: W_contra, event: Event) -> None:
        """A request was an ACK or a NACK of a response sent before."""
        ...

    def record_sent(self, watch: W_contra, out: Outgoing | DeltaOutgoing) -> None:
        """A response left for the stream."""
        ...


class AdsBackend(ConfigWatcher[W], StreamCallbacks[W], Protocol[W]):
    """Both: what ``AdsServicer`` is given."""
