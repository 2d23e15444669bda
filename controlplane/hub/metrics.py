"""What the hub counts and times: pushes, NACKs, push latency, rebuild phases, stalls.

``HubMetrics`` holds the numbers; the admin API's collector reads them at
scrape time (``families``). ``ChangeTrace`` follows one rebuild from the
moment a source saw the change to the first ACK of the new configuration,
phase by phase, and says where the time went (logged, and kept for the last
few rebuilds). ``watch_event_loop`` measures how long the event loop was
blocked (the loop lag), which is what ADS streams and admin requests wait.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

PUSH_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PHASE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# The phases of a rebuild, in order (ChangeTrace.phases), and what each one is.
PHASES = {
    "parse": "sources: parsing the changed input (YAML documents, watch events)",
    "store": "sources: applying it to the store",
    "merge": "the store: folding the changed keys into a new inventory",
    "build": "worker thread: records and tenant views of the changed names",
    "resolvers": "resolvers' thread: tenant resolvers started, their tables reloaded; "
                 "waited for before adopt when one may need a start, else after install "
                 "(then it costs the change's answer from Envoy nothing)",
    "adopt": "event loop: resolvers' addresses, policy-server targets, policy selection",
    "render": "worker thread: translating and serialising the views that changed",
    "install": "event loop: new snapshots in place, their streams woken",
}


class Histogram:
    """Cumulative buckets, the Prometheus way; read by the admin API's collector."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


@dataclass
class ChangeTrace:
    """One rebuild, from the first source event it carries to the first ACK it caused.

    Wall-clock times (``time.time()``) where the moment matters to someone outside
    the process (a benchmark comparing with its own clock); durations otherwise.
    """

    number: int
    seen_at: float | None = None  # a source saw the first change of the batch
    poked_at: float | None = None  # the debouncer was first told
    started_at: float = 0.0  # the rebuild began (after the debounce window)
    phases: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    changed: int = 0  # objects changed
    names: int = 0  # names whose record changed
    rebuilt: tuple[str, ...] = ()  # tenants whose view was rebuilt
    views: set[Any] = field(default_factory=set)  # view keys whose snapshot changed
    installed_at: float | None = None
    first_sent_at: float | None = None  # the first response carrying a new snapshot
    first_ack_at: float | None = None  # its ACK: the Envoy applied it
    first_ack_node: str = ""
    # The wave: responses carrying a changed view's new version handed to gRPC, until the
    # next rebuild that changes a snapshot or another install changes these views (a
    # front set's held pairs due): when the last stream was handed its response, from
    # the server's side.
    sent: int = 0
    last_sent_at: float | None = None

    def breakdown(self) -> dict[str, float]:
        """Milliseconds per step, in order, as far as the trace got."""
        out: dict[str, float] = {}
        ms = {name: self.phases.get(name, 0.0) * 1000 for name in PHASES}
        if self.seen_at is not None and self.poked_at is not None:
            out["parse"], out["store"] = ms["parse"], ms["store"]
            # From the source's thread to the event loop (and what else the source did).
            out["to_loop"] = max(0.0, (self.poked_at - self.seen_at) * 1000
                                 - ms["parse"] - ms["store"])
        if self.poked_at is not None:
            out["debounce"] = (self.started_at - self.poked_at) * 1000
        for name in ("merge", "build", "resolvers", "adopt", "render", "install"):
            if name in self.phases:
                out[name] = ms[name]
        if self.installed_at is not None and self.first_sent_at is not None:
            out["to_stream"] = (self.first_sent_at - self.installed_at) * 1000
        if self.first_sent_at is not None and self.first_ack_at is not None:
            out["envoy_ack"] = (self.first_ack_at - self.first_sent_at) * 1000
        return out

    def as_dict(self) -> dict[str, Any]:
        """For the admin API (``/api/v1/rebuilds``): wall-clock times in seconds since the
        epoch, durations in milliseconds."""
        return {
            "rebuild": self.number, "seen_at": self.seen_at, "poked_at": self.poked_at,
            "started_at": self.started_at, "installed_at": self.installed_at,
            "first_sent_at": self.first_sent_at, "first_ack_at": self.first_ack_at,
            "sent": self.sent, "last_sent_at": self.last_sent_at,
            "first_ack_node": self.first_ack_node or None,
            "objects_changed": self.changed, "names_changed": self.names,
            "views_rebuilt": list(self.rebuilt), "snapshots_changed": sorted(map(str, self.views)),
            "milliseconds": {k: round(v, 3) for k, v in self.breakdown().items()},
        }

    def summary(self) -> str:
        parts = [f"{k} {v:.1f}" for k, v in self.breakdown().items()]
        total = ""
        start = self.seen_at if self.seen_at is not None else self.poked_at
        if start is not None and self.first_ack_at is not None:
            total = f"; change to first ACK {(self.first_ack_at - start) * 1000:.1f} ms"
        return f"rebuild {self.number}: {', '.join(parts)} (ms){total}"


class HubMetrics:
    """Counters and histograms of the hub, read at scrape time."""

    def __init__(self) -> None:
        self.rebuilds = 0
        self.nacks_total = 0
        self.push_latency = Histogram(PUSH_LATENCY_BUCKETS)
        self.pushes: collections.Counter[tuple[str, str]] = collections.Counter()  # (view, type)
        self.nacks: collections.Counter[tuple[str, str]] = collections.Counter()  # (view, type)
        self.phases = {name: Histogram(PHASE_BUCKETS) for name in PHASES}
        self.loop_lag = Histogram(LAG_BUCKETS)
        self.loop_lag_max = 0.0  # the longest block seen since start
        self.traces: collections.deque[ChangeTrace] = collections.deque(maxlen=32)

    def observe_phases(self, trace: ChangeTrace) -> None:
        for name, seconds in trace.phases.items():
            if name in self.phases:
                self.phases[name].observe(seconds)

    def observe_lag(self, seconds: float) -> None:
        self.loop_lag.observe(seconds)
        self.loop_lag_max = max(self.loop_lag_max, seconds)

    def families(self) -> Iterator[Any]:
        """Prometheus metric families of the rebuild phases and the event loop."""
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        phases = HistogramMetricFamily(
            "dnscp_rebuild_phase_seconds", "Time per phase of a rebuild: " + "; ".join(
                f"{k}: {v}" for k, v in PHASES.items()), labels=["phase"])
        for name, h in self.phases.items():
            phases.add_metric([name], _buckets(h), sum_value=h.sum)
        yield phases
        lag = HistogramMetricFamily(
            "dnscp_event_loop_lag_seconds",
            "How late the event loop ran a 10 ms timer: the time ADS streams and admin "
            "requests waited behind other work")
        lag.add_metric([], _buckets(self.loop_lag), sum_value=self.loop_lag.sum)
        yield lag
        yield GaugeMetricFamily("dnscp_event_loop_lag_max_seconds",
                                "The longest event-loop block seen since start",
                                value=self.loop_lag_max)


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return ([(str(b), float(c)) for b, c in zip(h.buckets, h.counts, strict=True)]
            + [("+Inf", float(h.count))])


async def watch_event_loop(metrics: HubMetrics, stop: asyncio.Event, *,
                           interval: float = 0.01) -> None:
    """Measure the loop lag until ``stop``: how much later than asked a timer fires."""
    while not stop.is_set():
        asked = time.perf_counter()
        await asyncio.sleep(interval)
        metrics.observe_lag(max(0.0, time.perf_counter() - asked - interval))
