"""The operator console through the admin app (httpx.ASGITransport): pages and assets,
no CDN anywhere (the console and /docs), relative URLs that work under a path prefix,
only GET routes, the admin API's authentication on every console route (the real
kubernetes client against tests/fakes/kube.py with deploy/admin-access.yaml), and the
routes the console reads (/api/v1/tenants, /api/v1/traffic)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from starlette.applications import Starlette
from starlette.routing import Mount

from controlplane.admin.api import create_app
from controlplane.admin.console import PAGES as CONSOLE_PAGES
from controlplane.admin.console import STATIC, render_page
from controlplane.admin.first_seen import FirstSeen
from controlplane.admin.reads import AdminReads
from controlplane.core.errors import InputError
from controlplane.core.inventory import Inventory
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.identity.admin_auth import AdminAuthorizer
from controlplane.kube.admin_review import KubeReviewer
from controlplane.kube.runner import api_client
from controlplane.telemetry.traffic import DnsTraffic, Report
from tests.factories import bearer, connect, inventory, node
from tests.fakes.kube import FakeKube

PAGES = ["/console/", "/console/tenant", "/console/queries", "/console/sidecar",
         "/console/explain", "/console/errors"]
ASSETS = sorted(p.name for p in Path(str(STATIC)).iterdir())
URL_IN_TEXT = re.compile(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", re.I)
SVG_NS = "http://www.w3.org/2000/svg"  # an XML namespace name, never fetched


def hub_with_traffic() -> tuple[Hub, DnsTraffic]:
    hub = Hub(Settings())
    inv = inventory()
    hub.set_inventory(Inventory.of(
        [*inv.namespaces.values(), *inv.services.values(), *inv.policies.values()],
        [InputError("File", "", "examples/bad.yaml", "not valid YAML at line 13",
                    "examples/bad.yaml:13")]))
    hub.readiness.loaded()
    conn = connect(hub, node("acme-1", "acme", LABELS={"app": "sleep"}))
    out = conn.stream.responses(hub.snapshot_for(conn))
    for o in out:  # ACK everything
        conn.stream.receive(discovery_pb2.DiscoveryRequest(
            type_url=o.type_url, version_info=o.version, response_nonce=o.nonce))
    connect(hub, node("foo-1", "foo"))  # sent, never ACKed
    hub.query_log.ingest(tenant="acme", node="acme-1", body="web.foo.svc.cluster.local. 1 3")
    traffic = DnsTraffic()
    t0 = time.time() - 5  # the API reads the real clock: reports of the last seconds
    traffic.report(Report("acme-1", "acme", "acme", 100, queries=10, forwarded=0,
                          nxdomain=1), now=t0)
    traffic.report(Report("acme-1", "acme", "acme", 105, queries=60, forwarded=0,
                          nxdomain=6), now=t0 + 5)
    traffic.sample(now=t0 + 5)
    return hub, traffic


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


def get_all(app: Any, paths: list[str], headers: dict[str, str] | None = None
            ) -> dict[str, httpx.Response]:
    async def run() -> dict[str, httpx.Response]:
        async with client(app) as c:
            return {p: await c.get(p, headers=headers) for p in paths}
    return asyncio.run(run())


def test_pages_and_assets_are_served_with_a_strict_policy() -> None:
    hub, traffic = hub_with_traffic()
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    r = get_all(app, [*PAGES, *(f"/console/static/{a}" for a in ASSETS), "/console/nope",
                      "/console/static/..%2Fapi.py", "/console", "/"])
    for path in [*PAGES, *(f"/console/static/{a}" for a in ASSETS)]:
        assert r[path].status_code == 200, path
        assert "script-src 'self'" in r[path].headers["content-security-policy"], path
    assert r["/console/static/console.js"].headers["content-type"].startswith("text/javascript")
    assert r["/console/nope"].status_code == 404
    assert r["/console/static/..%2Fapi.py"].status_code == 404
    # relative redirects: right behind any prefix
    assert r["/console"].status_code == 307 and r["/console"].headers["location"] == "console/"
    assert r["/"].headers["location"] == "console/"


def test_no_cdn_and_only_relative_urls() -> None:
    """Nothing a page loads comes from elsewhere: every URL in the console's files is
    relative, and /docs and /redoc load their scripts from this server."""
    for name in ASSETS:
        text = (Path(str(STATIC)) / name).read_text()
        assert not URL_IN_TEXT.findall(text.replace(SVG_NS, "")), name
        for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
            assert not ref.startswith("/") and ":" not in ref.replace("data:,", ""), (name, ref)
    hub, traffic = hub_with_traffic()
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    r = get_all(app, ["/docs", "/redoc"])
    for page in ("/docs", "/redoc"):
        html = r[page].text
        refs = re.findall(r'(?:src|href)="([^"]*)"', html) + re.findall(r"url: '([^']*)'", html)
        assert refs and all(not ref.startswith(("/", "http")) for ref in refs), (page, refs)
        assert "cdn" not in html.lower() and "fonts.googleapis" not in html
        assets = get_all(app, [urljoin(page, ref) for ref in refs])
        assert all(a.status_code == 200 for a in assets.values()), {
            k: v.status_code for k, v in assets.items()}
    assert "SwaggerUIBundle" in get_all(app, ["/docs/static/swagger-ui-bundle.js"])[
        "/docs/static/swagger-ui-bundle.js"].text[:200_000]


def test_everything_resolves_under_a_path_prefix() -> None:
    """Served by a proxy at /dns/ (here a Mount, which strips the prefix like one): each
    page's assets and API calls resolve under the prefix, without any setting."""
    hub, traffic = hub_with_traffic()
    proxy = Starlette(routes=[Mount("/dns", app=create_app(AdminReads.of_hub(hub, traffic=traffic)))])
    pages = get_all(proxy, [f"/dns{p}" for p in PAGES] + ["/dns/docs"])
    wanted: set[str] = set()
    for path, response in pages.items():
        assert response.status_code == 200, path
        wanted |= {urljoin(path, ref) for ref in re.findall(r'(?:src|href)="([^"]*)"',
                                                              response.text)
                   if not ref.startswith("data:")}
    js = "".join((Path(str(STATIC)) / a).read_text() for a in ASSETS if a.endswith(".js"))
    api_paths = set(re.findall(r'api\("(api/v1/[a-z/]+)', js))
    assert {"api/v1/tenants", "api/v1/errors"} <= api_paths
    wanted |= {urljoin("/dns/console/", "../" + p) for p in api_paths}
    wanted |= {"/dns/api/v1/views/acme/dns-table", "/dns/api/v1/tenants/acme",
               "/dns/api/v1/explain?namespace=acme&name=web.acme.svc.cluster.local"}
    got = get_all(proxy, sorted(wanted))
    assert all(path.startswith("/dns/") for path in got)
    assert {p: r.status_code for p, r in got.items()} == dict.fromkeys(got, 200)


