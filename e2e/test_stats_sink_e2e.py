"""Real Envoys stream their DNS counters to the control plane (metrics service sink):
exact per-tenant counts for the queries sent, rates under load, age-out of a stopped
sidecar, and only the stats of bootstrap.SIDECAR_STATS on the sidecar."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from controlplane._kit.localrun import ControlPlane, DnsLoad, Dnsmasq, http_text, wait_for
from controlplane.injection.bootstrap import SIDECAR_STATS
from e2e.harness.dnsquery import query
from e2e.harness.examples import point_globex_at
from e2e.harness.sidecars import FastFlushEnvoy


def start_sidecars(cp: ControlPlane, tmp_path: Path, processes: list[Any],
                   tenants: tuple[str, ...] = ("acme", "foo", "globex")
                   ) -> dict[str, FastFlushEnvoy]:
    envoys = {}
    for tenant in tenants:
        envoy = FastFlushEnvoy(node_id=f"sleep.{tenant}", namespace=tenant,
                               labels={"app": "sleep"}, xds_address=cp.xds_address,
                               workdir=tmp_path)
        processes.append(envoy)
        envoys[tenant] = envoy.start()
    return envoys


# tenant -> (name, type, how many times); the expected counts below follow from
# examples/ (acme, foo: DENY with a whitelist, no forwarding; globex: WARN, forwarding,
# blacklist *.tracker.example enforced by its tenant resolver).
QUERIES = {
    "acme": [("httpbin.acme.com", 5), ("httpbin.acme.svc.cluster.local", 2),
             ("httpbin.foo.com", 3)],
    "foo": [("httpbin.foo.com", 4)],
    "globex": [("api.globex.svc.cluster.local", 2), ("www.example.com", 3),
               ("x.ads.tracker.example", 2)],
}
EXPECTED = {
    "acme": {"queries": 10, "local": 10, "forwarded": 0, "nxdomain": 3, "denied": 3, "warn": 0},
    "foo": {"queries": 4, "local": 4, "forwarded": 0, "nxdomain": 0, "denied": 0, "warn": 0},
    "globex": {"queries": 7, "local": 2, "forwarded": 5, "nxdomain": 2, "denied": 2, "warn": 3},
}


def totals(cp: ControlPlane) -> dict[str, dict[str, int]]:
    return {t["tenant"]: {k: int(v) for k, v in t["totals"].items()}
            for t in cp.get("/api/v1/traffic")["tenants"]}


def test_per_tenant_counts_match_the_queries_sent_exactly(
        manifests: Path, tmp_path: Path, processes: list[Any],
        start_control_plane: Callable[..., ControlPlane],
        start_dnsmasq: Callable[..., Dnsmasq]) -> None:
    upstream = start_dnsmasq({"www.example.com": "203.0.113.10",
                              "ads.tracker.example": "203.0.113.66"})
    point_globex_at(manifests, upstream)
    cp = start_control_plane(manifests)
    envoys = start_sidecars(cp, tmp_path, processes)
    for tenant, cases in QUERIES.items():
        for name, times in cases:
            for _ in range(times):
                query(envoys[tenant].dns_port, name, timeout=3.0)

    def arrived() -> dict[str, dict[str, int]] | None:
        got = {t: v for t, v in totals(cp).items() if t in EXPECTED}
        return got if got == EXPECTED else None

    got = wait_for(arrived, timeout=30, interval=0.5,
                   what=f"per-tenant counts {EXPECTED} (last: {totals(cp)})")
    print(f"\nper-tenant counts from the sidecars' streamed counters: {got}")
    # The same numbers as each Envoy's own counters, and in /metrics.
    for tenant, envoy in envoys.items():
        stats = envoy.stats()
        prefix = f"dns_filter.tenant.{tenant}."
        assert stats[prefix + "downstream_rx_queries"] == EXPECTED[tenant]["queries"]
        assert stats.get(prefix + "externally_resolved_queries", 0) == \
            EXPECTED[tenant]["forwarded"]
        assert stats.get(prefix + "unanswered_queries", 0) == EXPECTED[tenant]["nxdomain"]
        # only the stats the bootstrap keeps exist (and so are sent)
        for key in stats:
            assert any(key.startswith(p["prefix"]) if "prefix" in p else key == p["exact"]
                       for p in SIDECAR_STATS), key
    metrics = http_text(f"{cp.admin_url}/metrics")
    for tenant, expected in EXPECTED.items():
        for kind in ("queries", "local", "forwarded", "nxdomain"):
            line = f'dnscp_dns_{kind}_total{{tenant="{tenant}"}} {float(expected[kind])}'
            assert line in metrics, line
        assert f'dnscp_stats_sidecars{{tenant="{tenant}"}} 1.0' in metrics
    assert not re.search(r'dnscp_stats_reports_total\{outcome="(?!accepted)', metrics), \
        [line for line in metrics.splitlines() if "dnscp_stats_reports_total{" in line]
    def per_sidecar() -> dict[str, tuple[float, float]]:
        return {s["node_id"]: (s["totals"]["denied"], s["totals"]["warn"])
                for s in cp.get("/api/v1/traffic/sidecars")["sidecars"]}

    # per sidecar, denied and WARN from the query log, as of its next counter report
    expected = {"sleep.acme": (3, 0), "sleep.foo": (0, 0), "sleep.globex": (2, 3)}
    wait_for(lambda: per_sidecar() == expected, timeout=10, interval=0.5,
             what=f"per-sidecar denied/WARN {expected} (last: {per_sidecar()})")


def test_rates_under_load_and_a_stopped_sidecar_ages_out(
        manifests: Path, tmp_path: Path, processes: list[Any],
        start_control_plane: Callable[..., ControlPlane]) -> None:
    cp = start_control_plane(manifests, "--sidecar-stats-max-age", "4")
    envoys = start_sidecars(cp, tmp_path, processes, ("acme", "foo"))
    wait_for(lambda: len(cp.get("/api/v1/traffic/sidecars")["sidecars"]) == 2, timeout=20,
             what="both sidecars reporting")
    load = DnsLoad(envoys["acme"].dns_port, {"httpbin.acme.com": "100.66.185.144"}, qps=50,
                   max_seconds=30).start()
    try:
        def rate() -> float:
            (acme,) = [t for t in cp.get("/api/v1/traffic")["tenants"] if t["tenant"] == "acme"]
            return float(acme["rates"]["queries"])

        during = wait_for(lambda: (r := rate()) > 40 and r, timeout=20, interval=0.5,
                          what="acme's rate under a 50 queries/s load")
        assert during < 60, during
        per_sidecar = http_text(f"{cp.admin_url}/metrics")
        value = float(re.search(r'dnscp_sidecar_dns_query_rate\{node="sleep.acme",'
                                r'tenant="acme"\} ([0-9.]+)', per_sidecar).group(1))  # type: ignore[union-attr]
        assert 40 < value < 60
    finally:
        load.stop()
    assert load.lost == 0, load.summary()
    wait_for(lambda: rate() == 0, timeout=10, interval=0.5, what="the rate back to 0")
    wait_for(lambda: totals(cp)["acme"]["queries"] == load.sent, timeout=10, interval=0.5,
             what=f"acme's total = {load.sent} queries sent")
    print(f"\nacme under {load.qps:.0f} queries/s: {during:.1f} queries/s; {load.summary()}")

    query(envoys["foo"].dns_port, "httpbin.foo.com")
    wait_for(lambda: totals(cp)["foo"]["queries"] == 1, timeout=10, what="foo's query")
    envoys["foo"].stop()
    stopped = time.monotonic()
    wait_for(lambda: [s["node_id"] for s in cp.get("/api/v1/traffic/sidecars")["sidecars"]]
             == ["sleep.acme"], timeout=15, interval=0.25, what="sleep.foo aged out")
    print(f"a stopped sidecar aged out {time.monotonic() - stopped:.1f} s after it stopped "
          "(--sidecar-stats-max-age 4)")
    assert totals(cp)["foo"]["queries"] == 1  # its counts stay in the tenant's total
    assert "dnscp_stats_sidecars_aged_out_total 1.0" in http_text(f"{cp.admin_url}/metrics")
