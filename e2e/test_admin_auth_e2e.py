"""The admin API behind TokenReview + SubjectAccessReview, as a process, scraped by Prometheus.

``controlplane serve --admin-auth kubernetes --admin-tls-dir ... --kubeconfig ...``
against the fake API server (tests/fakes/kube.py, real wire protocol, RBAC from
deploy/admin-access.yaml), as deploy/ runs it; a real Prometheus scrapes
``/metrics`` over HTTPS (CA and server name verified) with a ServiceAccount token
from a file, as the ServiceMonitor's ``bearerTokenFile`` and ``tlsConfig`` make it do.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane._kit.localrun import ControlPlane, Process, free_port, http_text, wait_for
from controlplane.identity.tlsfiles import write_server_files
from tests.fakes.kube import FakeKube
from tests.tlsprobe import served_serial
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]


NAME = "dns-controlplane.dns-system.svc"


@pytest.fixture
def clients() -> Iterator[list[httpx.Client]]:
    opened: list[httpx.Client] = []
    yield opened
    for client in opened:
        client.close()


def https_getter(ca: Path, clients: list[httpx.Client]) -> Callable[..., tuple[int, Any]]:
    """GET over HTTPS verifying ``ca`` and the name NAME (the pod's IP is not in it)."""
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=5)
    clients.append(client)

    def get(url: str, token: str = "") -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = client.get(url, headers=headers, extensions={"sni_hostname": NAME})
        is_json = r.headers.get("content-type", "").startswith("application/json")
        return r.status_code, r.json() if is_json else r.text
    return get


def test_served_admin_api_checks_every_caller(manifests: Path, tmp_path: Path,
                                              admin_kube: FakeKube, processes: list[object],
                                              clients: list[httpx.Client]) -> None:
    prometheus = require_tool("prometheus", "apt-get install prometheus")
    certs = tmp_path / "tls"
    write_server_files(certs, [NAME])
    cp = ControlPlane(manifests, tmp_path, extra_args=[
        "--admin-auth", "kubernetes", "--kubeconfig", str(admin_kube.kubeconfig(tmp_path)),
        "--admin-tls-dir", str(certs)])
    processes.append(cp)
    cp.start(wait_ready=False)
    get = https_getter(certs / "ca.crt", clients)
    base = f"https://127.0.0.1:{cp.admin_port}"
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, timeout=30, what="/readyz over HTTPS")
    table = f"{base}/api/v1/views/foo/dns-table"
    assert get(table, "tenant-token")[0] == 403
    status, body = get(table, "op-token")
    assert status == 200 and body["tenant"] == "foo"
    assert get(table)[0] == 401
    assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200
    assert get(f"{base}/metrics", "prom-token")[0] == 200
    assert get(f"{base}/metrics", "tenant-token")[0] == 403

    # A real Prometheus with the tokens in files (bearerTokenFile / credentials_file).
    tokens = {name: tmp_path / f"{name}.token" for name in ("prom", "tenant")}
    for name, path in tokens.items():
        path.write_text(f"{name}-token\n")  # Prometheus trims the trailing newline
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [
            {"job_name": f"as-{name}", "authorization": {"credentials_file": str(path)},
             "scheme": "https",
             "tls_config": {"ca_file": str(certs / "ca.crt"), "server_name": NAME},
             "static_configs": [{"targets": [f"127.0.0.1:{cp.admin_port}"]}]}
            for name, path in tokens.items()]}))
    proc = Process("prometheus", [prometheus, f"--config.file={config}",
                                  f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                  f"--web.listen-address=127.0.0.1:{port}"],
                   tmp_path / "prometheus.log").start()
    processes.append(proc)

    def query(q: str) -> list[dict[str, Any]]:
        body = json.loads(http_text(f"http://127.0.0.1:{port}/api/v1/query?"
                                    + urllib.parse.urlencode({"query": q})))
        return list(body["data"]["result"])

    def up() -> dict[str, str] | None:
        got = {r["metric"]["job"]: r["value"][1] for r in query("up")}
        return got if len(got) == 2 else None

    assert wait_for(up, timeout=30, interval=0.5, what="both scrapes") == {
        "as-prom": "1", "as-tenant": "0"}
    assert wait_for(lambda: query('dnscp_rebuilds_total{job="as-prom"}'), timeout=30,
                    interval=0.5, what="control-plane metrics through the token")
    assert query('dnscp_rebuilds_total{job="as-tenant"}') == []

    # The API server down: new callers get 503 with the reason; probes stay 200.
    admin_kube.down()
    status, body = get(f"{base}/api/v1/nodes", "never-seen-token")
    assert status == 503, body
    assert "TokenReview failed: the API server answered 503" in body["detail"]
    status, body = get(f"{base}/api/v1/nodes", "tenant-token")  # token cached, path not
    assert status == 503, body
    assert "SubjectAccessReview failed: the API server answered 503" in body["detail"]
    assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200

    # The certificate rotates: new connections get the new leaf, without a restart, and
    # Prometheus's scrapes go on succeeding.
    admin_kube.up()
    rotated = write_server_files(certs, [NAME])
    rotated_at = time.time()
    assert served_serial(cp.admin_port, (certs / "ca.crt").read_bytes(), NAME) == rotated.serial

    def scraped_after_rotation() -> bool:
        result = query('timestamp(up{job="as-prom"} == 1)')
        return bool(result) and float(result[0]["value"][1]) > rotated_at + 1
    wait_for(scraped_after_rotation, timeout=30, interval=0.5,
             what="a successful scrape after the rotation")
    assert cp.process is not None and cp.process.alive()
