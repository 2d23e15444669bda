"""A tenant resolver's forwarding, from unbound's own counters (pure): how long the
tenant's upstream server takes to answer, how often the resolver answers SERVFAIL, and
how much it answers from its cache.

The counters are ``unbound-control stats_noreset`` (the control plane reads every
resolver's once a second: ``ResolverPool.stats``), cumulative since that resolver
started; so is everything here. Keys (``extended-statistics: yes``,
translate/unbound.py):

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

from collections.abc import Mapping
from typing import Any


def forwarding(stats: Mapping[str, float]) -> dict[str, Any] | None:
    """What the console shows of one resolver; None without its counters."""
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
    }
