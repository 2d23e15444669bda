"""``make run`` beside something holding its fixed port: one line naming the port and the
process, exit code 1, no traceback, nothing started."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from controlplane._kit.demo import DEMO_UPSTREAM_PORT
from controlplane._kit.localrun import Process, wait_for
from controlplane.runtime.process import port_holders
from e2e.harness.paths import EXAMPLES, ROOT
from tests.tools import require_tool


def hold(port: int, *, udp: bool) -> socket.socket | None:
    """A socket bound to ``port`` on 127.0.0.1; None when some other process holds the port
    already, on either protocol (another make run on this machine, say)."""
    if port_holders(port, udp=True) or port_holders(port, udp=False):
        return None
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    if not udp:
        sock.listen()
    return sock


@pytest.mark.parametrize("proto", ["udp", "tcp"])
def test_make_run_says_which_process_holds_its_port(proto: str, tmp_path: Path) -> None:
    require_tool("dnsmasq", "apt-get install dnsmasq")
    held = hold(DEMO_UPSTREAM_PORT, udp=proto == "udp")
    demo = Process("demo", [sys.executable, "-m", "controlplane._kit.demo",
                            "--manifests", str(EXAMPLES)],
                   tmp_path / "demo.log", env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        demo.start()
        wait_for(lambda: not demo.alive(), timeout=60, what="make run to give up")
    finally:
        demo.stop()
        if held is not None:
            held.close()
    assert demo.proc is not None and demo.proc.returncode == 1, demo.log()
    lines = demo.log().strip().splitlines()
    assert len(lines) == 1, demo.log()  # one line: no traceback, nothing started
    assert lines[0].startswith(f"make run: port {DEMO_UPSTREAM_PORT}/"), lines[0]
    assert "(dnsmasq, the DNS server policy globex forwards to) is taken by " in lines[0]
    if held is not None:  # else whoever held it already is named
        assert lines[0].startswith(f"make run: port {DEMO_UPSTREAM_PORT}/{proto} ("), lines[0]
        assert f" is taken by pid {os.getpid()} (" in lines[0], lines[0]
