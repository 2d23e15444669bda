"""The read-only admin API (FastAPI). It reads what it is handed (``AdminReads``,
``reads.py``) and never writes."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane import __version__
from controlplane.admin.console import install_console
from controlplane.admin.console.api import RESOLVER_RCODES, console_api, no_tenant
from controlplane.admin.first_seen import FirstSeen
from controlplane.admin.reads import AdminReads, ResolverStats
from controlplane.core.model import Workload
from controlplane.core.workload import parse_labels
from controlplane.dns.views import view_as_json
from controlplane.identity.admin_auth import AdminAuthMiddleware, AdminAuthorizer
from controlplane.policyserver.client import (
    LATENCY_BUCKETS,
    PolicyDecider,
    decision_json,
    policy_server_json,
)
from controlplane.translate.explain import explain


def create_app(reads: AdminReads, *, auth: AdminAuthorizer | None = None,
               collectors: Sequence[Any] = ()) -> FastAPI:
    """The admin app over ``reads`` (what it shows, reads.py). ``auth``: every request
    but the probes needs a bearer token that the Kubernetes API authenticates and
    authorises (admin_auth.py); None for local runs. ``collectors``: more Prometheus
    collectors for ``/metrics``. The console's pages and the local ``/docs`` come from
    controlplane/admin/console/ (no CDN)."""
    app = FastAPI(
        title="DNS control plane admin API",
        version=__version__,
        description="Read-only view of the control plane: connected Envoys, tenant DNS "
        "tables and input errors. The operator console is at console/.",
        docs_url=None, redoc_url=None,  # served by install_console from local files
    )
    if auth is not None:
        app.add_middleware(AdminAuthMiddleware, authorizer=auth)

    built, streams = reads.views, reads.streams  # the views as built, the ADS streams
    decider, injections = reads.decider, reads.injections

    def _source() -> dict[str, object]:
        return reads.source_status() if reads.source_status else {}

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is alive and serving."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        """503 until the first full load of the source is applied; then 200.

        ``degraded`` names a current source problem (the last configuration
        keeps serving meanwhile).
        """
        ready, reason = reads.readiness()
        body: dict[str, object] = {"ready": ready, "source": _source()}
        if not ready:
            body["reason"] = reason
        elif reason:
            body["degraded"] = reason
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/api/v1/nodes", tags=["xds"])
    def nodes() -> list[dict[str, Any]]:
        """Every connected Envoy: node id, tenant, and per type the acked version and last NACK."""
        return streams.nodes()

    @app.get("/api/v1/nodes/{node_id}/history", tags=["xds"])
    def node_history(node_id: str, limit: int = 100) -> dict[str, Any]:
        """What a sidecar was sent and what it answered, newest first: each push (type,
        version), ACK, and NACK with Envoy's reason (hub/config_history.py: the latest
        10,000 events of the fleet, and its latest 1,000 NACKs)."""
        connected = any(c.workload is not None and c.workload.node_id == node_id
                        for c in streams.connections.values())
        return {"node_id": node_id, "connected": connected,
                "events": streams.history.of(node_id, limit=max(1, min(limit, 1000)))}

    @app.get("/api/v1/views", tags=["views"])
    def views() -> list[dict[str, object]]:
        """Every tenant view with a summary."""
        return [
            {"tenant": v.tenant, "policy": v.policy or None, "names": len(v.entries),
             "resolver_rules": len(v.forward.triggers) if v.forward else 0,
             "forwarding": [str(u) for u in v.upstreams],
             "notes": list(v.notes)}
            for _, v in sorted(built.tenant_views.items())
        ]

    @app.get("/api/v1/views/{tenant}/dns-table", tags=["views"])
    def dns_table(tenant: str) -> dict[str, object]:
        """The names a tenant sees and what Envoy answers for each."""
        view = built.tenant_views.get(tenant)
        if view is None:
            raise HTTPException(status_code=404, detail=no_tenant(tenant, built.tenant_views))
        out = view_as_json(view)
        if decider is not None:
            out["policy_server"] = policy_server_json(decider,
                                                      built.inventory.policies.get(tenant), tenant)
        return out

    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(reads))
    for collector in collectors:
        registry.register(collector)

    @app.get("/metrics", tags=["health"])
    def metrics() -> Response:
        """Control-plane metrics in the Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/v1/explain", tags=["views"])
    def explain_query(namespace: str, name: str, type: str = "A", labels: str = ""
                      ) -> dict[str, Any]:
        """Which policy and rule apply to a query from a workload, and what Envoy answers.

        ``labels`` is ``k=v,k2=v2`` (the pod's labels).
        """
        problems: list[str] = []
        pod_labels = parse_labels(labels, problems)
        if problems:
            raise HTTPException(status_code=422, detail="; ".join(problems))
        workload = Workload(node_id="explain", namespace=namespace,
                            labels=tuple(sorted(pod_labels.items())))
        out = explain(built.inventory, built.tenant_views, workload, name, type)
        policy = built.inventory.policies.get(str(out.get("policy") or ""))
        if decider is not None and policy is not None and policy.policy_server is not None:
            out["policy_server"] = decision_json(decider, policy.tenant, name)
        return out

    @app.get("/api/v1/queries", tags=["views"])
    def queries(tenant: str | None = None, action: str | None = None,
                limit: int = 100) -> dict[str, Any]:
        """Recent WARN and denied queries reported by the sidecars, newest first."""
        if action not in (None, "warn", "deny"):
            raise HTTPException(status_code=422, detail="action is warn or deny")
        return {"records": reads.query_log.recent(tenant=tenant, action=action,
                                                limit=max(1, min(limit, 1000)))}

    @app.get("/api/v1/vips", tags=["views"])
    def vips() -> dict[str, Any]:
        """Auto-allocated ServiceEntry VIPs (empty unless --auto-allocate-vips)."""
        return {
            "range": reads.settings.dns.vip_range or None,
            "allocations": [{"namespace": ns, "serviceentry": name, "host": host, "vip": ip}
                            for (ns, name, host), ip in sorted(built.vips.vips.items())],
            "errors": list(built.vips.errors),
        }

    first_seen = FirstSeen()

    @app.get("/api/v1/errors", tags=["input"])
    def errors() -> dict[str, object]:
        """Current input errors: broken files, invalid objects, unusable policies; for a
        file that is not valid YAML, the lines around the fault (``snippet``); for each,
        when the admin API first listed it (``first_seen``, Unix seconds)."""
        found = built.input_errors()
        since = first_seen.stamp(((e.kind, e.namespace, e.name, e.origin, e.reason)
                                  for e in found), now=time.time())
        errs = [{**e.as_dict(), "first_seen": round(t, 3)} for e, t in zip(found, since,
                                                                            strict=True)]
        return {"count": len(errs), "errors": errs}

    @app.get("/api/v1/rebuilds", tags=["xds"])
    def rebuilds() -> dict[str, object]:
        """The latest rebuilds, newest first: where each change's time went, from the
        source to the first Envoy's ACK (hub_metrics.ChangeTrace)."""
        return {"rebuilds": [t.as_dict() for t in reversed(reads.metrics.traces)]}

    @app.get("/api/v1/resolvers", tags=["views"])
    def resolvers() -> dict[str, object]:
        """The tenant resolvers: where each listens, its server and transport, its counters;
        with ``--resolver-hop-peers``, the terminators the sidecars' hop clusters list."""
        items = reads.resolvers.describe() if reads.resolvers is not None else []
        stats = reads.resolver_stats()
        for item in items:
            item["stats"] = dict(stats.get(str(item["tenant"]), {}))
        out: dict[str, object] = {"mode": "local" if reads.resolvers is not None else "none",
                                  "resolvers": items}
        spec = reads.settings.resolvers.hop_peers
        if spec.given:
            listed = list(reads.hop_peers())
            out["hop_peers"] = {"from": str(spec), "listed": listed,
                                "note": None if listed else "none known yet: each sidecar's "
                                "hop lists the terminator of the replica it is connected to"}
        return out

    @app.get("/api/v1/injection", tags=["injection"])
    def injection(result: str | None = None, caller: str | None = None,
                  limit: int = 100) -> dict[str, Any]:
        """The sidecar-injection webhook's latest decisions, newest first, and counts by
        caller (verified: the API server, proven; unverified: anyone else who reached the
        port), result (injected, already-injected, skipped, rejected) and reason.
        ``caller=verified`` lists only the proven ones."""
        if injections is None:
            return {"enabled": False, "counts": [], "recent": []}
        return {"enabled": True, **injections.summary(result=result, caller=caller,
                                                      limit=max(1, min(limit, 1000)))}

    app.include_router(console_api(reads))  # /api/v1/tenants, /api/v1/traffic
    install_console(app, title=app.title)  # /console/, /docs and /redoc, no CDN
    return app


