"""``ViewKey``: which Envoys share one snapshot (a tenant and the listener addresses)."""

from __future__ import annotations

from typing import NamedTuple

from controlplane.core.workload import DEFAULT_HOP_HOST, DEFAULT_HOP_PORT


class ViewKey(NamedTuple):
    """Envoys with equal keys get byte-identical resources and share one snapshot.

    ``front_port``: the DNS front's set listener (``DNS_FRONT_SET_ADDRESS``); 0 for a node
    that is not fronted."""

    tenant: str
    host: str
    port: int
    stats_host: str = "0.0.0.0"
    stats_port: int = 0
    hop_host: str = DEFAULT_HOP_HOST
    hop_port: int = DEFAULT_HOP_PORT
    front_host: str = ""
    front_port: int = 0

    @property
    def front(self) -> tuple[str, int] | None:
        """The set listener's address, or None when not fronted."""
        return (self.front_host, self.front_port) if self.front_port else None

    def __str__(self) -> str:
        stats = f"+stats:{self.stats_port}" if self.stats_port else ""
        hop = f"+hop:{self.hop_port}" if self.hop_port != DEFAULT_HOP_PORT else ""
        front = f"+front:{self.front_host}:{self.front_port}" if self.front_port else ""
        return f"{self.tenant}@{self.host}:{self.port}{stats}{hop}{front}"
