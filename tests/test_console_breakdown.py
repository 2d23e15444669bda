"""Issue 22's last pieces, pure: a tenant resolver's forwarding from unbound's counters
(telemetry/resolver_forwarding.py), the per-sidecar top names of the query log's sums
(bounded), the traffic history's coarse points for the chart's longer ranges, and the
three served by GET /api/v1/tenants/{tenant}."""

from __future__ import annotations

import asyncio
import time

import httpx

from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.telemetry.query_stats import QueryStats
from controlplane.telemetry.querylog import QueryRecord
from controlplane.telemetry.resolver_forwarding import ForwardingWindow, forwarding
from controlplane.telemetry.traffic import KINDS, DnsTraffic, Report
from tests.factories import connect, inventory, node

# as ``unbound-control stats_noreset`` prints them (a resolver that forwarded 4 of 10)
UNBOUND = {"total.num.queries": 10.0, "total.num.cachehits": 6.0,
           "total.num.cachemiss": 4.0, "total.num.recursivereplies": 4.0,
           "total.recursion.time.avg": 0.012345, "total.recursion.time.median": 0.008,
           "num.answer.rcode.SERVFAIL": 1.0, "num.answer.rcode.NOERROR": 9.0,
           "num.query.udpout": 3.0, "num.query.tcpout": 1.0}


def record(name: str, node: str, *, tenant: str = "acme") -> QueryRecord:
    return QueryRecord(time=100.0, tenant=tenant, node=node, name=name, type="A",
                       rcode="NOERROR", action="allow", rule="r")


def test_forwarding_from_unbounds_counters() -> None:
    f = forwarding(UNBOUND)
    assert f is not None
    assert f["latency_ms"] == {"avg": 12.345, "median": 8.0}
    assert (f["queries"], f["cache_hits"], f["cache_misses"]) == (10, 6, 4)
    assert f["cache_hit_share"] == 0.6
    assert (f["upstream_errors"], f["upstream_error_share"]) == (1, 0.1)
    assert f["upstream_sent"] == {"udp": 3, "tcp": 1} and f["upstream_answers"] == 4


def test_forwarding_without_counters_or_upstream_answers() -> None:
    assert forwarding({}) is None
    fresh = forwarding({"total.num.queries": 0.0})
    assert fresh is not None
    assert fresh["latency_ms"] is None and fresh["cache_hit_share"] is None
    cached = forwarding({"total.num.queries": 2.0, "total.num.cachehits": 2.0})
    assert cached is not None and cached["latency_ms"] is None  # nothing asked upstream
    assert cached["cache_hit_share"] == 1.0


def test_the_last_minute_of_a_resolvers_forwarding() -> None:
    """Slow answers long ago, fast ones in the last minute: the minute's average is the
    fast one, while the since-start average still carries the slow ones."""
    window = ForwardingWindow()
    assert window.recent("acme", 0.0) is None
    slow = {"total.num.queries": 100.0, "total.num.cachehits": 0.0,
            "total.num.recursivereplies": 100.0, "total.recursion.time.avg": 0.5,
            "num.answer.rcode.SERVFAIL": 10.0}
    window.observe(0.0, {"acme": slow})
    assert window.recent("acme", 0.0) is None  # one sample: no difference yet
    for t in range(1, 200):  # once a second; the 100 slow answers came before t=1
        n = 100.0 + 10 * t  # 10 more each second, each taking 20 ms, 1 in 10 cached
        avg = (100 * 0.5 + 10 * t * 0.02) / n
        window.observe(float(t), {"acme": {
            "total.num.queries": n + t, "total.num.cachehits": float(t),
            "total.num.recursivereplies": n, "total.recursion.time.avg": avg,
            "num.answer.rcode.SERVFAIL": 10.0}})
    recent = window.recent("acme", 199.0)
    assert recent is not None
    assert recent["seconds"] == 60.0
    assert recent["upstream_answers"] == 600 and recent["queries"] == 660
    assert recent["latency_avg_ms"] == 20.0  # the slow ones are past the window
    assert recent["upstream_errors"] == 0
    assert recent["cache_hit_share"] == round(60 / 660, 4)
    since_start = forwarding({"total.num.queries": 2089.0,
                              "total.recursion.time.avg": avg,
                              "total.num.recursivereplies": 2090.0}, recent)
    assert since_start is not None and since_start["last_minute"] == recent
    assert since_start["latency_ms"]["avg"] > 30  # the slow ones are still in it


