"""The sidecars' streamed DNS counters: the pure store (dns_traffic.py) by tables, the
parser and the gRPC driver (stats_sink.py) with a scripted Envoy on a real gRPC server,
the bootstrap's sink, and the memory of 1,000 sidecars."""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from controlplane.core.errors import Unauthenticated
from controlplane.core.model import Workload
from controlplane.identity.auth import Identity
from controlplane.injection.bootstrap import (
    METRICS_SINK,
    SIDECAR_STATS,
    XDS_CLUSTER,
    bootstrap_config,
)
from controlplane.telemetry import metrics_protos
from controlplane.telemetry.stats_sink import (
    METRICS_SERVICE,
    MetricsSink,
    NodeDirectory,
    TrafficCollector,
    add_metrics_service,
    parse,
)
from controlplane.telemetry.traffic import KINDS, DnsTraffic, Report, as_dict


def rep(node: str = "n1", tenant: str = "acme", t: float = 0.0, q: float = 0.0,
        fwd: float = 0.0, nx: float = 0.0) -> Report:
    return Report(node=node, tenant=tenant, namespace=tenant, envoy_time=t, queries=q,
                  forwarded=fwd, nxdomain=nx)


# (reports as (now, Report), expected sidecar rates of n1, expected acme totals)
CASES: list[tuple[str, list[tuple[float, Report]], dict[str, float], dict[str, float]]] = [
    ("first report counts in full, no rate yet",
     [(100, rep(t=100, q=7, fwd=2, nx=1))],
     {"queries": 0}, {"queries": 7, "local": 5, "forwarded": 2, "nxdomain": 1}),
    ("rate from two reports over Envoy's timestamps",
     [(100, rep(t=100, q=10)), (105.3, rep(t=105, q=60, fwd=5))],
     {"queries": 10, "local": 9, "forwarded": 1}, {"queries": 60, "local": 55, "forwarded": 5}),
    ("no Envoy timestamp: the control plane's clock",
     [(100, rep(q=0)), (102, rep(q=8, nx=2))],
     {"queries": 4, "nxdomain": 1}, {"queries": 8, "nxdomain": 2}),
    ("an Envoy restart keeps what it had counted; rates start again",
     [(100, rep(t=100, q=50)), (105, rep(t=105, q=60)), (110, rep(t=2, q=3))],
     {"queries": 0}, {"queries": 63}),
    ("after a restart, the next report has a rate again",
     [(100, rep(t=100, q=50)), (110, rep(t=2, q=3)), (115, rep(t=7, q=13))],
     {"queries": 2}, {"queries": 63}),
]


