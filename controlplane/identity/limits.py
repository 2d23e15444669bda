"""Per-caller caps on what one identity may hold open: streams and node ids, per channel.

Every channel a sidecar writes to (ADS, the stats sink, the query log) admits a call
only after its caller is proven (``auth.py``) and its node bound to that caller
(``auth.node_refusal``). Then ``CallerLimits.admit`` checks that the caller (one pod,
or one static token: ``Identity.key``) holds fewer than ``max_streams`` calls open on
that channel and fewer than ``max_nodes`` distinct node ids; past either, the call ends
with RESOURCE_EXHAUSTED and the reason, and the refusal is counted by channel and limit
(``dnscp_sidecar_limit_refusals_total``). A pod's token is bound to one node id, so
``max_nodes`` matters only for static tokens shared by several machines.

Not thread-safe: every caller runs on the event loop.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from controlplane.identity.auth import Identity

DEFAULT_MAX_STREAMS = 16  # a sidecar holds 1 ADS stream, 1 stats stream, a few log calls
DEFAULT_MAX_NODES = 16
CHANNELS = ("ads", "stats", "querylog")


@dataclass(slots=True)
class _Held:
    streams: int = 0
    nodes: collections.Counter[str] = field(default_factory=collections.Counter)


class CallerLimits:
    def __init__(self, *, max_streams: int = DEFAULT_MAX_STREAMS,
                 max_nodes: int = DEFAULT_MAX_NODES) -> None:
        self.max_streams = max_streams
        self.max_nodes = max_nodes
        self._held: dict[tuple[str, str], _Held] = {}
        self.refused: collections.Counter[tuple[str, str]] = collections.Counter()

    def admit(self, channel: str, identity: Identity, node: str) -> str | None:
        """Why this call may not open (RESOURCE_EXHAUSTED), or None: then it holds a
        place until ``release`` with the same arguments."""
        held = self._held.setdefault((channel, identity.key), _Held())
        if held.streams >= self.max_streams:
            self.refused[(channel, "streams")] += 1
            return (f"{identity.key} already holds {held.streams} {channel} streams "
                    f"(at most {self.max_streams} per caller)")
        if node not in held.nodes and len(held.nodes) >= self.max_nodes:
            self.refused[(channel, "nodes")] += 1
            return (f"{identity.key} already speaks for {len(held.nodes)} node ids on "
                    f"{channel} (at most {self.max_nodes} per caller); {node!r} refused")
        held.streams += 1
        held.nodes[node] += 1
        return None

    def release(self, channel: str, identity: Identity, node: str) -> None:
        key = (channel, identity.key)
        held = self._held.get(key)
        if held is None:
            return
        held.streams -= 1
        held.nodes[node] -= 1
        if held.nodes[node] <= 0:
            del held.nodes[node]
        if held.streams <= 0:
            del self._held[key]

    def open_streams(self, channel: str) -> int:
        return sum(h.streams for (c, _), h in self._held.items() if c == channel)

    def callers(self, channel: str) -> int:
        return sum(1 for c, _ in self._held if c == channel)


class LimitsCollector:
    """``/metrics``: refusals by channel and limit, streams open and callers per channel."""

    def __init__(self, limits: CallerLimits) -> None:
        self.limits = limits

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        lim = self.limits
        refused = CounterMetricFamily(
            "dnscp_sidecar_limit_refusals", "Sidecar calls refused with RESOURCE_EXHAUSTED: "
            "the caller (a pod or a static token) held too many streams or node ids",
            labels=["channel", "limit"])
        for channel in CHANNELS:
            for limit in ("streams", "nodes"):
                refused.add_metric([channel, limit], lim.refused[(channel, limit)])
        yield refused
        streams = GaugeMetricFamily("dnscp_sidecar_caller_streams",
                                    "Authenticated sidecar calls open now, by channel",
                                    labels=["channel"])
        callers = GaugeMetricFamily("dnscp_sidecar_callers",
                                    "Callers (pods, static tokens) with a call open, "
                                    "by channel", labels=["channel"])
        for channel in CHANNELS:
            streams.add_metric([channel], lim.open_streams(channel))
            callers.add_metric([channel], lim.callers(channel))
        yield streams
        yield callers
        for name, value in (("dnscp_sidecar_max_streams_per_caller", lim.max_streams),
                            ("dnscp_sidecar_max_nodes_per_caller", lim.max_nodes)):
            yield GaugeMetricFamily(name, "The per-caller cap (--sidecar-max-streams, "
                                    "--sidecar-max-nodes)", value=value)