class HubCollector:
    """Prometheus metrics read from the hub's surfaces at scrape time (no global state)."""

    def __init__(self, reads: AdminReads) -> None:
        self.reads = reads

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        reads = self.reads
        metrics = reads.metrics
        proxies = GaugeMetricFamily("dnscp_connected_proxies", "Connected Envoy streams by view",
                                    labels=["tenant", "view"])
        by_view: dict[tuple[str, str], int] = {}
        for conn in reads.streams.connections.values():
            if conn.view_key is not None:
                k = (conn.view_key.tenant, str(conn.view_key))
                by_view[k] = by_view.get(k, 0) + 1
        for (tenant, view), n in sorted(by_view.items()):
            proxies.add_metric([tenant, view], n)
        yield proxies
        yield CounterMetricFamily("dnscp_snapshot_serializations",
                                  "View snapshots serialised (once per view per change)",
                                  value=reads.cache.serializations)
        yield CounterMetricFamily("dnscp_rebuilds", "Recomputations of every tenant view",
                                  value=metrics.rebuilds)
        nacks = CounterMetricFamily("dnscp_nacks", "Responses rejected by Envoy, by view and type",
                                    labels=["view", "type"])
        for (view, type_), n in sorted(metrics.nacks.items()):
            nacks.add_metric([view, type_], n)
        yield nacks
        pushes = CounterMetricFamily("dnscp_pushes", "Responses sent to Envoy, by view and type",
                                     labels=["view", "type"])
        for (view, type_), n in sorted(metrics.pushes.items()):
            pushes.add_metric([view, type_], n)
        yield pushes
        h = metrics.push_latency
        latency = HistogramMetricFamily(
            "dnscp_push_latency_seconds",
            "From an input change to the ACK of the resulting version, per stream")
        latency.add_metric([], [(str(b), c) for b, c in zip(h.buckets, h.counts, strict=True)]
                           + [("+Inf", h.count)], sum_value=h.sum)
        yield latency
        yield GaugeMetricFamily("dnscp_input_errors", "Current input errors",
                                value=len(reads.views.input_errors()))
        queries = CounterMetricFamily(
            "dnscp_policy_queries", "Queries reported by the sidecars, by tenant and the "
            "action their policy takes (allow, warn, deny)", labels=["tenant", "action"])
        for (tenant, action), n in sorted(reads.query_log.counts.items()):
            queries.add_metric([tenant, action], n)
        yield queries
        decided = CounterMetricFamily(
            "dnscp_policy_query_decisions", "Queries reported by the sidecars, by tenant, "
            "who decided (rule, server, failure mode) and the action",
            labels=["tenant", "source", "action"])
        for (tenant, source, action), n in sorted(reads.query_log.sources.items()):
            decided.add_metric([tenant, source, action], n)
        yield decided
        yield from resolver_metrics(reads.resolver_stats())
        if reads.decider is not None:
            yield from policy_server_metrics(reads.decider)
        size = GaugeMetricFamily("dnscp_snapshot_bytes", "Serialised snapshot size by view",
                                 labels=["view"])
        for snap in reads.cache.snapshots():
            size.add_metric([str(snap.key)], snap.size)
        yield size
        yield from metrics.families()  # rebuild phases, event-loop lag (hub/metrics.py)


