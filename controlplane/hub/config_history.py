"""What each sidecar was sent and what it said back: the latest pushes, ACKs and NACKs
(with Envoy's reason), for the console's per-sidecar config history.

Two rings, bounded whatever the fleet: ``keep`` events of every kind (a push to every
stream of a big fleet fills it with that push, so a quiet sidecar's older events leave
it), and ``keep_nacks`` NACKs on their own, so a rejection stays visible long after the
pushes that followed it. A sidecar's history is the events of its node id in either;
nothing is kept per stream.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConfigEvent:
    time: float
    node: str
    stream: str
    event: str  # sent, ack, nack
    type: str  # lds, cds, rds, ... (translate.types.SHORT_NAMES)
    version: str
    error: str = ""  # a NACK's reason, from Envoy


class ConfigHistory:
    """Thread-safe: the ADS streams add, the admin API reads."""

    def __init__(self, *, keep: int = 10_000, keep_nacks: int = 1000) -> None:
        self.events: collections.deque[ConfigEvent] = collections.deque(maxlen=keep)
        self.nacks: collections.deque[ConfigEvent] = collections.deque(maxlen=keep_nacks)
        self._lock = threading.Lock()

    def add(self, event: ConfigEvent) -> None:
        with self._lock:
            self.events.append(event)
            if event.event == "nack":
                self.nacks.append(event)

    def of(self, node: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """``node``'s events, newest first (a NACK once, though it is in both rings)."""
        with self._lock:
            found = {id(e): e for ring in (self.nacks, self.events) for e in ring
                     if e.node == node}
        ordered = sorted(found.values(), key=lambda e: e.time, reverse=True)
        return [asdict(e) for e in ordered[:limit]]
