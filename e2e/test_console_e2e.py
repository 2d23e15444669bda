"""The operator console in a real headless Chromium (Debian's chromium + chromium-driver,
driven by selenium), against make-run-like processes: the control plane on a copy of
examples/, one real Envoy per tenant streaming its counters, a tenant DNS server, DNS
load. The tenants page shows the tenants, the rate chart rises when queries are sent, a
denied query appears, explain answers as the API does, an edited manifest (and a broken
one) shows up without a reload, all of it works behind a path prefix, and the README's
screenshot is taken (``UPDATE_SCREENSHOT=1`` writes docs/console.png)."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from controlplane._kit.localrun import DnsLoad
from e2e.harness.browser import card, chromium, until
from e2e.harness.console_stack import ConsoleStack as Stack
from e2e.harness.console_stack import console_stack
from e2e.harness.dnsquery import query

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "docs" / "console.png"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with console_stack(tmp_path_factory.mktemp("console"), ("acme", "foo", "globex", "micro-shake-factory")) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_tenants_page_shows_every_tenant_with_its_sidecars(stack: Stack, browser: Any) -> None:
    browser.get(f"{stack.cp.admin_url}/console/")
    until(browser, "document.querySelectorAll('section.tenant').length === 4",
          what="four tenant cards")
    names = browser.execute_script(
        "return [...document.querySelectorAll('section.tenant')].map(s => s.dataset.tenant)")
    assert names == ["acme", "foo", "globex", "shakes"]
    for tenant, namespace in (("acme", "acme"), ("globex", "globex"),
                              ("shakes", "micro-shake-factory")):
        until(browser, f"{card(tenant)}.querySelector('tr[data-node=\"sleep.{namespace}\"] "
                       f"[data-state=current]')", what=f"{tenant}'s sidecar ACKed and current")
    text = browser.execute_script(f"return {card('globex')}.innerText")
    assert "WARN" in text and "*.tracker.example" in text and "127.0.0.1:" in text
    assert "Ready: Current" in browser.execute_script(f"return {card('acme')}.innerText")


def test_rate_chart_rises_when_queries_are_sent(stack: Stack, browser: Any) -> None:
    browser.get(f"{stack.cp.admin_url}/console/")
    chart = f"{card('foo')}.querySelector('svg.chart')"
    until(browser, f"{chart} && {chart}.dataset.points > 0", what="foo's chart")
    assert float(browser.execute_script(f"return {chart}.dataset.last")) == 0
    browser.execute_script("window.__notReloaded = true")
    load = DnsLoad(stack.envoys["foo"].dns_port, {"httpbin.foo.com": "100.68.169.65"}, qps=40,
                   max_seconds=40).start()
    try:
        last = until(browser, f"{chart}.dataset.last > 25 && {chart}.dataset.last",
                     what="foo's chart above 25 queries/s")
        shown = browser.execute_script(
            f"return {card('foo')}.querySelector('.rate[data-kind=queries]').dataset.value")
    finally:
        load.stop()
    assert load.lost == 0, load.summary()
    assert browser.execute_script("return window.__notReloaded") is True
    line = browser.execute_script(f"return {chart}.querySelector('polyline[data-kind=queries]')"
                                  ".getAttribute('points')")
    ys = [float(p.split(",")[1]) for p in line.split()]
    assert ys[-1] < ys[0]  # the line went up (SVG y grows downwards)
    print(f"\nfoo's chart: {float(last):.1f} queries/s (rate shown {float(shown):.1f}) "
          f"under a 40 queries/s load")


def test_a_denied_query_appears_in_the_recent_list(stack: Stack, browser: Any) -> None:
    browser.get(f"{stack.cp.admin_url}/console/")
    until(browser, card("acme"))
    assert query(stack.envoys["acme"].dns_port, "httpbin.foo.com")[0] == "NXDOMAIN"
    item = (f"{card('acme')}.querySelector('ul.recent li[data-action=deny]"
            "[data-name=\"httpbin.foo.com\"]')")
    text = until(browser, f"{item} && {item}.innerText", what="the denied query in acme's list")
    assert "defaultAction DENY" in text and "sleep.acme" in text and "NXDOMAIN" in text


def test_explain_answers_the_same_as_the_api(stack: Stack, browser: Any) -> None:
    browser.get(f"{stack.cp.admin_url}/console/explain")
    from selenium.webdriver.common.by import By

    for field, value in (("namespace", "globex"), ("labels", "app=sleep"),
                         ("name", "x.ADS.tracker.example")):
        box = browser.find_element(By.ID, f"f-{field}")
        box.clear()
        box.send_keys(value)
    browser.find_element(By.ID, "explain-go").click()
    shown = json.loads(until(browser, "document.getElementById('explain-json') && "
                                      "document.getElementById('explain-json').textContent"))
    params = urllib.parse.urlencode({"namespace": "globex", "labels": "app=sleep",
                                     "name": "x.ADS.tracker.example", "type": "A"})
    assert shown == stack.cp.get(f"/api/v1/explain?{params}")
    assert shown["decision"] == {"action": "deny", "rule": "blacklist *.tracker.example"}
    rcode = browser.execute_script("return document.getElementById('explain-result')"
                                   ".dataset.rcode")
    assert rcode == shown["envoy"]["rcode"] == "NXDOMAIN"
    assert "explain?namespace=globex" in browser.current_url  # linkable


def test_an_edited_manifest_shows_up_without_a_reload(stack: Stack, browser: Any) -> None:
    browser.get(f"{stack.cp.admin_url}/console/tenant?name=acme")
    until(browser, "document.querySelector('tr[data-name=\"httpbin.acme.com\"]')",
          what="acme's table")
    browser.execute_script("window.__notReloaded = true")
    (stack.manifests / "console-edit.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ledger, namespace: acme}\n"
        "spec:\n  clusterIP: 100.66.7.7\n  ports: [{name: http, port: 80}]\n")
    row = "document.querySelector('tr[data-name=\"ledger.acme.svc.cluster.local\"]')"
    text = until(browser, f"{row} && {row}.innerText", what="the new Service in acme's table")
    assert "100.66.7.7" in text and "whitelist *.acme.svc.cluster.local" in text
    # the search narrows the table
    from selenium.webdriver.common.by import By

    browser.find_element(By.ID, "search").send_keys("ledger")
    until(browser, "document.querySelectorAll('#names tr').length === 1")
    # a broken file: the errors page names it, file and line, without a reload either
    browser.get(f"{stack.cp.admin_url}/console/errors")
    until(browser, "document.getElementById('main').innerText.length > 0")
    browser.execute_script("window.__notReloaded = true")
    (stack.manifests / "broken.yaml").write_text("kind: Service\nmetadata: {name: x\n  bad\n")
    text = until(browser, "document.querySelector('table.errors') && "
                          "document.querySelector('table.errors').innerText",
                 what="the broken file on the errors page")
    assert "broken.yaml:" in text
    assert browser.execute_script("return window.__notReloaded") is True
    (stack.manifests / "broken.yaml").unlink()
    until(browser, "document.getElementById('no-errors')", what="no errors left")
    (stack.manifests / "console-edit.yaml").unlink()


class PrefixProxy:
    """A reverse proxy serving the admin address under /dns/ (like an ingress with a path
    prefix that it strips), on loopback; GET only."""

    def __init__(self, upstream_port: int) -> None:
        port = upstream_port

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if not self.path.startswith("/dns/"):
                    self.send_error(404, "outside the prefix")
                    return
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", self.path[len("/dns"):], headers={"Accept": "*/*"})
                resp = conn.getresponse()
                body = resp.read()
                self.send_response(resp.status)
                for key in ("Content-Type", "Location", "Content-Security-Policy"):
                    if resp.getheader(key):
                        self.send_header(key, resp.getheader(key) or "")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                conn.close()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PrefixProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_console_works_behind_a_path_prefix(stack: Stack, browser: Any) -> None:
    with PrefixProxy(stack.cp.admin_port) as proxy:
        browser.get(f"http://127.0.0.1:{proxy.port}/dns/console")  # redirected to console/
        until(browser, "document.querySelectorAll('section.tenant').length === 4",
              what="the tenants page through the prefix")
        assert browser.current_url == f"http://127.0.0.1:{proxy.port}/dns/console/"
        browser.execute_script(f"{card('globex')}.querySelector('h2 a').click()")
        until(browser, "document.querySelector('#forwarding[data-transport]')",
              what="globex's view through the prefix")
        assert browser.current_url.endswith("/dns/console/tenant?name=globex")
        transport = browser.execute_script(
            "return document.getElementById('forwarding').dataset.transport")
        assert transport == "udp"  # plain DNS to the tenant's server
        # acme may forward nothing: its resolver is table-only (no server to name).
        browser.get(f"http://127.0.0.1:{proxy.port}/dns/console/tenant?name=acme")
        until(browser, "document.querySelector('#forwarding[data-transport]')",
              what="acme's view through the prefix")
        text = browser.execute_script("return document.getElementById('forwarding').innerText")
        assert "table-only tenant resolver" in text and "null" not in text, text
        browser.get(f"http://127.0.0.1:{proxy.port}/dns/docs")
        until(browser, "document.querySelector('.swagger-ui .info')",
              what="Swagger UI from local files through the prefix")


def test_screenshot(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """The README's picture: the tenants page with live traffic, denied and WARN queries."""
    loads = [DnsLoad(stack.envoys["acme"].dns_port, {"httpbin.acme.com": "100.66.185.144"},
                     qps=30, max_seconds=60).start(),
             DnsLoad(stack.envoys["globex"].dns_port,
                     {"api.globex.svc.cluster.local": "10.96.40.10",
                      "www.example.com": "203.0.113.10"}, qps=12, max_seconds=60).start()]
    try:
        for i in range(3):
            query(stack.envoys["acme"].dns_port, f"api{i}.foo.svc.cluster.local")
            query(stack.envoys["globex"].dns_port, f"cdn{i}.ads.tracker.example", timeout=3)
        browser.set_window_size(1400, 1560)
        browser.get(f"{stack.cp.admin_url}/console/")
        chart = f"{card('acme')}.querySelector('svg.chart')"
        until(browser, f"{chart} && {chart}.dataset.points >= 12 && {chart}.dataset.last > 20",
              timeout=60, what="a chart with 24 s of traffic")
        until(browser, f"{card('globex')}.querySelectorAll('ul.recent li').length >= 5")
        path = tmp_path / "console.png"
        assert browser.save_screenshot(str(path))
        assert path.stat().st_size > 20_000
        if os.environ.get("UPDATE_SCREENSHOT"):
            shutil.copyfile(path, SCREENSHOT)
    finally:
        for load in loads:
            load.stop()
    assert SCREENSHOT.exists(), "run with UPDATE_SCREENSHOT=1 to write docs/console.png"