def test_only_get_routes() -> None:
    hub, traffic = hub_with_traffic()
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    methods = {m for route in app.routes for m in getattr(route, "methods", None) or ()}
    assert methods <= {"GET", "HEAD"}, methods
    r = asyncio.run(_post(app))
    assert r == 405


async def _post(app: Any) -> int:
    async with client(app) as c:
        return (await c.post("/api/v1/tenants", json={})).status_code


def test_console_routes_need_the_admin_apis_authentication(admin_kube: FakeKube,
                                                           tmp_path: Path) -> None:
    hub, traffic = hub_with_traffic()
    auth = AdminAuthorizer(KubeReviewer(api_client(str(admin_kube.kubeconfig(tmp_path)), None)))
    app = create_app(AdminReads.of_hub(hub, traffic=traffic), auth=auth)
    paths = [*PAGES, "/console/static/console.js", "/", "/console", "/docs",
             "/docs/static/swagger-ui.css", "/redoc", "/api/v1/tenants", "/api/v1/tenants/acme",
             "/api/v1/traffic", "/api/v1/traffic/sidecars"]
    anonymous = get_all(app, paths)
    assert {p: r.status_code for p, r in anonymous.items()} == dict.fromkeys(paths, 401)
    tenant = get_all(app, paths, bearer("tenant-token"))  # a pod's own token
    assert {p: r.status_code for p, r in tenant.items()} == dict.fromkeys(paths, 403)
    # an operator bound to dns-controlplane-admin-reader (deploy/admin-access.yaml)
    operator = get_all(app, paths, bearer("op-token"))
    assert {p: r.status_code for p, r in operator.items()} == {
        p: 307 if p in ("/", "/console") else 200 for p in paths}
    # a team granted only /api/v1/views/acme/* gets its view, not the console
    team = get_all(app, ["/console/", "/api/v1/tenants", "/api/v1/views/acme/dns-table"],
                   bearer("acme-team-token"))
    assert [r.status_code for r in team.values()] == [403, 403, 200]
    assert get_all(app, ["/healthz"])["/healthz"].status_code == 200


