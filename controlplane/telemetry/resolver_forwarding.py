"""A tenant resolver's forwarding, from unbound's own counters (pure): how long the
tenant's upstream server takes to answer, how often the resolver answers SERVFAIL, and
how much it answers from its cache.

The counters are ``unbound-control stats_noreset`` (the control plane reads every
resolver's once a second: ``ResolverPool.stats``), cumulative since that resolver
started; so is everything here but ``last_minute``, which ``ForwardingWindow`` makes
from the samples of the last minute (bounded: one per read, 61 per tenant). Keys
(``extended-statistics: yes``, translate/unbound.py):

=====================================  ==============================================
``total.num.queries``                  queries the resolver received
``total.num.cachehits``                answered without asking upstream (its cache,
                                       its local zones, policy denials)
``total.num.cachemiss``                the tenant's server was asked
``total.num.recursivereplies``         answers that needed the upstream
``total.recursion.time.avg``/``median``  seconds those took (the median is unbound's
                                       estimate from its histogram)
``num.answer.rcode.SERVFAIL``          SERVFAIL answers: the upstream failed, timed
                                       out or could not be reached
``num.query.udpout``/``tcpout``        queries sent upstream, by transport (TLS is
                                       counted as TCP)
=====================================  ==============================================
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

WINDOW_SECONDS = 60.0

# What a sample keeps: the counters whose differences make the last minute's figures.
_KEPT = ("total.num.queries", "total.num.cachehits", "total.num.recursivereplies",
         "num.answer.rcode.SERVFAIL")


class ForwardingWindow:
    """The last minute of every tenant resolver's counters: ``observe`` each read (with
    the reader's clock), ``recent`` the differences over the window. A counter that went
    down (the resolver was restarted, its counters start again) starts the tenant anew."""

    def __init__(self, seconds: float = WINDOW_SECONDS, max_samples: int = 61) -> None:
        self.seconds = seconds
        self.max_samples = max_samples
        self._samples: dict[str, collections.deque[tuple[float, tuple[float, ...]]]] = {}

    def observe(self, now: float, stats: Mapping[str, Mapping[str, float]]) -> None:
        for tenant in [t for t in self._samples if t not in stats]:
            del self._samples[tenant]  # gone with its resolver
        for tenant, counters in stats.items():
            replies = counters.get("total.num.recursivereplies", 0.0)
            sample = (*(counters.get(k, 0.0) for k in _KEPT),
                      counters.get("total.recursion.time.avg", 0.0) * replies)
            ring = self._samples.setdefault(tenant, collections.deque(maxlen=self.max_samples))
            if ring and any(new < old for new, old in zip(sample, ring[-1][1], strict=True)):
                ring.clear()
            ring.append((now, sample))

    def recent(self, tenant: str, now: float) -> dict[str, Any] | None:
        """The last minute (or as much of it as there are samples): queries, upstream
        answers and their average time, SERVFAIL answers; None with fewer than two."""
        ring = self._samples.get(tenant)
        if not ring or len(ring) < 2:
            return None
        first = next((s for s in ring if s[0] >= now - self.seconds), ring[0])
        last = ring[-1]
        if first is last:
            first = ring[-2]
        queries, hits, replies, servfail, time_sum = (
            b - a for a, b in zip(first[1], last[1], strict=True))
        return {
            "seconds": round(last[0] - first[0], 1),
            "queries": int(queries),
            "upstream_answers": int(replies),
            "latency_avg_ms": round(time_sum / replies * 1000, 3) if replies > 0 else None,
            "upstream_errors": int(servfail),
            "cache_hit_share": round(hits / queries, 4) if queries > 0 else None,
        }


def forwarding(stats: Mapping[str, float],
               last_minute: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What the console shows of one resolver; None without its counters.
    ``last_minute``: ``ForwardingWindow.recent`` for it."""
    if not stats:
        return None
    queries = stats.get("total.num.queries", 0.0)
    hits = stats.get("total.num.cachehits", 0.0)
    replies = stats.get("total.num.recursivereplies", 0.0)
    servfail = stats.get("num.answer.rcode.SERVFAIL", 0.0)
    latency = None
    if replies > 0:
        latency = {"avg": round(stats.get("total.recursion.time.avg", 0.0) * 1000, 3),
                   "median": round(stats.get("total.recursion.time.median", 0.0) * 1000, 3)}
    return {
        "since": "resolver start",
        "queries": int(queries),
        "cache_hits": int(hits),
        "cache_misses": int(stats.get("total.num.cachemiss", 0.0)),
        "cache_hit_share": round(hits / queries, 4) if queries > 0 else None,
        "upstream_answers": int(replies),
        "upstream_sent": {"udp": int(stats.get("num.query.udpout", 0.0)),
                          "tcp": int(stats.get("num.query.tcpout", 0.0))},
        "latency_ms": latency,
        "upstream_errors": int(servfail),
        "upstream_error_share": round(servfail / queries, 4) if queries > 0 else None,
        "last_minute": last_minute,
    }
