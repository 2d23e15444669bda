"""The tenant resolvers' answers, as query-log records and per-tenant counters.

With the DNS front (docs/dns-front.md) only the (name, type) pairs of the tenant's
table reach Envoy's DNS filter; every other query goes to the tenant resolver over
Envoy's TCP hop, so Envoy's access log and counters never see it. The resolver
reports each answer (dnstap, ``resolvers/reports.py``) while its tenant's view logs
queries, and ``ResolverReports.answer`` turns it into what the Envoy path makes:

- the same ``QueryRecord`` (``QueryLog.classify``: the tenant's policy, WARN and
  deny kept for ``GET /api/v1/queries``, the console, the structured log line, and
  ``dnscp_policy_queries{tenant,action}``);
- the tenant's traffic counters (``tenant_counts``, which ``DnsTraffic`` adds as
  queries, forwarded and NXDOMAIN; denied and WARN come from the query log's counts);
- ``dnscp_resolver_reports{tenant,rcode}`` on ``/metrics`` (``ReportsCollector``).

Counted once: a query Envoy's DNS filter forwarded itself (a sidecar without the
front asks the resolver A and AAAA through c-ares) is already in Envoy's access log
and counters, so ``sources`` says, for a client address, which connected sidecar
of the tenant it is and whether its Envoy logs those; such A/AAAA answers are
skipped here. A client that is no connected sidecar is reported as node
``resolver``. Thread-safe: each resolver's reader calls from its own thread.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from controlplane.telemetry.querylog import QueryLog, QueryRecord

RESOLVER_NODE = "resolver"  # the node of a record whose client is no connected sidecar
ENVOY_FORWARDS = frozenset({"A", "AAAA"})  # what Envoy's DNS filter forwards itself


@dataclass(frozen=True, slots=True)
class Source:
    """Who a client address of a tenant's resolver is."""

    node: str  # the sidecar's node id; RESOLVER_NODE when it is none (or several)
    envoy_logs: bool = False  # its Envoy's DNS filter forwards A/AAAA itself (no front)


Sources = Callable[[str, str], Source]  # (tenant, client address) -> who
Kept = Callable[[QueryRecord], None]  # a WARN or deny record (per-sidecar counts)


def _nobody(tenant: str, address: str) -> Source:
    return Source(RESOLVER_NODE)


class ResolverReports:
    def __init__(self, query_log: QueryLog, *, sources: Sources = _nobody,
                 on_record: Kept | None = None) -> None:
        self.query_log = query_log
        self.sources = sources
        self.on_record = on_record
        self._lock = threading.Lock()
        self.answers: collections.Counter[tuple[str, str]] = collections.Counter()
        self.skipped: collections.Counter[str] = collections.Counter()  # tenant -> count

    def answer(self, *, tenant: str, source: str, name: str, qtype: str,
               rcode: str) -> QueryRecord | None:
        """One answer of ``tenant``'s resolver; the record when WARN or deny."""
        who = self.sources(tenant, source)
        if who.envoy_logs and qtype in ENVOY_FORWARDS:
            with self._lock:
                self.skipped[tenant] += 1
            return None
        with self._lock:
            self.answers[(tenant, rcode)] += 1
        record = self.query_log.classify(tenant=tenant, node=who.node, name=name,
                                         qtype=qtype, rcode=rcode)
        if record is not None and self.on_record is not None:
            self.on_record(record)
        return record

    def tenant_counts(self) -> dict[str, tuple[float, float]]:
        """(answers, NXDOMAIN answers) by tenant (``DnsTraffic.resolver_counts``)."""
        out: dict[str, tuple[float, float]] = {}
        with self._lock:
            for (tenant, rcode), n in self.answers.items():
                q, nx = out.get(tenant, (0.0, 0.0))
                out[tenant] = (q + n, nx + (n if rcode == "NXDOMAIN" else 0))
        return out

    def snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        with self._lock:
            return dict(self.answers), dict(self.skipped)


class ReportsCollector:
    """``/metrics``: the resolvers' reported answers by tenant and rcode."""

    def __init__(self, reports: ResolverReports) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily

        answers, skipped = self.reports.snapshot()
        family = CounterMetricFamily(
            "dnscp_resolver_reports", "Answers the tenant resolvers reported (dnstap) while "
            "the tenant's policy logs queries, by tenant and rcode; Envoy's own forwards "
            "left out", labels=["tenant", "rcode"])
        for (tenant, rcode), n in sorted(answers.items()):
            family.add_metric([tenant, rcode], n)
        yield family
        left = CounterMetricFamily(
            "dnscp_resolver_reports_skipped", "Reported answers to a sidecar whose Envoy "
            "forwarded the query itself and logged it already (A/AAAA without the front)",
            labels=["tenant"])
        for tenant, n in sorted(skipped.items()):
            left.add_metric([tenant], n)
        yield left


Sidecar = tuple[str, str, str, bool]  # (tenant, address, node, its Envoy forwards A/AAAA)


class SourceIndex:
    """``Sources`` from the connected sidecars, indexed by (tenant, address): rebuilt at
    most every ``max_age`` seconds, or sooner (at most every ``miss_interval``) when an
    address is not found (a sidecar that just connected), so a report costs a lookup,
    not a walk over every stream."""

    def __init__(self, sidecars: Callable[[], Iterable[Sidecar]], *, max_age: float = 5.0,
                 miss_interval: float = 0.1, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.sidecars = sidecars
        self.max_age = max_age
        self.miss_interval = miss_interval
        self.clock = clock
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], Source] = {}
        self._built = float("-inf")

    def _rebuild(self, now: float) -> None:
        nodes: dict[tuple[str, str], dict[str, bool]] = {}
        for tenant, address, node, envoy_logs in self.sidecars():
            if address:
                nodes.setdefault((tenant, address), {})[node] = envoy_logs
        self._index = {key: Source(next(iter(found)) if len(found) == 1 else RESOLVER_NODE,
                                   envoy_logs=any(found.values()))
                       for key, found in nodes.items()}
        self._built = now

    def __call__(self, tenant: str, address: str) -> Source:
        now = self.clock()
        with self._lock:
            found = self._index.get((tenant, address))
            age = now - self._built
            if age > self.max_age or (found is None and age > self.miss_interval):
                self._rebuild(now)
                found = self._index.get((tenant, address))
        return found if found is not None else Source(RESOLVER_NODE)


def peer_address(peer: str) -> str:
    """The address of a gRPC peer (``ipv4:10.1.2.3:5000``, ``ipv6:[::1]:5000``); "" for
    anything else (a unix socket)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        mapped = host.lower().removeprefix("::ffff:")  # an IPv4 client of a dual-stack port
        return mapped if mapped != host.lower() and "." in mapped else host
    return ""
