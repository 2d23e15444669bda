"""A burst of input changes produces a bounded number of pushes per affected view (the
first change after quiet at once, the rest of the burst in one more), not one per change;
a lone change does not wait for the debounce window (runtime/debounce.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, Envoy, http_text, wait_for
from e2e.harness.dnsquery import query


def pushes(cp: ControlPlane, view: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in
               http_text(f"{cp.admin_url}/metrics").splitlines()
               if line.startswith("dnscp_pushes_total{") and 'type="lds"' in line
               and view in line)


def test_burst_is_one_push(manifests: Path, start_control_plane: Callable[..., ControlPlane],
                           start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests, "--debounce", "0.5")
    acme = start_envoy(cp, "sleep.acme", "acme")
    foo = start_envoy(cp, "sleep.foo", "foo")
    acme_before, foo_before = pushes(cp, "acme@"), pushes(cp, "foo@")
    for i in range(30):  # 30 changes in a burst, all in acme
        (manifests / f"burst-{i}.yaml").write_text(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: b{i}, namespace: acme}}\n"
            f"spec: {{clusterIP: 10.77.1.{i + 1}}}\n")
    wait_for(lambda: query(acme.dns_port, "b29.acme.svc.cluster.local", timeout=0.3)[1]
             == ["10.77.1.30"], timeout=20, what="the burst applied")
    print(f"\n30 changes: {pushes(cp, 'acme@') - acme_before:.0f} LDS push(es) to acme, "
          f"{pushes(cp, 'foo@') - foo_before:.0f} to foo")
    assert 1 <= pushes(cp, "acme@") - acme_before <= 2  # the leading one, then the rest
    assert pushes(cp, "foo@") == foo_before  # not affected: nothing sent
    assert query(foo.dns_port, "httpbin.foo.com")[0] == "NOERROR"


def test_a_lone_change_does_not_wait_for_the_window(
        manifests: Path, start_control_plane: Callable[..., ControlPlane],
        start_envoy: Callable[..., Envoy]) -> None:
    cp = start_control_plane(manifests, "--debounce", "30")
    acme = start_envoy(cp, "sleep.acme", "acme")
    (manifests / "lone.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: lone, namespace: acme}\n"
        "spec: {clusterIP: 10.77.2.1}\n")
    # the first change after quiet is applied at once, far within the 30 s window
    wait_for(lambda: query(acme.dns_port, "lone.acme.svc.cluster.local", timeout=0.3)[1]
             == ["10.77.2.1"], timeout=15, what="the lone change applied")