def test_a_restarted_resolver_starts_its_window_anew() -> None:
    window = ForwardingWindow()
    for t, n in ((0.0, 500.0), (1.0, 510.0), (2.0, 3.0), (3.0, 8.0)):  # restarted at 2
        window.observe(t, {"acme": {"total.num.queries": n,
                                    "total.num.recursivereplies": n}})
    recent = window.recent("acme", 3.0)
    assert recent is not None and recent["queries"] == 5  # never 3 - 510
    window.observe(4.0, {})  # its resolver is gone
    assert window.recent("acme", 4.0) is None
    bounded = ForwardingWindow(max_samples=61)
    for t in range(1000):
        bounded.observe(float(t), {"acme": {"total.num.queries": float(t)}})
    assert len(bounded._samples["acme"]) == 61


def test_top_names_per_sidecar() -> None:
    stats = QueryStats()
    for name, car, times in (("a.example", "n1", 3), ("b.example", "n1", 1),
                             ("c.example", "n2", 2)):
        for _ in range(times):
            stats.add(record(name, car))
    stats.add(record("x.example", "n9", tenant="other"))
    by = stats.summary("acme", now=100.0)["by_sidecar"]
    assert by == {"n1": [{"name": "a.example", "count": 3}, {"name": "b.example", "count": 1}],
                  "n2": [{"name": "c.example", "count": 2}]}
    assert stats.summary("nobody", now=100.0)["by_sidecar"] == {}


def test_per_sidecar_names_are_bounded() -> None:
    stats = QueryStats(nodes=3, node_names=2)
    for i in range(5):
        stats.add(record("a.example", f"n{i}"))
    stats.add(record("a.example", "n2"))  # heard from again: kept over n3
    stats.add(record("a.example", "n5"))
    assert list(stats.tenants["acme"].nodes) == ["n4", "n2", "n5"]
    for i in range(20):  # one sidecar asking many names: at most 2 * node_names held
        stats.add(record(f"x{i}.example", "n5"))
        assert len(stats.tenants["acme"].nodes["n5"].counts) <= 4


def test_coarse_history_is_the_mean_of_its_ticks_and_bounded() -> None:
    traffic = DnsTraffic(history=4, coarse=2, coarse_every=3)
    queries = 0.0
    for tick in range(10):
        queries += 10.0 * (tick + 1)  # rates 10, 20, 30 ... per second
        traffic.report(Report("n1", "acme", "acme", 100.0 + tick, queries=queries),
                       now=100.0 + tick)
        traffic.sample(now=100.0 + tick)
    t = traffic.tenants["acme"]
    assert len(t.history) == 4  # the last 4 ticks
    assert [p[0] for p in t.coarse] == [105.0, 108.0]  # 2 kept of 3, each every 3 ticks
    # ticks 103-105 had rates 40, 50, 60 (the first tick has none: one report)
    assert t.coarse[0][1][KINDS.index("queries")] == 50.0
    assert t.coarse[1][1][KINDS.index("queries")] == 80.0


def test_tenant_route_serves_forwarding_sidecars_and_both_histories() -> None:
    hub = Hub(Settings())
    hub.set_inventory(inventory())
    connect(hub, node("acme-1", "acme", LABELS={"app": "sleep"}))
    hub.query_log.ingest(tenant="acme", node="acme-1", body="web.foo.svc.cluster.local. 1 3")
    traffic = DnsTraffic()
    now = time.time()
    traffic.report(Report("acme-1", "acme", "acme", 100.0, queries=5.0), now=now)
    traffic.sample(now=now)
    app = create_app(AdminReads.of_hub(hub, traffic=traffic,
                                       resolver_stats=lambda: {"acme": UNBOUND}))

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://admin") as c:
            return await c.get("/api/v1/tenants/acme")
    body = asyncio.run(get()).json()
    assert body["forwarding"]["latency_ms"] == {"avg": 12.345, "median": 8.0}
    assert body["forwarding"]["upstream_errors"] == 1
    assert body["queries"]["by_sidecar"] == {
        "acme-1": [{"name": "web.foo.svc.cluster.local", "count": 1}]}
    assert body["traffic"]["coarse_seconds"] == 30.0
    assert len(body["traffic"]["history"]) == 1 and body["traffic"]["history_coarse"] == []
