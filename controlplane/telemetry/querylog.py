"""Per-query records from Envoy, classified with the tenant's policy.

Envoy's DNS filter sends one OpenTelemetry log record per query (body
``"<name> <type> <rcode>"``, attribute ``tenant``; the node id is the
resource attribute ``node_name``) for views whose policy logs something.
Each record is classified with the same code that built the view; the
``warn`` and ``deny`` ones become a structured log line, a counter
(``dnscp_policy_queries_total{tenant,action}``) and an entry in its tenant's
bounded ring buffer (``keep`` records per tenant, so one tenant's flood
flushes only its own) that ``GET /api/v1/queries`` serves. Allowed queries
are counted as ``allow``; every query, allowed too, also feeds the tenant's top names,
its answers by rcode and its latest queries (``query_stats.py``, bounded), which
``search`` filters for ``GET /api/v1/querylog``. Tenants are those with a
policy, so the buffers are bounded by the configuration. Records refused at
the gRPC service (no credentials, another caller's node, another node's
tenant) are counted by reason (``dnscp_query_log_refused_total{reason}``),
never by the tenant they claim.

With a policy server (``spec.policy.server``) every name no blacklist entry denies is
decided by the server: ``server_verdict(tenant, name)`` gives its decision (or the failure
mode's), so a record says who decided (``source``: ``rule``, ``server`` or ``failure
mode``) and what the server said (``verdict``: ``allow``, ``deny`` or ``""``).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from controlplane.policy.selection import CompiledPolicy
from controlplane.telemetry.query_stats import QueryStats

log = logging.getLogger("controlplane.dns")

QTYPES = {1: "A", 28: "AAAA", 33: "SRV", 5: "CNAME", 16: "TXT", 12: "PTR", 15: "MX", 2: "NS",
          6: "SOA", 255: "ANY", 65: "HTTPS"}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass(frozen=True)
class QueryRecord:
    time: float
    tenant: str
    node: str
    name: str
    type: str
    rcode: str
    action: str  # warn, deny
    rule: str
    source: str = "rule"  # who decided: rule, server, failure mode
    verdict: str = ""  # the policy server's answer (allow, deny), when it decided


# (tenant, name) -> None when the tenant has no policy server, else (allow, source) with
# source "server" or "failure mode ...": what answered the name (policyserver.client)
ServerVerdict = Callable[[str, str], "tuple[bool, str] | None"]


def _no_server(tenant: str, name: str) -> tuple[bool, str] | None:
    return None


def _text(value: str) -> str:
    return QTYPES.get(int(value), value) if value.isdigit() else value


class QueryLog:
    """Thread-safe: gRPC handlers call ``ingest``; the admin API reads."""

    def __init__(self, policies: Callable[[], dict[str, CompiledPolicy]], *,
                 keep: int = 1000, clock: Callable[[], float] = time.time,
                 server_verdict: ServerVerdict = _no_server,
                 stats: QueryStats | None = None) -> None:
        self._policies = policies
        # top names, answers by rcode, every action's latest queries (query_stats.py)
        self.stats = stats if stats is not None else QueryStats()
        self._server_verdict = server_verdict
        self.sources: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self._lock = threading.Lock()
        self.keep = keep  # records per tenant
        self.records: dict[str, collections.deque[QueryRecord]] = {}
        self.refused: collections.Counter[str] = collections.Counter()  # reason -> records
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.unparsed = 0
        self._clock = clock

    def ingest(self, *, tenant: str, node: str, body: str) -> QueryRecord | None:
        """One record of Envoy's DNS filter (body ``"<name> <type> <rcode>"``)."""
        parts = body.split()
        if len(parts) != 3 or not tenant:
            with self._lock:
                self.unparsed += 1
            return None
        raw_name, raw_type, raw_rcode = parts
        rcode = RCODES.get(int(raw_rcode), raw_rcode) if raw_rcode.isdigit() else raw_rcode
        return self.classify(tenant=tenant, node=node, name=raw_name.rstrip("."),
                             qtype=_text(raw_type), rcode=rcode)

    def classify(self, *, tenant: str, node: str, name: str, qtype: str,
                 rcode: str) -> QueryRecord | None:
        """One answered query, by Envoy or by the tenant resolver (``resolver_reports.py``):
        counted by the action the tenant's policy takes on ``name``, kept when WARN or deny."""
        policy = self._policies().get(tenant)
        if policy is None:
            with self._lock:
                self.counts[(tenant, "unknown")] += 1
            return None
        decision = policy.classify(name.lower())
        action, rule, source, verdict = decision.action.value, decision.rule, "rule", ""
        server = (None if decision.rule.startswith("blacklist")
                  else self._server_verdict(tenant, name.lower().rstrip(".")))
        if server is not None:  # the policy server decides every name no blacklist denies
            allow, why = server
            # A denied name is never answered NOERROR (left out of the table, NXDOMAIN from
            # the gate): a NOERROR was answered under an earlier allow that has since changed.
            allow = allow or rcode == "NOERROR"
            action = "allow" if allow else "deny"
            if why == "server":
                source, verdict, rule = "server", action, f"policy server: {action}"
            else:
                source, rule = "failure mode", f"policy server: {why}"
        record = QueryRecord(time=self._clock(), tenant=tenant, node=node, name=name,
                             type=qtype, rcode=rcode, action=action, rule=rule,
                             source=source, verdict=verdict)
        with self._lock:
            self.counts[(tenant, action)] += 1
            self.sources[(tenant, source, action)] += 1
            if tenant not in self.stats.tenants:
                self.stats.forget(set(self._policies()))  # tenants deleted since
            self.stats.add(record)
        if action == "allow":
            return None
        with self._lock:
            buffer = self.records.get(tenant)
            if buffer is None:
                policies = self._policies()
                for gone in [t for t in self.records if t not in policies]:
                    del self.records[gone]  # tenants deleted since
                buffer = self.records[tenant] = collections.deque(maxlen=self.keep)
            buffer.append(record)
        log.log(logging.WARNING if action == "warn" else logging.INFO,
                "dns %s: %s %s %s (%s)", action, name, qtype, rcode, rule,
                extra={"tenant": tenant, "node": node, "query": asdict(record)})
        return record

    def reject(self, reason: str, *, records: int = 1) -> None:
        """Records refused at the service (``querylog_service.py``), by reason."""
        with self._lock:
            self.refused[reason] += records

    def recent(self, *, tenant: str | None = None, action: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            if tenant is not None:
                records = list(self.records.get(tenant, ()))
            else:
                records = sorted((r for b in self.records.values() for r in b),
                                 key=lambda r: r.time)
        out = [asdict(r) for r in reversed(records)
               if (tenant is None or r.tenant == tenant) and (action is None or r.action == action)]
        return out[:limit]

    def summary(self, tenant: str, *, now: float, n: int = 10) -> dict[str, Any]:
        """``tenant``'s most queried and most denied names, and its answers by rcode over
        the last minute (query_stats.py)."""
        with self._lock:
            return self.stats.summary(tenant, now=now, n=n)

    def search(self, query: QuerySearch, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest logged queries of every action that match ``query``, newest first:
        the last ``stats.recent_size`` of each tenant, and before those the WARN and
        denied ones this log keeps longer."""
        with self._lock:
            tenants = [query.tenant] if query.tenant else sorted(
                set(self.records) | set(self.stats.tenants))
            pools: list[QueryRecord] = []
            for name in tenants:
                everything = self.stats.tenants.get(name)
                recent = list(everything.recent) if everything is not None else []
                oldest = recent[0].time if recent else float("inf")
                if query.action != "allow":  # the longer WARN/deny history before those
                    pools += [r for r in self.records.get(name, ()) if r.time < oldest]
                pools += recent
        found = [r for r in pools if query.matches(r)]
        found.sort(key=lambda r: r.time, reverse=True)
        return [asdict(r) for r in found[:limit]]


@dataclass(frozen=True)
class QuerySearch:
    """The query-log view's filters; empty matches everything. ``name`` is a substring
    (case-insensitive); ``since``/``until`` are Unix seconds."""

    tenant: str = ""
    node: str = ""
    name: str = ""
    type: str = ""
    action: str = ""
    rcode: str = ""
    since: float = 0.0
    until: float = 0.0

    def matches(self, r: QueryRecord) -> bool:
        return ((not self.node or r.node == self.node)
                and (not self.name or self.name.lower() in r.name.lower())
                and (not self.type or r.type == self.type.upper())
                and (not self.action or r.action == self.action)
                and (not self.rcode or r.rcode == self.rcode.upper())
                and (not self.since or r.time >= self.since)
                and (not self.until or r.time <= self.until))