@pytest.mark.parametrize(("reports", "rates", "totals"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_rates_and_totals(reports: list[tuple[float, Report]], rates: dict[str, float],
                          totals: dict[str, float]) -> None:
    traffic = DnsTraffic()
    for now, r in reports:
        assert traffic.report(r, now=now) == "accepted"
    now = reports[-1][0]
    got = as_dict(traffic.sidecar_rates(traffic.sidecars["n1"], now))
    assert {k: got[k] for k in rates} == pytest.approx(rates, abs=0.01)
    tot = as_dict(traffic.tenant_totals()["acme"])
    assert {k: tot[k] for k in totals} == totals


def test_tenant_rates_sum_live_sidecars_and_stale_ones_stop_counting() -> None:
    traffic = DnsTraffic(stale_after=15, max_age=60)
    for node, q in (("a", 10), ("b", 20)):
        traffic.report(rep(node, t=100, q=0), now=100)
        traffic.report(rep(node, t=105, q=q * 5), now=105)
    traffic.report(rep("c", "foo", t=100, q=0), now=100)
    assert traffic.tenant_rates(now=106)["acme"][0] == pytest.approx(30)
    traffic.report(rep("a", t=120, q=50), now=120)  # a keeps reporting, b went quiet
    assert traffic.tenant_rates(now=121)["acme"][0] == pytest.approx(0)  # a: 0 q/s; b: stale
    assert traffic.tenant_rates(now=119)["acme"][0] == pytest.approx(20)


def test_silent_sidecars_age_out_and_their_counts_stay_in_the_tenant_total() -> None:
    traffic = DnsTraffic(max_age=60)
    traffic.report(rep("a", t=1, q=40), now=100)
    traffic.report(rep("b", t=1, q=2), now=150)
    assert traffic.expire(now=161, tenants=["acme"]) == 1
    assert set(traffic.sidecars) == {"b"} and traffic.aged_out == 1
    assert traffic.tenant_totals()["acme"][0] == 42
    # a tenant whose policy is gone and whose sidecars aged out is forgotten
    traffic.report(rep("x", "gone", t=1, q=1), now=100)
    traffic.expire(now=170, tenants=["acme"])
    assert "gone" not in traffic.tenants and "gone" not in traffic.tenant_totals()


def test_a_sidecar_moved_to_another_tenant_starts_there() -> None:
    traffic = DnsTraffic()
    traffic.report(rep("a", "acme", t=1, q=5), now=1)
    traffic.report(rep("a", "foo", t=2, q=1), now=2)
    totals = traffic.tenant_totals()
    assert totals["acme"][0] == 5 and totals["foo"][0] == 1


def test_denied_and_warn_per_sidecar_from_the_query_log() -> None:
    traffic = DnsTraffic()
    traffic.report(rep("a", t=100, q=0), now=100)
    for action in ("deny", "deny", "warn", "allow"):
        traffic.query_record(node="a", action=action, tenant="acme")
    traffic.report(rep("a", t=102, q=4), now=102)
    rates = as_dict(traffic.sidecar_rates(traffic.sidecars["a"], 102))
    assert (rates["denied"], rates["warn"]) == (1.0, 0.5)
    totals = traffic.tenant_totals({("acme", "deny"): 9, ("acme", "warn"): 3,
                                    ("acme", "allow"): 50, ("unknown", "rejected"): 4})
    assert as_dict(totals["acme"])["denied"] == 9 and as_dict(totals["acme"])["warn"] == 3
    assert "unknown" not in totals


def test_history_is_one_point_per_tick_and_bounded() -> None:
    traffic = DnsTraffic(history=5)
    traffic.report(rep(t=0, q=0), now=0)
    for i in range(1, 9):
        traffic.report(rep(t=i, q=3 * i), now=i)
        traffic.sample(now=i)
    history = traffic.tenants["acme"].history
    assert len(history) == 5 and [t for t, _ in history] == [4, 5, 6, 7, 8]
    assert all(v[0] == pytest.approx(3) for _, v in history)


def test_more_sidecars_than_the_cap_are_refused() -> None:
    traffic = DnsTraffic(max_sidecars=3)
    outcomes = [traffic.report(rep(f"n{i}", t=1, q=1), now=1) for i in range(5)]
    assert outcomes == ["accepted"] * 3 + ["overflow"] * 2
    assert traffic.reports["overflow"] == 2 and len(traffic.sidecars) == 3
    # The cap is per tenant: acme's flood leaves room for foo's sidecars.
    assert traffic.report(rep("f1", "foo", t=1, q=1), now=1) == "accepted"
    assert traffic.refused["acme"]["n4"] == {"overflow": 1}


# -- the wire: what Envoy sends, parsed --------------------------------------------------

def envoy_message(node: str | None, counters: dict[str, float], *, ts_ms: int = 5_000,
                  histograms: bool = True) -> Any:
    """A StreamMetricsMessage as Envoy 1.40's metrics service sink builds it."""
    msg = metrics_protos.StreamMetricsMessage()
    if node is not None:
        msg.identifier.node.id = node
    for name, value in counters.items():
        family = msg.envoy_metrics.add(name=name, type=metrics_protos.COUNTER)
        metric = family.metric.add(timestamp_ms=ts_ms)
        metric.counter.value = value
    gauge = msg.envoy_metrics.add(name="control_plane.connected_state", type=metrics_protos.GAUGE)
    gauge.metric.add(timestamp_ms=ts_ms).gauge.value = 1
    if histograms:  # summaries (type 2) are skipped by name and type
        msg.envoy_metrics.add(name="dns_filter.tenant.acme.downstream_rx_bytes", type=2)
    return msg


def test_parse_reads_only_the_nodes_tenant() -> None:
    msg = envoy_message("n1", {
        "dns_filter.tenant.acme.downstream_rx_queries": 12,
        "dns_filter.tenant.acme.externally_resolved_queries": 4,
        "dns_filter.tenant.acme.unanswered_queries": 3,
        "dns_filter.tenant.acme.local_a_record_answers": 9,  # records, not queries
        "dns_filter.tenant.foo.downstream_rx_queries": 1000,  # another tenant's
        "listener_manager.lds.update_success": 3,
    })
    decoded = metrics_protos.StreamMetricsMessage.FromString(msg.SerializeToString())
    report, foreign, problem = parse(decoded, node="n1", tenant="acme", namespace="acme")
    assert (report.queries, report.forwarded, report.nxdomain) == (12, 4, 3)
    assert report.envoy_time == 5.0 and foreign == 1 and problem is None


def test_parse_keeps_dotted_tenant_names_apart() -> None:
    msg = envoy_message("n", {"dns_filter.tenant.a.b.downstream_rx_queries": 5,
                              "dns_filter.tenant.a.downstream_rx_queries": 7})
    report, foreign, _ = parse(msg, node="n", tenant="a.b", namespace="x")
    assert report.queries == 5 and foreign == 1


class Conn:
    def __init__(self, node: str, tenant: str, namespace: str) -> None:
        self.workload = Workload(node_id=node, namespace=namespace)
        self.view_key = type("Key", (), {"tenant": tenant})()


class Tokens:
    """Scripted authenticator: 'good' speaks for namespace acme."""

    async def identify(self, metadata: Any) -> Identity:
        if ("authorization", "Bearer good") in metadata:
            return Identity("acme-sidecars", "acme")
        raise Unauthenticated("unknown token")


def test_grpc_stream_from_a_scripted_envoy() -> None:
    asyncio.run(_grpc_stream())


async def _grpc_stream() -> None:
    conns = [Conn("sleep.acme", "acme", "acme"), Conn("sleep.foo", "foo", "foo")]
    traffic = DnsTraffic()
    clock = iter(range(100, 1000))
    sink = MetricsSink(traffic, NodeDirectory(lambda: conns), authenticator=Tokens(),
                       clock=lambda: float(next(clock)))
    server = grpc.aio.server()
    add_metrics_service(server, sink)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary(
                f"/{METRICS_SERVICE}/StreamMetrics",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=metrics_protos.StreamMetricsResponse.FromString)

            async def send(messages: list[Any], token: str) -> grpc.StatusCode:
                async def gen() -> Any:
                    for m in messages:
                        yield m
                try:
                    await call(gen(), metadata=(("authorization", f"Bearer {token}"),))
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            acme = "dns_filter.tenant.acme."
            # Envoy names the node in the first message only.
            assert await send([
                envoy_message("sleep.acme", {acme + "downstream_rx_queries": 3}, ts_ms=1000),
                envoy_message(None, {acme + "downstream_rx_queries": 13,
                                     acme + "externally_resolved_queries": 2}, ts_ms=6000),
            ], "good") == grpc.StatusCode.OK
            # a token for acme cannot report as foo's sidecar; a bad token is refused
            assert await send([envoy_message("sleep.foo", {
                "dns_filter.tenant.foo.downstream_rx_queries": 99})], "good") == \
                grpc.StatusCode.PERMISSION_DENIED
            assert await send([envoy_message("sleep.acme", {})], "bad") == \
                grpc.StatusCode.UNAUTHENTICATED
            # a node of acme's without an ADS stream is not counted
            assert await send([envoy_message("ghost.acme", {acme + "downstream_rx_queries": 5})],
                              "good") == grpc.StatusCode.OK
    finally:
        await server.stop(0)
    car = traffic.sidecars["sleep.acme"]
    assert as_dict(car.values)["queries"] == 13 and as_dict(car.values)["forwarded"] == 2
    assert as_dict(car.rates or ())["queries"] == pytest.approx(2.0)  # 10 over 5 s
    assert "sleep.foo" not in traffic.sidecars
    assert traffic.reports == {"accepted": 2, "wrong_node": 1, "unauthenticated": 1,
                               "unknown_node": 1}
    assert traffic.refused[""] == {"sleep.foo": {"wrong_node": 1},
                                   "ghost.acme": {"unknown_node": 1}}


def test_metrics_exposition() -> None:
    traffic = DnsTraffic()
    traffic.report(rep("a", t=100, q=10, fwd=4, nx=1), now=100)
    traffic.report(rep("a", t=105, q=20, fwd=4, nx=1), now=105)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrafficCollector(traffic, clock=lambda: 106.0))
    text = generate_latest(registry).decode()
    for line in ('dnscp_dns_queries_total{tenant="acme"} 20.0',
                 'dnscp_dns_local_total{tenant="acme"} 16.0',
                 'dnscp_dns_forwarded_total{tenant="acme"} 4.0',
                 'dnscp_dns_nxdomain_total{tenant="acme"} 1.0',
                 'dnscp_dns_rate{kind="queries",tenant="acme"} 2.0',
                 'dnscp_sidecar_dns_query_rate{node="a",tenant="acme"} 2.0',
                 'dnscp_stats_sidecars{tenant="acme"} 1.0',
                 'dnscp_stats_reports_total{outcome="accepted"} 2.0'):
        assert line in text, line


# -- the bootstrap --------------------------------------------------------------------------

def test_bootstrap_streams_dns_counters_over_the_xds_cluster_with_the_ads_token() -> None:
    config = bootstrap_config(node_id="n", namespace="acme", labels={}, token="t0k",
                              stats_flush_interval="2s")
    (sink,) = config["stats_sinks"]
    assert sink["name"] == METRICS_SINK
    grpc_service = sink["typed_config"]["grpc_service"]
    assert grpc_service == {"envoy_grpc": {"cluster_name": XDS_CLUSTER},
                            "initial_metadata": [{"key": "authorization",
                                                  "value": "Bearer t0k"}]}
    patterns = config["stats_config"]["stats_matcher"]["inclusion_list"]["patterns"]
    assert patterns == [dict(p) for p in SIDECAR_STATS] and patterns[0] == {
        "prefix": "dns_filter."}
    assert config["stats_flush_interval"] == "2s"
    off = bootstrap_config(node_id="n", namespace="acme", labels={}, stats_sink=False)
    assert "stats_sinks" not in off and "stats_matcher" not in off["stats_config"]


# -- memory -----------------------------------------------------------------------------------

def test_memory_of_1000_sidecars_is_bounded() -> None:
    """1,000 sidecars of 20 tenants reporting for 10 minutes (a report each 5 s, a history
    point each 2 s), then 1,000 new ones replacing them: the store stays flat."""
    traffic = DnsTraffic()
    tenants = [f"t{i}" for i in range(20)]

    def run(prefix: str, start: float, seconds: int) -> None:
        for step in range(0, seconds, 5):
            now = start + step
            for i in range(1000):
                traffic.report(rep(f"{prefix}{i}", tenants[i % 20], t=now, q=step * 7,
                                   fwd=step, nx=step / 5), now=now)
                if i % 10 == 0:
                    traffic.query_record(node=f"{prefix}{i}", action="deny",
                                         tenant=tenants[i % 20])
            traffic.sample(now=now)
            traffic.expire(now=now, tenants=tenants)

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    run("a-", 0, 600)
    gc.collect()
    first = tracemalloc.get_traced_memory()[0]
    run("b-", 700, 600)  # a new fleet: the old one ages out
    gc.collect()
    second, peak = tracemalloc.get_traced_memory()
    used = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(base, "filename"))
    tracemalloc.stop()
    print(f"\n1,000 sidecars: {first / 1e6:.2f} MB after 10 min, {second / 1e6:.2f} MB "
          f"after a second fleet replaced them (peak {peak / 1e6:.2f} MB, net {used / 1e6:.2f})")
    assert len(traffic.sidecars) == 1000 and traffic.aged_out == 1000
    assert first < 3e6 and second < first * 1.2
    assert sum(len(t.history) for t in traffic.tenants.values()) == 20 * 150
    assert len(KINDS) == 6
