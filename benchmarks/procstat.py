"""CPU time of processes from /proc (Linux), to report server and client CPU apart."""

from __future__ import annotations

import os
import resource
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process ``pid`` (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def own_cpu_seconds() -> float:
    """This process's CPU (every thread) and its finished children's."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    return me.ru_utime + me.ru_stime


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class CpuMeter:
    """CPU seconds of a set of processes between ``start`` and ``stop``."""

    def __init__(self, server: int, clients: list[int]) -> None:
        self.server, self.clients = server, clients
        self._s0 = self._c0 = 0.0

    def _clients(self) -> float:
        return sum(cpu_seconds(p) for p in self.clients) + own_cpu_seconds()

    def start(self) -> CpuMeter:
        self._s0, self._c0 = cpu_seconds(self.server), self._clients()
        return self

    def stop(self) -> tuple[float, float]:
        """(server CPU seconds, client CPU seconds) since ``start``."""
        return cpu_seconds(self.server) - self._s0, self._clients() - self._c0
