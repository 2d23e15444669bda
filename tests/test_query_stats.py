"""The query log's per-tenant sums (telemetry/query_stats.py): top names within bounded
memory, answers by rcode over the last minute, the latest queries of every action; and
the query-log view's search and its route (GET /api/v1/querylog)."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import httpx

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.telemetry.query_stats import QueryStats, RcodeWindow, TopNames
from controlplane.telemetry.querylog import QueryLog, QueryRecord, QuerySearch
from tests.factories import connect, inventory, node


def record(name: str, *, t: float = 100.0, action: str = "allow", rcode: str = "NOERROR",
           tenant: str = "acme", node: str = "n1", qtype: str = "A") -> QueryRecord:
    return QueryRecord(time=t, tenant=tenant, node=node, name=name, type=qtype, rcode=rcode,
                       action=action, rule="r")


def test_top_names_rank_by_count_and_stay_bounded() -> None:
    top = TopNames(keep=3)
    for name, times in (("a", 5), ("b", 4), ("c", 3), ("d", 1)):
        for _ in range(times):
            top.add(name)
    assert top.top(2) == [("a", 5), ("b", 4)]
    for i in range(10):  # a flood of names seen once: the heavy ones stay, memory holds
        top.add(f"x{i}")
        assert len(top.counts) <= 6
    assert top.top(3) == [("a", 5), ("b", 4), ("c", 3)]
    assert top.pruned > 0


def test_rcode_window_counts_the_last_minute() -> None:
    window = RcodeWindow(window=60)
    window.add("NXDOMAIN", now=100.0)
    window.add("NXDOMAIN", now=100.5)
    window.add("SERVFAIL", now=110.0)
    early = window.summary(now=120.0)
    assert early["counts"] == {"NXDOMAIN": 2, "SERVFAIL": 1}
    assert early["rates"] == {"NXDOMAIN": 0.1, "SERVFAIL": 0.05}  # over the 20 s since
    assert window.summary(now=165.0)["counts"] == {"SERVFAIL": 1}  # 100 s has left
    assert window.summary(now=200.0)["counts"] == {}
    assert len(window.buckets) == 0


def test_stats_per_tenant() -> None:
    stats = QueryStats(keep_names=10, recent=3)
    for r in (record("a.x"), record("a.x"), record("b.x", action="deny", rcode="NXDOMAIN"),
              record("c.x", tenant="globex"), record("A.X.")):
        stats.add(r)
    acme = stats.summary("acme", now=100.0)
    assert acme["queried"] == [{"name": "a.x", "count": 3}, {"name": "b.x", "count": 1}]
    assert acme["denied"] == [{"name": "b.x", "count": 1}]
    assert acme["answers"]["counts"] == {"NOERROR": 3, "NXDOMAIN": 1}
    assert len(stats.tenants["acme"].recent) == 3  # the ring's size
    stats.forget({"acme"})
    assert set(stats.tenants) == {"acme"}
    assert stats.summary("nope", now=1.0)["queried"] == []


def test_search_filters_every_field() -> None:
    s = QuerySearch(tenant="acme", node="n1", name="EXAMPLE", type="a", action="deny",
                    rcode="nxdomain", since=50, until=150)
    hit = record("www.example.com", action="deny", rcode="NXDOMAIN")
    assert s.matches(hit)
    for miss in (record("www.example.com", action="deny", rcode="NXDOMAIN", node="n2"),
                 record("other.org", action="deny", rcode="NXDOMAIN"),
                 record("www.example.com", action="deny", rcode="NXDOMAIN", qtype="AAAA"),
                 record("www.example.com", action="warn", rcode="NXDOMAIN"),
                 record("www.example.com", action="deny", rcode="NOERROR"),
                 record("www.example.com", action="deny", rcode="NXDOMAIN", t=10),
                 record("www.example.com", action="deny", rcode="NXDOMAIN", t=200)):
        assert not s.matches(miss), miss


def hub_with_queries() -> Hub:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    connect(hub, node("acme-1", "acme", LABELS={"app": "sleep"}))
    log = hub.query_log
    for body in ("web.acme.svc.cluster.local. 1 0", "web.acme.svc.cluster.local. 28 0",
                 "web.foo.svc.cluster.local. 1 3", "web.foo.svc.cluster.local. 1 3",
                 "nope.example.org. 1 3"):
        log.ingest(tenant="acme", node="acme-1", body=body)
    return hub


def get(app: Any, path: str) -> httpx.Response:
    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://admin") as c:
            return await c.get(path)
    return asyncio.run(run())


def test_querylog_route_filters_and_says_where_each_query_came_from() -> None:
    hub = hub_with_queries()
    app = create_app(AdminReads.of_hub(hub))
    body = get(app, "/api/v1/querylog?tenant=acme").json()
    assert [(r["name"], r["action"]) for r in body["records"]] == [
        ("nope.example.org", "deny"), ("web.foo.svc.cluster.local", "deny"),
        ("web.foo.svc.cluster.local", "deny"), ("web.acme.svc.cluster.local", "allow"),
        ("web.acme.svc.cluster.local", "allow")]  # newest first, allowed too
    first = body["records"][0]
    assert (first["namespace"], first["labels"]) == ("acme", {"app": "sleep"})  # to explain
    assert "acme" in body["tenants_logged"]
    deny = get(app, "/api/v1/querylog?tenant=acme&action=deny&name=foo").json()["records"]
    assert len(deny) == 2 and {r["rcode"] for r in deny} == {"NXDOMAIN"}
    aaaa = get(app, "/api/v1/querylog?type=AAAA").json()["records"]
    assert [(r["name"], r["type"]) for r in aaaa] == [("web.acme.svc.cluster.local", "AAAA")]
    times = sorted(r["time"] for r in body["records"])
    window = get(app, f"/api/v1/querylog?since={times[1]}&until={times[2]}").json()["records"]
    assert sorted(r["time"] for r in window) == times[1:3]
    assert get(app, "/api/v1/querylog?node=other").json()["records"] == []
    assert get(app, "/api/v1/querylog?action=maybe").status_code == 422


def test_tenants_route_ranks_names_and_counts_answers() -> None:
    hub = hub_with_queries()
    app = create_app(AdminReads.of_hub(hub))
    queries = get(app, "/api/v1/tenants/acme").json()["queries"]
    assert queries["logged"] is True
    assert queries["queried"][0] == {"name": "web.acme.svc.cluster.local", "count": 2}
    assert queries["denied"] == [{"name": "web.foo.svc.cluster.local", "count": 2},
                                 {"name": "nope.example.org", "count": 1}]
    assert queries["answers"]["window_seconds"] == 60
    assert queries["resolver_answers"] is None  # no tenant resolver's counters here


def test_the_warn_and_deny_history_reaches_past_the_ring() -> None:
    """A tenant's ring of every action is short; its denied queries before it still show."""
    log = QueryLog(dict, stats=QueryStats(recent=2))
    log.records["acme"] = collections.deque([record("old.x", t=1, action="deny")])
    for i in range(3):
        log.stats.add(record(f"new{i}.x", t=10 + i))
    names = [r["name"] for r in log.search(QuerySearch(tenant="acme"))]
    assert names == ["new2.x", "new1.x", "old.x"]
    assert [r["name"] for r in log.search(QuerySearch(tenant="acme", action="allow"))] == [
        "new2.x", "new1.x"]
