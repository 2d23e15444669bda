"""A real Prometheus scrapes two Envoys of two tenants through the stats-only listener."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Envoy, Process, free_port, http_text, wait_for
from e2e.harness.dnsquery import query
from tests.tools import require_tool

NAMES = {"acme": ["httpbin.acme.com", "httpbin.acme.svc.cluster.local", "httpbin.foo.com"],
         "foo": ["httpbin.foo.com", "nope.example", "httpbin.foo.svc.cluster.local"]}
SENT = {"acme": 7, "foo": 11}


def test_stats_listener_serves_only_prometheus_stats(
        manifests: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    query(acme.dns_port, "httpbin.acme.com")
    text = wait_for(lambda: http_text(acme.stats_url), timeout=10, what="stats listener")
    assert re.search(r'^envoy_dns_filter_downstream_rx_queries\{[^}]*tenant="acme"[^}]*\} 1$',
                     text, re.M), text[:2000]
    base = acme.stats_url.rsplit("/stats/prometheus", 1)[0]
    for path in ("/stats", "/config_dump", "/quitquitquit", "/clusters", "/stats/prometheusX"):
        try:
            urllib.request.urlopen(base + path, timeout=2)  # noqa: S310 - loopback
            raise AssertionError(f"{path} should not be served")
        except urllib.error.HTTPError as e:
            assert e.code == 404, path
    assert acme.process is not None and acme.process.alive()  # /quitquitquit did nothing


def test_prometheus_counts_queries_per_tenant(
        manifests: Path, tmp_path: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy], processes: list[object]) -> None:
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    cp = start_control_plane(manifests)
    envoys = {t: start_envoy(cp, f"sleep.{t}", t) for t in ("acme", "foo")}
    globex = start_envoy(cp, "sleep.globex", "globex")  # forwards: runs a tenant resolver
    for e in envoys.values():
        wait_for(lambda e=e: http_text(e.stats_url), timeout=10, what="stats listener")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{
            "job_name": "envoy-sidecars", "metrics_path": "/stats/prometheus",
            "static_configs": [{"targets": [f"127.0.0.1:{e.stats_port}"
                                            for e in envoys.values()]}]}, {
            "job_name": "controlplane",
            "static_configs": [{"targets": [f"127.0.0.1:{cp.admin_port}"]}]}],
    }))
    proc = Process("prometheus", [prometheus, f"--config.file={config}",
                                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{port}"],
                   tmp_path / "prometheus.log").start()
    processes.append(proc)
    for tenant, count in SENT.items():
        for i in range(count):
            query(envoys[tenant].dns_port, NAMES[tenant][i % len(NAMES[tenant])])

    def per_tenant() -> dict[str, int] | None:
        q = urllib.parse.urlencode({"query": "envoy_dns_filter_downstream_rx_queries"})
        body = json.loads(http_text(f"http://127.0.0.1:{port}/api/v1/query?{q}"))
        got = {r["metric"]["tenant"]: int(float(r["value"][1])) for r in body["data"]["result"]}
        return got if got == SENT else None

    got = wait_for(per_tenant, timeout=60, interval=0.5,
                   what=f"Prometheus to report {SENT} (log: {proc.log_path})")
    print(f"\nPrometheus per-tenant queries: {got}")
    assert got == SENT

    # The tenant resolver's counters reach Prometheus with the tenant label: 5 blacklisted
    # names, forwarded by globex's Envoy and denied by its resolver.
    for i in range(5):
        assert query(globex.dns_port, f"q{i}.ADS.tracker.example")[0] == "NXDOMAIN"

    def resolver_counts() -> tuple[int, int] | None:
        out = []
        for metric in ("dnscp_resolver_queries_total", "dnscp_resolver_policy_denied_total"):
            q = urllib.parse.urlencode({"query": f'{metric}{{tenant="globex"}}'})
            result = json.loads(http_text(f"http://127.0.0.1:{port}/api/v1/query?{q}"))[
                "data"]["result"]
            out.append(int(float(result[0]["value"][1])) if result else -1)
        return (out[0], out[1]) if out == [5, 5] else None

    counts = wait_for(resolver_counts, timeout=30, interval=0.5,
                      what="globex's resolver counters in Prometheus")
    print(f"tenant resolver (globex): queries, denied = {counts}")

    # Every panel of the Grafana dashboard evaluates on this Prometheus; the Envoy ones
    # have data for both tenants.
    def evaluate(q: str) -> dict[str, object]:
        body = json.loads(http_text(f"http://127.0.0.1:{port}/api/v1/query?"
                                    + urllib.parse.urlencode({"query": q})))
        assert body["status"] == "success", (q, body)
        return dict(body["data"])

    for title, _, targets in dashboard_panels():
        for _, expr in targets:
            q = expr.replace('"$tenant"', '".*"').replace("$__rate_interval", "1m")
            evaluate(q)
            if "envoy_dns_filter" in q and "externally" not in q:
                # rate() needs two samples: wait for the next scrape if need be
                wait_for(lambda q=q: {r["metric"].get("tenant") for r in evaluate(q)["result"]}
                         == {"acme", "foo"}, timeout=30, interval=0.5, what=f"{title}: {q}")


def dashboard_panels() -> list[tuple[str, str, list[tuple[str, str]]]]:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.PANELS)


def test_dashboard_json_is_current() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboard.py"
    spec = importlib.util.spec_from_file_location("dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = json.loads((path.parent / "dns-tenants.json").read_text())
    assert current == module.dashboard()
