"""Draw docs/dashboard.png: the dashboard's panels from a real, short run.

Starts the control plane on examples/, a real Envoy per tenant, the globex
tenant's dnsmasq, and a real Prometheus scraping the sidecars' stats
listeners and the control plane's /metrics; sends a bounded mix of queries
(local, forwarded, denied, WARN) for about 45 seconds; then evaluates every
panel's PromQL over that window and plots it. Needs matplotlib.

    .venv/bin/python deploy/grafana/render_preview.py [--seconds 45] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import dns.message
import dns.query

sys.path.insert(0, str(Path(__file__).parent))
from dashboard import PANELS  # noqa: E402

from controlplane._kit.localrun import (  # noqa: E402
    ControlPlane,
    Dnsmasq,
    Envoy,
    Process,
    find_tool,
    free_port,
    http_json,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
MIX = {
    "acme": ["httpbin.acme.com", "httpbin.acme.svc.cluster.local", "httpbin.foo.com"],
    "foo": ["httpbin.foo.com", "httpbin.foo.svc.cluster.local", "nothing.example"],
    "globex": ["api.globex.svc.cluster.local", "www.example.com", "ads.tracker.example",
               "pay.partner.example"],
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    work = Path(tempfile.mkdtemp(prefix="dash-"))
    started: list[object] = []
    try:
        started.append(Dnsmasq({"www.example.com": "203.0.113.10"}, work, port=15353).start())
        cp = ControlPlane(ROOT / "examples", work).start()
        started.append(cp)
        envoys = {}
        for tenant in MIX:
            e = Envoy(node_id=f"sleep.{tenant}", namespace=tenant, labels={"app": "sleep"},
                      xds_address=cp.xds_address, workdir=work).start()
            started.append(e)
            envoys[tenant] = e
        port = free_port()
        config = work / "prometheus.yml"
        config.write_text(json.dumps({"global": {"scrape_interval": "1s"}, "scrape_configs": [
            {"job_name": "sidecars", "metrics_path": "/stats/prometheus", "static_configs": [
                {"targets": [f"127.0.0.1:{e.stats_port}" for e in envoys.values()]}]},
            {"job_name": "controlplane", "static_configs": [
                {"targets": [f"127.0.0.1:{cp.admin_port}"]}]}]}))
        prom = Process("prometheus", [find_tool("prometheus") or "prometheus",
                                      f"--config.file={config}",
                                      f"--storage.tsdb.path={work / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{port}"],
                       work / "prometheus.log").start()
        started.append(prom)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_json(f"{base}/-/ready") if False else
                 http_json(f"{base}/api/v1/targets")["data"]["activeTargets"], timeout=30,
                 what="prometheus")
        begin = time.time()
        i = 0
        while time.time() - begin < args.seconds:  # bounded load, ~60 queries/s in all
            for tenant, names in MIX.items():
                q = dns.message.make_query(names[i % len(names)], "A")
                dns.query.udp(q, "127.0.0.1", port=envoys[tenant].dns_port, timeout=1)
            if i % 40 == 0:  # a config change now and then, for the push latency panel
                (work / "note").write_text(str(i))
                extra = ROOT / "examples" / "zz-preview.yaml"
                extra.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: preview, "
                                 f"namespace: acme}}\nspec: {{clusterIP: 10.99.{i // 250}."
                                 f"{i % 250}}}\n")
            i += 1
            time.sleep(0.05)
        (ROOT / "examples" / "zz-preview.yaml").unlink(missing_ok=True)
        time.sleep(3)  # let the last scrapes land
        end = time.time()
        fig, axes = plt.subplots(3, 2, figsize=(13, 10))
        fig.suptitle("DNS per tenant (preview from a real run: Envoy 1.40, Prometheus)")
        for ax, (title, unit, targets) in zip(axes.flat, PANELS, strict=True):
            for legend, expr in targets:
                q = expr.replace('{tenant=~"$tenant"}', "").replace(
                    'tenant=~"$tenant",', "").replace("$__rate_interval", "10s")
                params = urllib.parse.urlencode({"query": q, "start": begin, "end": end,
                                                 "step": 1})
                data = http_json(f"{base}/api/v1/query_range?{params}")["data"]["result"]
                for series in data:
                    label = legend
                    for k, v in series["metric"].items():
                        label = label.replace("{{" + k + "}}", v)
                    xs = [float(t) - begin for t, _ in series["values"]]
                    ys = [float(v) for _, v in series["values"]]
                    ax.plot(xs, ys, label=label)
            ax.set_title(title)
            ax.set_xlabel("seconds")
            ax.set_ylabel(unit)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=80)
        print(f"wrote {args.out} from {i * len(MIX)} queries over {end - begin:.0f}s")
        return 0
    finally:
        (ROOT / "examples" / "zz-preview.yaml").unlink(missing_ok=True)
        for proc in reversed(started):
            proc.stop()  # type: ignore[attr-defined]


if __name__ == "__main__":
    raise SystemExit(main())
