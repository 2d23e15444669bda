"""``ViewKey``: which Envoys share one snapshot (a tenant and the listener addresses)."""

from __future__ import annotations

from typing import NamedTuple

from controlplane.core.workload import DEFAULT_HOP_HOST, DEFAULT_HOP_PORT


class ViewKey(NamedTuple):
    """Envoys with equal keys get byte-identical resources and share one snapshot."""

    tenant: str
    host: str
    port: int
    stats_host: str = "0.0.0.0"
    stats_port: int = 0
    hop_host: str = DEFAULT_HOP_HOST
    hop_port: int = DEFAULT_HOP_PORT

    def __str__(self) -> str:
        stats = f"+stats:{self.stats_port}" if self.stats_port else ""
        hop = f"+hop:{self.hop_port}" if self.hop_port != DEFAULT_HOP_PORT else ""
        return f"{self.tenant}@{self.host}:{self.port}{stats}{hop}"
