"""A real headless Chromium for the console's e2e tests (Debian's chromium +
chromium-driver, driven by selenium): ``chromium()`` starts one with a private profile,
``until`` waits for a JavaScript condition in the page, ``geometry`` reads elements'
boxes (getBoundingClientRect) for layout checks."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from controlplane._kit.localrun import wait_for
from tests.tools import require_tool

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000")


@contextmanager
def chromium() -> Iterator[Any]:
    """A selenium WebDriver over headless Chromium (skips the test without one)."""
    binary = require_tool("chromium", "apt-get install chromium")
    driver_path = require_tool("chromedriver", "apt-get install chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="dnscp-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.binary_location = binary
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def until(driver: Any, script: str, *, timeout: float = 20.0, what: str = "") -> Any:
    """Poll a JavaScript expression in the page until it is truthy; return its value."""
    return wait_for(lambda: driver.execute_script(f"return ({script});"), timeout=timeout,
                    interval=0.2, what=what or script)


def card(tenant: str) -> str:
    """The tenants page's card of ``tenant``, as a JavaScript expression."""
    return f'document.querySelector(\'section.tenant[data-tenant="{tenant}"]\')'


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Make the page's viewport (not the window) ``width`` x ``height`` CSS pixels."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def geometry(driver: Any, selector: str) -> list[dict[str, Any]]:
    """Every element matching ``selector``: its box (left, right, top, bottom, width,
    height) and whether its content overflows it (scrollWidth > clientWidth)."""
    return list(driver.execute_script("""
        return [...document.querySelectorAll(arguments[0])].map((e) => {
          const r = e.getBoundingClientRect();
          return {left: r.left, right: r.right, top: r.top + window.scrollY,
                  bottom: r.bottom + window.scrollY, width: r.width, height: r.height,
                  overflows: e.scrollWidth > e.clientWidth + 1, text: e.innerText.slice(0, 80)};
        });""", selector))
