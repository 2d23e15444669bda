"""The control plane as a process: clean stop on SIGTERM, non-zero exit when a task dies."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

from controlplane._kit.localrun import ControlPlane, wait_for


def test_sigterm_stops_cleanly(manifests: Path,
                               start_control_plane: Callable[..., ControlPlane]) -> None:
    cp = start_control_plane(manifests)
    assert cp.get("/readyz")["ready"] is True
    assert cp.stop() == 0
    assert "control plane stopped" in cp.process.log()  # type: ignore[union-attr]


def test_admin_port_in_use_exits_non_zero(manifests: Path, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cp = ControlPlane(manifests, tmp_path)
        cp.admin_port = busy.getsockname()[1]
        cp.start(wait_ready=False)
        try:
            assert cp.process is not None
            wait_for(lambda: not cp.process.alive(), timeout=20,  # type: ignore[union-attr]
                     what="the control plane to exit")
            assert cp.process.proc is not None and cp.process.proc.returncode != 0
            assert "admin" in cp.process.log()
        finally:
            cp.stop()


def test_missing_source_directory_is_not_ready(tmp_path: Path) -> None:
    cp = ControlPlane(tmp_path / "nope", tmp_path)
    try:
        cp.start(wait_ready=False)
        body = wait_for(lambda: _readyz(cp), timeout=20, what="/readyz to answer")
        assert body["ready"] is False
        assert "does not exist" in body["reason"]
    finally:
        cp.stop()


def _readyz(cp: ControlPlane) -> dict[str, object] | None:
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{cp.admin_url}/readyz", timeout=1) as r:  # noqa: S310
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:
        return dict(json.loads(e.read()))
