"""The tenant resolver's policy gate (``resources/resolver_gate.py.tmpl`` as
``translate/unbound.gate_script`` fills it in), run in plain Python against a control
plane's unix socket that answers late, early or never: the gate waits the policy's timeout
plus the grace for the control plane, and only then decides by the failure mode."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.dns.views import Forwarding, PolicyGate, Upstream
from controlplane.resolvers.pool import GATE_TEMPLATE
from controlplane.translate.unbound import GATE_GRACE_MS, ResolverPaths, gate_script

TIMEOUT_MS = 200


class SlowControlPlane:
    """Answers every question ``allow 30`` after ``delay`` seconds; counts them."""

    def __init__(self, path: Path, delay: float) -> None:
        self.delay, self.asked = delay, 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            while conn.recv(256):
                self.asked += 1
                time.sleep(self.delay)
                try:
                    conn.sendall(b"allow 30.0\n")
                except OSError:
                    return

    def close(self) -> None:
        self.sock.close()


def gate(tmp_path: Path, *, failure_open: bool = False) -> types.ModuleType:
    paths = ResolverPaths(directory=str(tmp_path), listen=Upstream("127.0.0.1", 5300),
                          control_socket=str(tmp_path / "control.sock"),
                          rpz_file=str(tmp_path / "policy.rpz"),
                          gate_socket=str(tmp_path / "gate.sock"))
    fwd = Forwarding(server=Upstream("192.0.2.1", 53),
                     gate=PolicyGate(timeout_ms=TIMEOUT_MS, failure_open=failure_open,
                                     default_ttl_seconds=30))
    module = types.ModuleType("gate")
    exec(gate_script("t", fwd, paths, GATE_TEMPLATE.read_text()), module.__dict__)  # noqa: S102
    return module


def close(g: types.ModuleType) -> None:
    """The connection the gate keeps to the control plane (one per unbound thread)."""
    sock = getattr(g._local, "sock", None)
    if sock is not None:
        sock.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory: a unix socket's path holds at most 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="gate-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_control_plane_answering_after_the_timeout_but_within_the_grace_is_heard(
        socket_dir: Path) -> None:
    """The control plane answers at the policy's timeout at the latest; on a loaded
    machine its answer may queue a little longer. 100 ms past the timeout is still its
    answer, not the gate's failure mode (closed: a denial)."""
    cp = SlowControlPlane(socket_dir / "gate.sock", delay=TIMEOUT_MS / 1000 + 0.1)
    try:
        g = gate(socket_dir)
        assert g.allowed("late.example.com", "A") is True
        assert cp.asked == 1
    finally:
        close(g)
        cp.close()


def test_a_control_plane_that_never_answers_gets_the_failure_mode_within_two_tries(
        socket_dir: Path) -> None:
    cp = SlowControlPlane(socket_dir / "gate.sock", delay=30)
    try:
        g = gate(socket_dir)
        started = time.monotonic()
        assert g.allowed("hung.example.com", "A") is False  # closed
        # two tries, each waiting the timeout and the grace (no upper bound asserted: a
        # loaded machine only makes it later)
        assert time.monotonic() - started >= 2 * (TIMEOUT_MS + GATE_GRACE_MS) / 1000 - 0.05
        assert g.allowed("hung.example.com", "A") is False  # remembered for a second
        assert cp.asked == 2
    finally:
        close(g)
        cp.close()


def test_no_control_plane_at_all_gets_the_failure_mode(
        socket_dir: Path) -> None:
    assert gate(socket_dir, failure_open=True).allowed("nobody.example.com", "A") is True
    assert gate(socket_dir).allowed("nobody.example.com", "A") is False
