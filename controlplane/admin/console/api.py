"""The admin API routes the console reads besides the existing ones (all GET, read-only).

- ``/api/v1/tenants`` and ``/api/v1/tenants/{tenant}``: per tenant, its policy, the
  namespaces it selects, its status conditions, its view in short, its sidecars with
  their ACK/NACK state and traffic, its live rates with a short history, and its
  latest denied and WARN queries. One tenant per path, so an RBAC grant on
  ``/api/v1/tenants/acme`` (with ``/api/v1/views/acme/*``) shows one team its own.
  Also per tenant (``queries``): its most queried and most denied names and its answers
  by rcode over the last minute (NXDOMAIN, SERVFAIL rates), from the query log
  (telemetry/query_stats.py), each sidecar's most queried names (``by_sidecar``), and
  its tenant resolver's answers by rcode; its resolver's forwarding (``forwarding``:
  upstream latency, SERVFAIL answers, cache-hit share; telemetry/resolver_forwarding.py);
  its rates' history at two resolutions (``history``: every tick for the last few
  minutes; ``history_coarse``: means over ``coarse_seconds`` for the last hour). A sidecar whose
  counters stopped is ``stale``; one whose stream is gone is still listed (disconnected,
  stale) while its counters are held.
- ``/api/v1/querylog``: the latest logged queries of every action, filtered (tenant,
  sidecar, name, type, action, rcode, time), each with its sidecar's namespace and labels
  so the console can link it to explain.
- ``/api/v1/traffic`` and ``/api/v1/traffic/sidecars``: the sidecars' DNS counters
  (dns_traffic.py), per tenant and per sidecar.

They read what ``AdminReads`` hands in (views, streams, query log, ``DnsTraffic``);
nothing here writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException

from controlplane.admin.reads import AdminReads, ResolverStats
from controlplane.core.model import DnsPolicy
from controlplane.dns.views import DEFAULT_TENANT, TenantView, Transport
from controlplane.telemetry.querylog import QuerySearch
from controlplane.telemetry.resolver_forwarding import forwarding
from controlplane.telemetry.traffic import KINDS, DnsTraffic, Sidecar, as_dict

TRANSPORT = {Transport.UDP: "plain", Transport.TLS: "DoT", Transport.HTTPS: "DoH"}


def policy_json(policy: DnsPolicy | None, settings_default_view: str) -> dict[str, Any]:
    if policy is None:
        return {"name": None, "default_view": settings_default_view}
    server = policy.policy_server
    return {
        "name": policy.name,
        "namespace_selector": policy.namespace_selector.describe(),
        "selector": policy.selector.describe() if policy.selector else None,
        "whitelist": list(policy.whitelist),
        "blacklist": list(policy.blacklist),
        "default_action": policy.default_action.value,
        "server": policy.server_address or None,
        "protocol": (policy.upgrade_type or "dns-over-tls") if policy.upgrade else "plain",
        "policy_server": server.address if server else None,
        "generation": policy.generation,
    }


RESOLVER_RCODES = ("NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED")


def resolver_answers(stats: Mapping[str, float]) -> dict[str, float] | None:
    """The tenant resolver's answers by rcode since it started (unbound's counters);
    None without a resolver's counters."""
    if not stats:
        return None
    return {rcode: stats.get(f"num.answer.rcode.{rcode}", 0.0) for rcode in RESOLVER_RCODES}


def no_tenant(name: str, tenant_views: Mapping[str, TenantView]) -> str:
    """The 404 detail for an unknown tenant, naming the tenants there are (not the internal
    default view of the workloads outside every tenant)."""
    known = sorted(t for t in tenant_views if t != DEFAULT_TENANT)
    return f"no tenant named {name!r}; tenants: {', '.join(known) or 'none'}"


def view_summary(view: TenantView) -> dict[str, Any]:
    fwd = view.forward
    return {
        "names": len(view.entries),
        "forwarding": [str(u) for u in view.upstreams],
        "resolver_server": str(fwd.server) if fwd and fwd.server else None,
        "transport": TRANSPORT.get(fwd.transport, str(fwd.transport)) if fwd else None,
        "notes": list(view.notes),
    }


def sidecar_traffic(traffic: DnsTraffic, car: Sidecar, now: float) -> dict[str, Any]:
    return {"rates": as_dict(traffic.sidecar_rates(car, now)), "totals": as_dict(car.values),
            "last_report_seconds_ago": round(now - car.last_seen, 1), "reports": car.reports,
            "live": traffic.live(car, now)}