def test_tenants_api() -> None:
    hub, traffic = hub_with_traffic()
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    r = get_all(app, ["/api/v1/tenants", "/api/v1/tenants/acme", "/api/v1/tenants/nope",
                      "/api/v1/traffic?history=true", "/api/v1/traffic/sidecars?tenant=acme"])
    tenants = {t["tenant"]: t for t in r["/api/v1/tenants"].json()["tenants"]}
    assert set(tenants) == {"acme", "foo"}  # the default view has no sidecar: not shown
    acme = tenants["acme"]
    assert acme["policy"]["default_action"] == "DENY" and acme["namespaces"] == ["acme"]
    assert acme["policy"]["whitelist"] == ["*.acme.svc.cluster.local"]
    (car,) = acme["sidecars"]
    assert car["node_id"] == "acme-1" and car["current"] is True
    assert car["types"]["lds"]["acked"] == car["types"]["lds"]["sent"]
    assert car["traffic"]["rates"]["queries"] == 10.0
    (foo_car,) = tenants["foo"]["sidecars"]
    assert foo_car["current"] is False and foo_car["traffic"] is None
    assert acme["traffic"]["rates"]["queries"] == 10.0
    assert acme["traffic"]["totals"]["queries"] == 60.0
    assert acme["traffic"]["totals"]["denied"] == 1.0  # from the query log
    ((_, *point),) = acme["traffic"]["history"]
    assert point == [10.0, 10.0, 0.0, 1.0, 0.0, 0.0]
    (recent,) = acme["recent"]
    assert (recent["name"], recent["action"], recent["rcode"]) == (
        "web.foo.svc.cluster.local", "deny", "NXDOMAIN")
    assert {c["type"]: c["status"] for c in acme["conditions"]}["Ready"] == "True"
    assert r["/api/v1/tenants/acme"].json()["tenant"] == "acme"
    assert r["/api/v1/tenants/nope"].status_code == 404
    summary = {t["tenant"]: t for t in r["/api/v1/traffic?history=true"].json()["tenants"]}
    assert summary["acme"]["sidecars_reporting"] == 1 and summary["foo"]["sidecars_reporting"] == 0
    assert len(summary["acme"]["history"]) == 1
    (side,) = r["/api/v1/traffic/sidecars?tenant=acme"].json()["sidecars"]
    assert side["node_id"] == "acme-1" and side["totals"]["nxdomain"] == 6.0


@pytest.mark.parametrize("path", sorted(CONSOLE_PAGES))
def test_each_page_loads_its_script_and_the_shared_one(path: str) -> None:
    page, title = CONSOLE_PAGES[path]
    html = render_page(path)
    assert f"<title>{title} · DNS control plane</title>" in html
    assert f'<body data-page="{page}">' in html
    assert (Path(str(STATIC)) / f"{page}.js").is_file()
    assert '<script src="static/console.js" defer></script>' in html
    assert f'<script src="static/{page}.js" defer></script>' in html
    assert "<script>" not in html  # no inline script (the CSP forbids it)


def test_sidecars_whose_counters_stopped_are_stale() -> None:
    """A connected sidecar whose counters are older than ``stale_after`` is stale; one whose
    stream is gone but whose counters are still held is listed, disconnected and stale."""
    hub, traffic = hub_with_traffic()
    old = time.time() - 40  # older than stale_after (15 s), younger than max_age (60 s)
    traffic.report(Report("foo-1", "foo", "foo", 100, queries=5), now=old)
    traffic.report(Report("acme-gone", "acme", "acme", 100, queries=7), now=old)
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    body = get_all(app, ["/api/v1/tenants"])["/api/v1/tenants"].json()
    assert body["stale_after_seconds"] == traffic.stale_after
    cars = {c["node_id"]: c for t in body["tenants"] for c in t["sidecars"]}
    assert (cars["acme-1"]["connected"], cars["acme-1"]["stale"]) == (True, False)
    assert (cars["foo-1"]["connected"], cars["foo-1"]["stale"]) == (True, True)
    assert cars["foo-1"]["traffic"]["last_report_seconds_ago"] >= 40
    gone = cars["acme-gone"]
    assert (gone["connected"], gone["stale"], gone["current"]) == (False, True, False)
    assert gone["traffic"]["totals"]["queries"] == 7.0


def test_errors_say_since_when_and_show_the_lines() -> None:
    """Each error carries when the admin API first listed it (kept while it stays) and,
    for a file that is not valid YAML, the lines around the fault."""
    hub, traffic = hub_with_traffic()
    tabbed = InputError("File", "", "bad.yaml", "not valid YAML at line 3", "bad.yaml:3",
                        snippet="3 | \u2192name: x\n  | ^")
    hub.set_inventory(dataclasses.replace(hub.inventory, errors=(tabbed,)))
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    before = time.time()
    first = get_all(app, ["/api/v1/errors"])["/api/v1/errors"].json()
    (error,) = first["errors"]
    assert error["snippet"] == "3 | \u2192name: x\n  | ^" and error["origin"] == "bad.yaml:3"
    assert before - 1 <= error["first_seen"] <= time.time() + 1
    again = get_all(app, ["/api/v1/errors"])["/api/v1/errors"].json()
    assert again["errors"][0]["first_seen"] == error["first_seen"]  # kept while it stays


def test_an_unknown_tenant_is_named_and_the_default_view_is_not_listed() -> None:
    hub, traffic = hub_with_traffic()
    app = create_app(AdminReads.of_hub(hub, traffic=traffic))
    r = get_all(app, ["/api/v1/tenants/nope", "/api/v1/views/nope/dns-table"])
    for response in r.values():
        assert response.status_code == 404
        assert response.json()["detail"] == "no tenant named 'nope'; tenants: acme, foo"


def test_first_seen_keeps_current_keys_only() -> None:
    seen = FirstSeen()
    assert seen.stamp(["a", "b"], now=1.0) == [1.0, 1.0]
    assert seen.stamp(["b", "c"], now=2.0) == [1.0, 2.0]
    assert seen.stamp(["a"], now=3.0) == [3.0]  # "a" was gone: new again
    assert len(seen) == 1
