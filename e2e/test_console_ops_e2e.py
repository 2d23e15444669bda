"""The console shows trouble at a glance (issue 22), in a real headless Chromium against
make-run-like processes (the control plane on a copy of examples/, real Envoys streaming
their counters and query records, a tenant DNS server):

- stale data is marked: with the control plane stopped every card goes grey with the age
  of its data; a sidecar whose counters stop (its Envoy paused, then stopped) is marked
  stale with their age;
- the layout holds at 1024 and 1400 px (element geometry: no overlap, nothing past the
  right edge);
- the words: an unknown tenant, singular and plural, the resolver's internal zones, the
  errors page;
- per tenant the top queried and denied names and the NXDOMAIN/SERVFAIL rates, the query
  log with its filters against the queries sent, and one click from a denied row to
  explain with the question filled in.

Screenshots of each page go to docs/console/ with ``UPDATE_SCREENSHOT=1``."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlplane._kit.localrun import ControlPlane
from e2e.harness.browser import card, chromium, set_viewport, until
from e2e.harness.console_stack import ConsoleStack as Stack
from e2e.harness.console_stack import console_stack
from e2e.harness.dnsquery import query
from e2e.harness.paths import EXAMPLES
from e2e.harness.sidecars import FastFlushEnvoy

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "console"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with console_stack(tmp_path_factory.mktemp("console-ops"), ("acme", "globex")) as started:
        yield started


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def shot(browser: Any, name: str, tmp_path: Path) -> None:
    """A screenshot of the page as it is now; kept in docs/console/ with UPDATE_SCREENSHOT."""
    path = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(path))
    if os.environ.get("UPDATE_SCREENSHOT"):
        SHOTS.mkdir(exist_ok=True)
        shutil.copyfile(path, SHOTS / f"{name}.png")


def row(node: str) -> str:
    return f"document.querySelector('tr[data-node=\"{node}\"]')"


def test_a_sidecar_whose_counters_stop_is_marked_stale(stack: Stack, browser: Any,
                                                        tmp_path: Path) -> None:
    """Paused (its stream open, no counters): stale with the counters' age, still
    connected; resumed: fresh again; stopped: disconnected and stale."""
    extra = FastFlushEnvoy(node_id="extra.acme", namespace="acme", labels={"app": "sleep"},
                           xds_address=stack.cp.xds_address, workdir=stack.workdir).start()
    try:
        browser.get(f"{stack.cp.admin_url}/console/")
        until(browser, f"{row('extra.acme')} && {row('extra.acme')}.querySelector("
                       "'[data-state=current]') && !"
                       f"{row('extra.acme')}.dataset.stale && {row('extra.acme')}.dataset.age",
              what="the extra sidecar, current, with counters")
        assert extra.process is not None
        pid = extra.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            text = until(browser, f"{row('extra.acme')}.dataset.stale && "
                                  f"{row('extra.acme')}.innerText", timeout=40,
                         what="the paused sidecar marked stale")
            age = float(browser.execute_script(f"return {row('extra.acme')}.dataset.age"))
            assert age >= 15, age  # DnsTraffic.stale_after: three missed 5 s flushes
            assert "stale:" in text and "s ago" in text, text
            # the neighbour keeps reporting: not stale
            assert not browser.execute_script(f"return {row('sleep.acme')}.dataset.stale")
            shot(browser, "stale-sidecar", tmp_path)
        finally:
            os.kill(pid, signal.SIGCONT)
        until(browser, f"!{row('extra.acme')}.dataset.stale", timeout=30,
              what="fresh again once it reports")
    finally:
        extra.stop()
    text = until(browser, f"{row('extra.acme')} && {row('extra.acme')}.querySelector("
                          f"'[data-state=disconnected]') && {row('extra.acme')}.dataset.stale "
                          f"&& {row('extra.acme')}.innerText", timeout=30,
                 what="the stopped sidecar: disconnected and stale")
    assert "disconnected" in text and "stale:" in text, text


def test_a_stopped_control_plane_greys_every_card_with_its_age(
        tmp_path: Path, browser: Any) -> None:
    """Its own control plane (the module's stack keeps running for the other tests)."""
    manifests = tmp_path / "manifests"
    shutil.copytree(EXAMPLES, manifests)
    cp = ControlPlane(manifests, tmp_path).start()
    try:
        browser.get(f"{cp.admin_url}/console/")
        until(browser, f"{card('acme')} && {card('acme')}.querySelector('[data-condition=Ready]')",
              what="the tenants page, live")
        assert not browser.execute_script("return document.body.classList.contains('stale')")
    finally:
        cp.stop()
    until(browser, "document.body.classList.contains('stale')", what="the page marked stale")
    notes = until(browser, "[...document.querySelectorAll('section.card')].every("
                           "c => /stale: data from .*, [3-9] s old/.test(c.innerText)) && "
                           "[...document.querySelectorAll('section.card .stale-note')]"
                           ".map(n => n.innerText)", what="every card with its data's age")
    assert len(notes) == 5, notes  # the overview and the four tenants
    banner = browser.execute_script("return document.getElementById('stale-banner').innerText")
    assert "cannot reach the control plane" in banner, banner
    styles = browser.execute_script(f"""
        const c = {card('acme')};
        const badge = c.querySelector('[data-condition=Ready]');
        return [getComputedStyle(c).opacity, getComputedStyle(c).filter,
                getComputedStyle(badge).color];""")
    assert float(styles[0]) < 1 and "grayscale" in styles[1], styles
    assert styles[2] == "rgb(107, 114, 128)", styles  # grey, no longer green
    shot(browser, "stale-control-plane", tmp_path)


# Every layout problem on the page, from element geometry: the page scrolls sideways, an
# element ends past the viewport's right edge, a card's sidecar table and its chart
# overlap, a table is wider than its box (cut off or scrolled), or a recent-query line
# lost its time or sidecar (zero width, or outside its line).
LAYOUT_PROBLEMS = """
const problems = [];
const vw = document.documentElement.clientWidth;
const box = (e) => e.getBoundingClientRect();
const overlap = (a, b) => a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1
  && b.top < a.bottom - 1;
if (document.documentElement.scrollWidth > vw + 1)
  problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
for (const e of document.querySelectorAll('main *')) {
  const r = box(e);
  if (r.width > 0 && r.right > vw + 1 && !e.closest('.table-wrap'))
    problems.push(`${e.tagName}.${e.className} ends at ${Math.round(r.right)} > ${vw}`);
}
for (const c of document.querySelectorAll('section.tenant')) {
  const name = c.dataset.tenant;
  const table = c.querySelector('table.sidecars');
  const chart = c.querySelector('svg.chart');
  if (table && chart && overlap(box(table), box(chart)))
    problems.push(`${name}: the sidecar table overlaps the chart`);
  if (table) {
    const wrap = table.parentElement;
    if (table.scrollWidth > wrap.clientWidth + 1 || box(table).right > box(wrap).right + 1)
      problems.push(`${name}: the sidecar table is cut: ${table.scrollWidth} > ${wrap.clientWidth}`);
    const last = [...table.querySelectorAll('th')].pop();
    if (box(last).right > Math.min(box(c).right, vw) + 1)
      problems.push(`${name}: the last column ends past the card`);
  }
  for (const li of c.querySelectorAll('ul.recent li')) {
    for (const field of ['time', 'node']) {
      const f = li.querySelector(`[data-field=${field}]`);
      const r = f && box(f);
      if (!f || r.width < 8 || r.right > box(li).right + 1 || r.bottom > box(li).bottom + 1
          || f.scrollWidth > f.clientWidth + 1)
        problems.push(`${name}: a recent line lost its ${field}: ${li.innerText}`);
    }
  }
}
for (const t of document.querySelectorAll('main table')) {
  const wrap = t.closest('.table-wrap');
  if (wrap && t.scrollWidth > wrap.clientWidth + 1)
    problems.push(`a ${t.className} table is wider than its box (${t.scrollWidth} > ${wrap.clientWidth} px)`);
}
return problems;
"""


def denied_and_warn_queries(stack: Stack) -> None:
    for i in range(3):
        assert query(stack.envoys["acme"].dns_port, f"api{i}.foo.svc.cluster.local")[0] == \
            "NXDOMAIN"
        query(stack.envoys["globex"].dns_port, f"cdn{i}.ads.tracker.example", timeout=3)
    assert query(stack.envoys["globex"].dns_port, "www.example.com", timeout=3)[0] == "NOERROR"


@pytest.mark.parametrize("width", [1024, 1400])
def test_the_layout_holds_at_1024_and_1400_px(stack: Stack, browser: Any, width: int,
                                               tmp_path: Path) -> None:
    denied_and_warn_queries(stack)
    set_viewport(browser, width, 1000)
    try:
        browser.get(f"{stack.cp.admin_url}/console/")
        assert browser.execute_script("return document.documentElement.clientWidth") <= width
        for tenant in ("acme", "globex"):
            until(browser, f"{card(tenant)} && {card(tenant)}.querySelectorAll("
                           "'ul.recent li').length >= 3 && "
                           f"{card(tenant)}.querySelector('table.sidecars tbody tr')",
                  what=f"{tenant}'s recent queries and sidecars")
        problems = browser.execute_script(LAYOUT_PROBLEMS)
        assert problems == [], problems
        side_by_side = browser.execute_script(f"""
            const c = {card('acme')};
            return c.querySelector('table.sidecars').getBoundingClientRect().right
                <= c.querySelector('svg.chart').getBoundingClientRect().left;""")
        assert side_by_side is (width >= 1400)  # one above the other when narrow
        shot(browser, f"tenants-{width}", tmp_path)
        for page in ("tenant?name=globex", "errors", "queries?tenant=acme"):
            browser.get(f"{stack.cp.admin_url}/console/{page}")
            until(browser, "document.body.dataset.updated", what=f"{page} loaded")
            problems = browser.execute_script(LAYOUT_PROBLEMS)
            assert problems == [], (page, problems)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_the_words_an_operator_reads(stack: Stack, browser: Any, tmp_path: Path) -> None:
    base = f"{stack.cp.admin_url}/console"
    # an unknown tenant: said so, with the tenants there are (not the internal default)
    browser.get(f"{base}/tenant?name=nope")
    text = until(browser, "document.getElementById('no-tenant') && "
                          "document.getElementById('no-tenant').innerText",
                 what="the no-tenant page")
    assert "No tenant named “nope”" in text and "404" not in text, text
    links = browser.execute_script(
        "return [...document.querySelectorAll('#no-tenant a')].map(a => a.innerText)")
    assert links == ["acme", "foo", "globex", "shakes"], links
    assert not browser.execute_script("return document.body.classList.contains('stale')")
    assert "cannot reach" not in browser.execute_script(
        "return document.getElementById('status').innerText")
    shot(browser, "no-tenant", tmp_path)
    # singular and plural
    browser.get(f"{base}/")
    counts = until(browser, f"{card('globex')} && {card('foo')} && [{card('globex')}, "
                            f"{card('foo')}].map(c => c.querySelector('[data-field=counts]')"
                            ".innerText)", what="the cards' counts")
    assert counts == ["6 names · 1 sidecar", "2 names · 0 sidecars"], counts
    assert "_default" not in browser.execute_script("return document.body.innerText")
    # the resolver's internal triggers are not listed as the tenant's forwarding rules
    browser.get(f"{base}/tenant?name=globex")
    rest = until(browser, "document.querySelector('#forwarding [data-field=everything-else]')"
                          " && document.querySelector('#forwarding [data-field=everything-else]')"
                          ".innerText", what="globex's forwarding")
    assert rest == ("Everything else is forwarded (plain DNS) under defaultAction WARN, and "
                    "each such query is reported as WARN."), rest
    rules = browser.execute_script(
        "return [...document.querySelectorAll('table.rules tbody tr')].map(r => r.innerText)")
    assert rules and not any("defaultAction" in r for r in rules), rules
    assert any("*.tracker.example" in r and "blacklist" in r for r in rules), rules
    assert browser.execute_script("return !document.querySelector('details.internal').open")
    shot(browser, "tenant-globex", tmp_path)
    # the errors page: the path once, the time, the lines, and the tab named
    browser.get(f"{base}/errors")
    until(browser, "document.body.dataset.updated")
    (stack.manifests / "tabbed.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n")
    try:
        row = until(browser, "document.querySelector('tr[data-name$=\"tabbed.yaml\"]') && "
                             "document.querySelector('tr[data-name$=\"tabbed.yaml\"]').innerText",
                    what="the tabbed file on the errors page")
        assert row.count("tabbed.yaml") == 1, row
        assert "manifests/tabbed.yaml:4" in row and "the character there is a tab" in row, row
        assert "s ago" in row, row  # since when
        snippet = browser.execute_script(
            "const r = document.querySelector('tr[data-name$=\"tabbed.yaml\"]');"
            "return [r.nextElementSibling.innerText, "
            "r.nextElementSibling.querySelectorAll('.tab').length]")
        assert snippet[0].splitlines()[:2] == ["3 | metadata:", "4 | \u2192name: x"], snippet
        assert snippet[1] == 1
        shot(browser, "errors", tmp_path)
    finally:
        (stack.manifests / "tabbed.yaml").unlink()
    until(browser, "document.getElementById('no-errors')", what="no errors left")


# What test_top_names_and_the_query_log send through acme's sidecar: (name, type, times,
# what Envoy answers, the policy's action). Denied names carry a tag so no other test's
# queries count with them.
TAG = "t22"
SENT = [
    ("httpbin.acme.com", "A", 6, "NOERROR", "allow"),
    ("httpbin.acme.com", "AAAA", 1, "NOERROR", "allow"),
    ("nothere.acme.com", "A", 1, "NXDOMAIN", "allow"),  # whitelisted, in no table
    (f"blocked-a-{TAG}.foo.svc.cluster.local", "A", 5, "NXDOMAIN", "deny"),
    (f"blocked-b-{TAG}.example.org", "A", 3, "NXDOMAIN", "deny"),
]


def rows(browser: Any) -> list[dict[str, str]]:
    return list(browser.execute_script(
        "return [...document.querySelectorAll('#queries tr')].map(r => ({...r.dataset}))"))


def test_top_names_and_the_query_log(stack: Stack, browser: Any, tmp_path: Path) -> None:
    """Real queries through acme's sidecar: the tenant page ranks them, the query log's
    filters find exactly what was sent, and a denied row opens explain filled in."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    port = stack.envoys["acme"].dns_port
    for name, qtype, times, rcode, _ in SENT:
        for _ in range(times):
            assert query(port, name, qtype)[0] == rcode, (name, qtype)
    sent_denied = sum(times for *_, times, _, action in SENT if action == "deny")
    # the tenant page: the most queried and the most denied names, the rcode rates
    browser.get(f"{stack.cp.admin_url}/console/tenant?name=acme")
    denied = until(browser, "(() => { const r = [...document.querySelectorAll("
                            "'#top-denied tr')].map(r => [r.dataset.name, +r.dataset.count]);"
                            " return r.length >= 2 && r[0][1] === 5 && r; })()",
                   what="acme's most denied names", timeout=30)
    assert denied[:2] == [[f"blocked-a-{TAG}.foo.svc.cluster.local", 5],
                          [f"blocked-b-{TAG}.example.org", 3]], denied
    queried = browser.execute_script("return [...document.querySelectorAll('#top-queried tr')]"
                                     ".map(r => [r.dataset.name, +r.dataset.count])")
    assert queried[:2] == [["httpbin.acme.com", 7],
                           [f"blocked-a-{TAG}.foo.svc.cluster.local", 5]], queried
    nxdomain = browser.execute_script(
        "return +document.querySelector('#answers [data-rcode=NXDOMAIN]').dataset.count")
    assert nxdomain >= 1 + sent_denied  # and the other tests' denied names in the minute
    rate = float(browser.execute_script(
        "return document.querySelector('#answers [data-rcode=NXDOMAIN]').dataset.rate"))
    assert rate > 0
    assert browser.execute_script(
        "return document.querySelector('#answers [data-rcode=SERVFAIL]').dataset.count") == "0"
    box = browser.execute_script("return document.getElementById('top-box').innerText")
    assert "null" not in box and "undefined" not in box, box
    shot(browser, "tenant-top-names", tmp_path)
    # the query log: each filter against what was sent
    browser.get(f"{stack.cp.admin_url}/console/queries?tenant=acme&name={TAG}")
    until(browser, f"document.querySelectorAll('#queries tr').length === {sent_denied}",
          what="the tagged queries in the log")
    assert {r["action"] for r in rows(browser)} == {"deny"}

    def shown(**filters: str) -> list[dict[str, str]]:
        for key in ("node", "name"):
            box = browser.find_element(By.ID, f"q-{key}")
            box.clear()
            if filters.get(key):
                box.send_keys(filters[key])
        for key in ("tenant", "type", "action", "rcode", "last"):
            Select(browser.find_element(By.ID, f"q-{key}")).select_by_value(
                filters.get(key, ""))
        want = {k: v for k, v in filters.items() if v}
        until(browser, f"new URLSearchParams(location.search).toString() === "
                       f"{urllib.parse.urlencode(want)!r}",
              what=f"the URL carries {want}")
        browser.execute_script("document.body.dataset.updated = ''")
        until(browser, "document.body.dataset.updated", what="a refresh after the change")
        return rows(browser)

    got = shown(tenant="acme", name="httpbin.acme.com", rcode="NOERROR")
    assert [(r["name"], r["type"]) for r in got].count(("httpbin.acme.com", "A")) == 6
    assert [r["type"] for r in got].count("AAAA") == 1 and len(got) == 7, got
    got = shown(tenant="acme", name="httpbin.acme.com", type="AAAA")
    assert [(r["name"], r["type"], r["action"]) for r in got] == [
        ("httpbin.acme.com", "AAAA", "allow")]
    got = shown(tenant="acme", name="acme.com", action="allow", rcode="NXDOMAIN")
    assert [r["name"] for r in got] == ["nothere.acme.com"], got
    got = shown(tenant="acme", name=TAG, action="deny", last="60")
    assert sorted(r["name"] for r in got) == sorted(
        [f"blocked-a-{TAG}.foo.svc.cluster.local"] * 5 + [f"blocked-b-{TAG}.example.org"] * 3)
    assert {r["node"] for r in got} == {"sleep.acme"}
    assert shown(tenant="acme", node="sleep.globex", name=TAG) == []
    assert shown(tenant="globex", name=TAG) == []
    got = shown(tenant="acme", node="sleep.acme", name=f"blocked-b-{TAG}")
    assert len(got) == 3
    shot(browser, "query-log", tmp_path)
    # one click from a denied row to explain, the question filled in
    browser.find_element(By.CSS_SELECTOR, "#queries tr[data-action=deny] a.explain-link").click()
    until(browser, "document.getElementById('explain-result')", what="explain's answer")
    fields = browser.execute_script(
        "return ['namespace', 'labels', 'name', 'type'].map(k => "
        "document.getElementById('f-' + k).value)")
    assert fields == ["acme", "app=sleep", f"blocked-b-{TAG}.example.org", "A"], fields
    result = browser.execute_script("const r = document.getElementById('explain-result');"
                                    "return [r.dataset.rcode, r.innerText]")
    assert result[0] == "NXDOMAIN" and "deny" in result[1], result
    shot(browser, "explain-from-query-log", tmp_path)


def test_the_overview_config_history_and_chart(stack: Stack, browser: Any,
                                              tmp_path: Path) -> None:
    """All tenants in one table; one sidecar's pushes and ACKs, live; the chart's clock-time
    axis and its hover values."""
    browser.get(f"{stack.cp.admin_url}/console/")
    cells = until(browser, "(() => { const r = document.querySelector("
                           "'table.overview tr[data-tenant=acme]'); return r && "
                           "['sidecars', 'nack', 'stale'].map(f => "
                           "r.querySelector(`[data-field=${f}]`).innerText); })()",
                  what="acme's overview row")
    stale = browser.execute_script(f"return {card('acme')}.querySelectorAll("
                                   "'tr[data-stale]').length")  # extra.acme, if still held
    assert cells == ["1 / 1", "0", str(stale)], cells  # current / connected, NACK, stale
    tenants = browser.execute_script("return [...document.querySelectorAll("
                                     "'table.overview tbody tr')].map(r => r.dataset.tenant)")
    assert tenants == ["acme", "foo", "globex", "shakes"], tenants
    # the chart: times on the axis, every point's values on hover
    chart = f"{card('acme')}.querySelector('svg.chart')"
    axis = until(browser, f"{chart} && {chart}.dataset.points >= 3 && [...{chart}"
                          ".querySelectorAll('text.time')].map(t => t.textContent)",
                 what="acme's chart with points")
    assert len(axis) == 3 and all(re.fullmatch(r"\d\d:\d\d:\d\d( [AP]M)?", a) for a in axis), axis
    hover = browser.execute_script(
        f"const c = {chart}; return [c.querySelectorAll('rect.hover').length, "
        "+c.dataset.points, c.querySelector('rect.hover:last-of-type title').textContent]")
    assert hover[0] == hover[1], hover
    assert "queries/s" in hover[2] and "denied" in hover[2], hover
    shot(browser, "overview", tmp_path)
    # one sidecar's config history: what it was pushed and what it acked, live
    browser.get(f"{stack.cp.admin_url}/console/sidecar?node=sleep.acme")
    until(browser, "document.querySelector('#history tr[data-event=ack][data-type=lds]')",
          what="sleep.acme's LDS ACK")
    before = browser.execute_script("return document.querySelectorAll('#history tr').length")
    events = browser.execute_script(
        "return [...document.querySelectorAll('#history tr')].map(r => r.dataset.event)")
    assert {"sent", "ack"} <= set(events) and "nack" not in events, events
    (stack.manifests / "history-edit.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ledger2, namespace: acme}\n"
        "spec:\n  clusterIP: 100.66.7.8\n  ports: [{name: http, port: 80}]\n")
    try:
        until(browser, f"document.querySelectorAll('#history tr').length >= {before} + 2",
              what="the edit's push and ACK in the history", timeout=30)
        newest = browser.execute_script(
            "return [...document.querySelectorAll('#history tr')].slice(0, 2)"
            ".map(r => r.dataset.event)")
        assert sorted(newest) == ["ack", "sent"], newest
        shot(browser, "sidecar-history", tmp_path)
    finally:
        (stack.manifests / "history-edit.yaml").unlink()


def sidecar_row(node: str) -> str:
    return f"document.querySelector('#sidecars-box tr[data-node=\"{node}\"]')"


def top_of(browser: Any, node: str) -> list[list[Any]]:
    return list(browser.execute_script(
        f"return [...{sidecar_row(node)}.querySelectorAll('.top-name')]"
        ".map(s => [s.dataset.name, +s.dataset.count])"))


def test_upstream_per_sidecar_and_chart_range(stack: Stack, browser: Any,
                                              tmp_path: Path) -> None:
    """globex's resolver forwards to its dnsmasq: its latency shows as positive ms, the
    SERVFAIL it answers for a name the upstream refuses as an upstream error; two globex
    sidecars asked different names: each row lists its own, with its rates; the chart's
    range narrows and widens the points drawn."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    other = FastFlushEnvoy(node_id="other.globex", namespace="globex",
                           labels={"app": "other"}, xds_address=stack.cp.xds_address,
                           workdir=stack.workdir).start()
    try:
        sleep_port, other_port = stack.envoys["globex"].dns_port, other.dns_port
        # forwarded: one the upstream answers, one it refuses (unbound answers SERVFAIL,
        # which Envoy passes on as NXDOMAIN)
        assert query(sleep_port, "www.example.com", timeout=3)[0] == "NOERROR"
        assert query(sleep_port, f"gone-{TAG}.example.net", timeout=5)[0] in (
            "NXDOMAIN", "SERVFAIL")
        # sleep.globex's counts above the other tests' names (those count 3 at most): the
        # row shows a sidecar's 5 most queried
        sent = {"sleep.globex": [("api.globex.svc.cluster.local", 6),
                                 (f"side-a-{TAG}.foo.svc.cluster.local", 5)],
                "other.globex": [("db.globex.svc.cluster.local", 3),
                                 (f"side-b-{TAG}.foo.svc.cluster.local", 1)]}
        ports = {"sleep.globex": sleep_port, "other.globex": other_port}
        for car, names in sent.items():
            for name, times in names:
                for _ in range(times):
                    query(ports[car], name, timeout=3)
        browser.get(f"{stack.cp.admin_url}/console/tenant?name=globex")
        # the upstream: positive ms, the SERVFAIL counted
        latency = until(browser, "(() => { const e = document.querySelector("
                                 "'#upstream [data-field=upstream-ms]'); return e && "
                                 "e.dataset.value && +e.dataset.value; })()",
                        what="globex's upstream latency", timeout=30)
        assert latency > 0, latency
        # read by the control plane once a second: wait for the refused name's SERVFAIL
        until(browser, "+document.querySelector('#upstream [data-field=upstream-errors]')"
                       ".dataset.value >= 1", what="globex's upstream error", timeout=30)
        text = browser.execute_script("return document.getElementById('upstream').innerText")
        assert re.search(r"\d+(\.\d)? ms average", text), text
        # the last minute: the two forwarded names were asked within it
        minute = until(browser, "(() => { const e = document.getElementById('upstream-minute');"
                                " return e && e.dataset.queries && +e.dataset.queries >= 2 &&"
                                " e.innerText; })()",
                       what="globex's last minute upstream", timeout=30)
        assert re.search(r"Last \d+ s: \d+ queries, \d+ answered by the upstream", minute), minute
        # each sidecar its own names
        until(browser, f"{sidecar_row('other.globex')} && "
                       f"{sidecar_row('other.globex')}.querySelectorAll('.top-name').length >= 2",
              what="other.globex's top names", timeout=30)
        assert top_of(browser, "other.globex") == [
            ["db.globex.svc.cluster.local", 3], [f"side-b-{TAG}.foo.svc.cluster.local", 1]]
        mine = dict(top_of(browser, "sleep.globex"))
        assert top_of(browser, "sleep.globex")[:2] == [
            ["api.globex.svc.cluster.local", 6], [f"side-a-{TAG}.foo.svc.cluster.local", 5]]
        assert not {"db.globex.svc.cluster.local",
                    f"side-b-{TAG}.foo.svc.cluster.local"} & set(mine), mine
        # the rates per sidecar: denied queries to other.globex only, until both show
        stop = threading.Event()
        count = [0]

        def steady() -> None:
            while not stop.is_set():
                query(other_port, f"side-b-{TAG}.foo.svc.cluster.local", timeout=3)
                count[0] += 1
                stop.wait(0.1)
        sender = threading.Thread(target=steady, daemon=True)
        sender.start()
        try:
            rates = until(browser, f"(() => {{ const r = {sidecar_row('other.globex')};"
                                   " const v = (f) => +r.querySelector(`[data-field=${f}]`)"
                                   ".dataset.value; return v('denied') > 1 && "
                                   "v('queries') > 1 && [v('queries'), v('denied')]; })()",
                          what="other.globex's denied/s", timeout=30)
        finally:
            stop.set()
            sender.join()
        # at most 10/s sent; queries/s from Envoy's counters and denied/s from the query
        # log are taken over different seconds, so neither bounds the other exactly
        assert 1 < rates[0] <= 20 and 1 < rates[1] <= 20, rates
        assert float(browser.execute_script(
            f"return {sidecar_row('sleep.globex')}.querySelector('[data-field=denied]')"
            ".dataset.value")) < rates[1]
        until(browser, f"{sidecar_row('other.globex')}.querySelector('.top-name')"
                       f".dataset.count === '{1 + count[0]}'",
              what="other.globex's denied name counted once per query", timeout=30)
        assert top_of(browser, "other.globex")[0][0] == f"side-b-{TAG}.foo.svc.cluster.local"
        rows_text = browser.execute_script(
            "return document.getElementById('sidecars-box').innerText")
        assert "db.globex.svc.cluster.local (3)" in rows_text, rows_text
        assert "[object" not in rows_text and "undefined" not in rows_text, rows_text
        browser.execute_script("document.getElementById('upstream-box').scrollIntoView();"
                               "window.scrollBy(0, -60)")
        shot(browser, "tenant-upstream-sidecars", tmp_path)
        # the chart's range
        chart = "document.querySelector('#summary svg.chart')"
        Select(browser.find_element(By.ID, "range")).select_by_value("60")
        until(browser, f"{chart}.dataset.range === '60' && +{chart}.dataset.points >= 2",
              what="the one-minute chart")
        first = float(browser.execute_script(f"return +{chart}.dataset.first"))
        now = float(browser.execute_script("return Date.now() / 1000"))
        assert now - 65 <= first <= now, (first, now)
        short = int(browser.execute_script(f"return +{chart}.dataset.points"))
        assert "range=60" in browser.current_url
        Select(browser.find_element(By.ID, "range")).select_by_value("900")
        until(browser, f"{chart}.dataset.range === '900'", what="the 15-minute chart")
        assert int(browser.execute_script(f"return +{chart}.dataset.points")) >= short
        options = browser.execute_script(
            "return [...document.querySelectorAll('#range option')].map(o => o.textContent)")
        assert options == ["last 1 min", "last 5 min", "last 15 min", "last 1 h"], options
        # the overview: the same latency and errors in globex's row
        browser.get(f"{stack.cp.admin_url}/console/")
        cells = until(browser, "(() => { const r = document.querySelector("
                               "'table.overview tr[data-tenant=globex]'); return r && "
                               "['upstream-ms', 'upstream-errors', 'cache-hits'].map(f => "
                               "r.querySelector(`[data-field=${f}]`).dataset.value); })()",
                      what="globex's overview row")
        assert float(cells[0]) > 0 and int(cells[1]) >= 1 and 0 <= float(cells[2]) <= 1, cells
    finally:
        other.stop()