def gone_sidecar(traffic: DnsTraffic, car: Sidecar, now: float) -> dict[str, Any]:
    """A sidecar whose counters are still held (for ``max_age``) but whose ADS stream is
    gone: shown as disconnected and stale, with the age of its last counters."""
    return {"node_id": car.node, "namespace": car.namespace, "labels": {}, "protocol": None,
            "connected_at": None, "connected": False, "current": False, "stale": True,
            "types": {}, "traffic": sidecar_traffic(traffic, car, now)}


def points(history: Iterable[tuple[float, tuple[float, ...]]]) -> list[list[float]]:
    return [[round(t, 3), *(round(v, 3) for v in values)] for t, values in history]


def console_api(reads: AdminReads, *, clock: Callable[[], float] = time.time) -> APIRouter:
    router = APIRouter()
    store = reads.traffic if reads.traffic is not None else DnsTraffic()
    views, streams, query_log = reads.views, reads.streams, reads.query_log

    def tenant_json(name: str, view: TenantView, *, statuses: dict[str, dict[str, Any]],
                    nodes: list[dict[str, Any]], current: dict[str, bool],
                    rates: dict[str, tuple[float, ...]], totals: dict[str, tuple[float, ...]],
                    now: float, resolver_stats: ResolverStats) -> dict[str, Any]:
        inv = views.inventory
        policy = inv.policies.get(name)
        namespaces = sorted(ns for ns, obj in inv.namespaces.items()
                            if policy is not None and policy.namespace_selector.matches(
                                dict(obj.labels)))
        sidecars = []
        connected: set[str] = set()
        for node in nodes:
            if node["tenant"] != name:
                continue
            connected.add(node["node_id"] or "")
            car = store.sidecars.get(node["node_id"] or "")
            sidecars.append({
                "node_id": node["node_id"], "namespace": node["namespace"],
                "labels": node["labels"], "protocol": node["protocol"],
                "connected_at": node["connected_at"], "connected": True,
                "current": current.get(node["stream"], False),
                # counters that stopped coming (a stopped or hung Envoy, a broken sink)
                "stale": car is not None and not store.live(car, now),
                "types": {short: {"acked": t["acked_version"], "nacked": t["nacked_version"],
                                  "error": t["last_nack_error"], "sent": t["sent_version"]}
                          for short, t in node["types"].items()},
                "traffic": sidecar_traffic(store, car, now) if car is not None else None,
            })
        sidecars += [gone_sidecar(store, car, now)
                     for car in sorted(store.sidecars.values(), key=lambda c: c.node)
                     if car.tenant == name and car.node not in connected]
        status = statuses.get(name, {})
        history = store.tenants.get(name)
        return {
            "tenant": name,
            "policy": policy_json(policy, reads.settings.dns.default_view.value),
            "namespaces": namespaces,
            "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                           for c in status.get("conditions", [])],
            "view": view_summary(view),
            "sidecars": sidecars,
            "traffic": {
                "rates": as_dict(rates.get(name, (0.0,) * len(KINDS))),
                "totals": as_dict(totals.get(name, (0.0,) * len(KINDS))),
                "sidecars_reporting": sum(1 for c in store.sidecars.values()
                                          if c.tenant == name),
                "history": points(history.history if history else ()),
                # one point per ``coarse_every`` ticks (their mean), for longer ranges
                "history_coarse": points(history.coarse if history else ()),
                "coarse_seconds": store.tick * store.coarse_every,
            },
            "forwarding": forwarding(resolver_stats.get(name, {}),
                                     reads.resolver_recent(name)),
            "recent": query_log.recent(tenant=name, limit=20),
            "queries": {"logged": view.log_queries, **query_log.summary(name, now=now, n=10),
                        "resolver_answers": resolver_answers(resolver_stats.get(name, {}))},
        }

    def all_tenants(only: str | None = None) -> list[dict[str, Any]]:
        now = clock()
        tenant_views = views.tenant_views
        statuses = views.policy_statuses(pods_watched=False)
        nodes = streams.nodes()
        current = {p.workload.node_id: p.current for p in streams.proxy_states()}
        by_stream = {n["stream"]: current.get(n["node_id"] or "", False) for n in nodes}
        rates = store.tenant_rates(now=now)
        totals = store.tenant_totals(query_log.counts)
        resolver_stats = reads.resolver_stats()
        out = []
        for name in sorted(tenant_views):
            if only is not None and name != only:
                continue
            if name == DEFAULT_TENANT and only is None and not any(
                    n["tenant"] == name for n in nodes):
                continue  # the default view only when a sidecar uses it
            out.append(tenant_json(name, tenant_views[name], statuses=statuses, nodes=nodes,
                                   current=by_stream, rates=rates, totals=totals, now=now,
                                   resolver_stats=resolver_stats))
        return out

    @router.get("/api/v1/tenants", tags=["console"])
    def tenants() -> dict[str, Any]:
        """Every tenant: policy, namespaces, conditions, view, sidecars with their ACK/NACK
        state and traffic, live rates with history, recent denied and WARN queries."""
        return {"kinds": list(KINDS), "tick_seconds": store.tick, "now": round(clock(), 3),
                "stale_after_seconds": store.stale_after, "tenants": all_tenants()}

    @router.get("/api/v1/tenants/{tenant}", tags=["console"])
    def tenant(tenant: str) -> dict[str, Any]:
        """One tenant, as in ``/api/v1/tenants``."""
        found = all_tenants(only=tenant)
        if not found:
            raise HTTPException(status_code=404, detail=no_tenant(tenant, views.tenant_views))
        return {"kinds": list(KINDS), "tick_seconds": store.tick, "now": round(clock(), 3),
                "stale_after_seconds": store.stale_after, **found[0]}

    @router.get("/api/v1/querylog", tags=["console"])
    def querylog(tenant: str = "", node: str = "", name: str = "", type: str = "",
                 action: str = "", rcode: str = "", since: float = 0.0, until: float = 0.0,
                 limit: int = 200) -> dict[str, Any]:
        """The latest logged queries of every action (allowed too), newest first, filtered:
        ``tenant``, ``node`` (the sidecar), ``name`` (a substring), ``type``, ``action``
        (allow, warn, deny), ``rcode``, ``since``/``until`` (Unix seconds). Each record
        has its sidecar's namespace and pod labels when known (to explain it). Kept: the
        last 1000 queries per tenant, and the WARN and denied ones of the query log before
        those; only the tenants whose policy logs queries (a blacklist, or a default
        action other than ALLOW)."""
        if action not in ("", "allow", "warn", "deny"):
            raise HTTPException(status_code=422, detail="action is allow, warn or deny")
        search = QuerySearch(tenant=tenant, node=node, name=name, type=type, action=action,
                             rcode=rcode, since=since, until=until)
        records = query_log.search(search, limit=max(1, min(limit, 1000)))
        where = {n["node_id"]: (n["namespace"], n["labels"]) for n in streams.nodes()
                 if n["node_id"]}
        for r in records:
            car = store.sidecars.get(r["node"])
            namespace, labels = where.get(r["node"], (car.namespace if car else None, None))
            r["namespace"], r["labels"] = namespace, labels
        return {"filters": {k: v for k, v in asdict(search).items() if v}, "records": records,
                "tenants_logged": sorted(t for t, v in views.tenant_views.items()
                                         if v.log_queries)}

    @router.get("/api/v1/traffic", tags=["traffic"])
    def traffic_summary(tenant: str | None = None, history: bool = False) -> dict[str, Any]:
        """Per tenant DNS rates (per second, over the sidecars' last two reports) and
        totals, from the counters the sidecars stream (denied and WARN: the query log)."""
        now = clock()
        rates = store.tenant_rates(now=now)
        totals = store.tenant_totals(query_log.counts)
        reporting = store.tenant_sidecars()
        names = sorted(set(rates) | set(totals) | (set(views.tenant_views) - {DEFAULT_TENANT}))
        out = []
        for name in names:
            if tenant is not None and name != tenant:
                continue
            item: dict[str, Any] = {
                "tenant": name, "sidecars_reporting": reporting.get(name, 0),
                "rates": as_dict(rates.get(name, (0.0,) * len(KINDS))),
                "totals": as_dict(totals.get(name, (0.0,) * len(KINDS)))}
            if history:
                t = store.tenants.get(name)
                item["history"] = points(t.history if t else ())
                item["history_coarse"] = points(t.coarse if t else ())
            out.append(item)
        return {"kinds": list(KINDS), "stale_after_seconds": store.stale_after,
                "max_age_seconds": store.max_age, "reports": dict(store.reports),
                "aged_out": store.aged_out, "tenants": out}

    @router.get("/api/v1/traffic/sidecars", tags=["traffic"])
    def traffic_sidecars(tenant: str | None = None) -> dict[str, Any]:
        """Per sidecar: its tenant, rates, totals since its Envoy started, last report."""
        now = clock()
        return {"kinds": list(KINDS), "sidecars": [
            {"node_id": car.node, "tenant": car.tenant, "namespace": car.namespace,
             **sidecar_traffic(store, car, now)}
            for car in sorted(store.sidecars.values(), key=lambda c: c.node)
            if tenant is None or car.tenant == tenant]}

    return router
