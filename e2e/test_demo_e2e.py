"""The talk's two-tenant demo and live edits, with real Envoy sidecars."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from e2e.harness.dnsquery import query
from e2e.harness.paths import SEEDS


def lds_version(cp: ControlPlane, node_id: str) -> str | None:
    for n in cp.get("/api/v1/nodes"):
        if n["node_id"] == node_id:
            return n["types"].get("lds", {}).get("acked_version")
    return None


def assert_no_rejections(*envoys: Envoy) -> None:
    for e in envoys:
        stats = e.stats()
        assert stats["listener_manager.lds.update_rejected"] == 0, e.node_id
        assert stats["cluster_manager.cds.update_rejected"] == 0, e.node_id


def test_two_tenant_demo(manifests: Path, start_control_plane: Callable[..., ControlPlane],
                         start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    foo = start_envoy(cp, "sleep.foo", "foo")
    cases = [
        (acme, "httpbin.acme.com", ("NOERROR", ["100.66.185.144"])),
        (acme, "httpbin.acme.svc.cluster.local", ("NOERROR", ["100.66.185.144"])),
        # Envoy's table misses the upper case (facts #8), and a sidecar without the DNS
        # front forwards nothing for acme: its resolver is table-only, for the front alone
        # (through the front the name is answered: test_sidecar_answers_e2e, beta).
        (acme, "HTTPBIN.acme.com", ("NXDOMAIN", [])),
        (acme, "httpbin.foo.com", ("NXDOMAIN", [])),
        (acme, "httpbin.foo.svc.cluster.local", ("NXDOMAIN", [])),
        (foo, "httpbin.foo.com", ("NOERROR", ["100.68.169.65"])),
        (foo, "httpbin.foo.svc.cluster.local", ("NOERROR", ["100.68.169.65"])),
        (foo, "httpbin.acme.com", ("NXDOMAIN", [])),
        (foo, "httpbin.acme.svc.cluster.local", ("NXDOMAIN", [])),
    ]
    for envoy, name, expected in cases:
        assert query(envoy.dns_port, name) == expected, (envoy.node_id, name)
    assert query(acme.dns_port, "_http._tcp.httpbin.acme.svc.cluster.local", "SRV") == (
        "NOERROR", ["0 100 8000 httpbin.acme.svc.cluster.local."])
    assert query(foo.dns_port, "_http._tcp.httpbin.acme.svc.cluster.local", "SRV")[1] == []
    nodes = {n["node_id"]: n for n in cp.get("/api/v1/nodes")}
    assert nodes["sleep.acme"]["tenant"] == "acme" and nodes["sleep.foo"]["tenant"] == "foo"
    assert nodes["sleep.acme"]["types"]["lds"]["acked_version"] is not None
    stats = acme.stats()
    assert stats["dns_filter.tenant.acme.downstream_rx_queries"] >= 5
    # The bootstrap's stats tag turns the tenant into a Prometheus label.
    prom = http_text(f"{acme.admin_url}/stats/prometheus")
    series = [line for line in prom.splitlines()
              if line.startswith("envoy_dns_filter_downstream_rx_queries{")]
    assert series and all('tenant="acme"' in line for line in series), series
    assert_no_rejections(acme, foo)


def test_live_edit_reaches_envoy(manifests: Path, start_control_plane: Callable[..., ControlPlane],
                                 start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    name = "live.acme.svc.cluster.local"
    assert query(acme.dns_port, name)[0] == "NXDOMAIN"
    f = manifests / "live.yaml"
    latencies = []
    for i, ip in enumerate(["10.77.0.1", "10.77.0.2", "10.77.0.3"]):
        started = time.monotonic()
        f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: live, namespace: acme}\n"
                     f"spec: {{clusterIP: {ip}}}\n")
        wait_for(lambda ip=ip: query(acme.dns_port, name, timeout=0.3) == ("NOERROR", [ip]),
                 timeout=20, interval=0.005, what=f"edit {i} to reach Envoy")
        latencies.append((time.monotonic() - started) * 1000)
    started = time.monotonic()
    f.unlink()
    wait_for(lambda: query(acme.dns_port, name, timeout=0.3)[0] == "NXDOMAIN", timeout=20,
             interval=0.005, what="deletion to reach Envoy")
    latencies.append((time.monotonic() - started) * 1000)
    print(f"\nfile-to-answer latency (ms): {', '.join(f'{x:.0f}' for x in latencies)}")
    assert_no_rejections(acme)


def test_broken_file_changes_nothing(manifests: Path,
                                     start_control_plane: Callable[..., ControlPlane],
                                     start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    foo = start_envoy(cp, "sleep.foo", "foo")
    before = {e.node_id: lds_version(cp, e.node_id) for e in (acme, foo)}
    assert all(before.values())
    # 1. The slide's policy with an unquoted '*': a new file that is not YAML.
    (manifests / "bad-unquoted-wildcard.yaml").write_text(
        (SEEDS / "bad-unquoted-wildcard.yaml").read_text())
    # 2. The demo file itself broken: what it held must stay in force.
    demo = manifests / "demo-two-tenants.yaml"
    demo.write_text(demo.read_text() + "\n  broken: [unclosed\n")

    def errors() -> dict[str, dict[str, str]]:
        return {e["name"]: e for e in cp.get("/api/v1/errors")["errors"]}

    errs = wait_for(lambda: (lambda e: e if len(e) == 2 else None)(errors()), timeout=20,
                    what="both file errors")
    bad = errs["manifests/bad-unquoted-wildcard.yaml"]
    assert bad["origin"] == "manifests/bad-unquoted-wildcard.yaml:13"
    assert "line 13" in bad["reason"] and "quoted" in bad["reason"]
    assert errs["manifests/demo-two-tenants.yaml"]["kind"] == "File"
    assert "manifests/bad-unquoted-wildcard.yaml" in cp.process.log()  # type: ignore[union-attr]
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    assert query(foo.dns_port, "httpbin.foo.com") == ("NOERROR", ["100.68.169.65"])
    assert {e.node_id: lds_version(cp, e.node_id) for e in (acme, foo)} == before
    assert_no_rejections(acme, foo)


def test_invalid_policy_keeps_last_good(manifests: Path,
                                        start_control_plane: Callable[..., ControlPlane],
                                        start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests)
    acme = start_envoy(cp, "sleep.acme", "acme")
    foo = start_envoy(cp, "sleep.foo", "foo")
    demo = manifests / "demo-two-tenants.yaml"
    text = demo.read_text()
    # acme's policy becomes invalid twice over; foo's stays as it was.
    broken = text.replace('whitelist: ["*.acme.com", "*.acme.svc.cluster.local"]\n'
                          '    defaultAction: DENY',
                          'whitelist: ["foo.*.com"]\n    defaultAction: BLOCK')
    assert broken != text
    demo.write_text(broken)
    err = wait_for(lambda: [e for e in cp.get("/api/v1/errors")["errors"]
                            if e["kind"] == "DnsPolicy"], timeout=20, what="policy error")[0]
    assert err["name"] == "acme" and "BLOCK" in err["reason"]
    assert "last valid version stays in force" in err["reason"]
    assert query(acme.dns_port, "httpbin.acme.com") == ("NOERROR", ["100.66.185.144"])
    assert query(acme.dns_port, "httpbin.foo.com")[0] == "NXDOMAIN"
    assert query(foo.dns_port, "httpbin.foo.com") == ("NOERROR", ["100.68.169.65"])
    assert_no_rejections(acme, foo)