# unbound's counters (``unbound-control stats_noreset``) exported per tenant.
RESOLVER_COUNTERS = (
    ("dnscp_resolver_queries", "total.num.queries",
     "Queries the tenant resolver received (forwarded by the sidecars)"),
    ("dnscp_resolver_cache_hits", "total.num.cachehits",
     "Tenant resolver answers without asking the tenant's server (cache, policy denials)"),
    ("dnscp_resolver_cache_misses", "total.num.cachemiss",
     "Tenant resolver cache misses: the tenant's server was asked"),
    ("dnscp_resolver_policy_denied", "num.rpz.action.rpz-nxdomain",
     "Forwarded names the tenant resolver denied by policy"),
)


def resolver_metrics(stats: ResolverStats) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    for name, key, doc in RESOLVER_COUNTERS:
        family = CounterMetricFamily(name, doc, labels=["tenant"])
        for tenant, values in sorted(stats.items()):
            family.add_metric([tenant], values.get(key, 0.0))
        yield family
    answers = CounterMetricFamily(
        "dnscp_resolver_answers", "Tenant resolver answers by rcode (SERVFAIL: the tenant's "
        "server failed or could not be reached)", labels=["tenant", "rcode"])
    for tenant, values in sorted(stats.items()):
        for rcode in RESOLVER_RCODES:
            answers.add_metric([tenant, rcode], values.get(f"num.answer.rcode.{rcode}", 0.0))
    yield answers
    latency = GaugeMetricFamily(
        "dnscp_resolver_upstream_seconds", "Average time the tenant's server took to answer "
        "a cache miss (unbound's total.recursion.time.avg)", labels=["tenant"])
    for tenant, values in sorted(stats.items()):
        latency.add_metric([tenant], values.get("total.recursion.time.avg", 0.0))
    yield latency


def policy_server_metrics(decider: PolicyDecider) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    decisions = CounterMetricFamily(
        "dnscp_policy_server_decisions", "Policy server decisions by tenant and result "
        "(allow, deny, error: the failure mode decided, cache: answered from the cache)",
        labels=["tenant", "result"])
    for (tenant, result), n in sorted(decider.counts.items()):
        decisions.add_metric([tenant, result], n)
    yield decisions
    yield CounterMetricFamily("dnscp_policy_server_checks", "Check calls made",
                              value=decider.checks)
    latency = HistogramMetricFamily("dnscp_policy_server_check_seconds",
                                    "Time a Check call took")
    # The counts are cumulative already: each bucket counts the calls up to its bound.
    buckets = [(str(b), n) for b, n in zip(LATENCY_BUCKETS, decider.latency_counts, strict=True)]
    latency.add_metric([], buckets + [("+Inf", decider.latency_count)],
                       sum_value=decider.latency_sum)
    yield latency
    reachable = GaugeMetricFamily("dnscp_policy_server_reachable",
                                  "1 while the tenant's policy server answers", labels=["tenant"])
    for tenant in sorted(set(decider.targets) | set(decider.target_errors)):
        reachable.add_metric([tenant], 1.0 if decider.reachable(tenant)[0] else 0.0)
    yield reachable
