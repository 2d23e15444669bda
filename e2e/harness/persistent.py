"""Resolvers that outlive the control plane (``--resolver-lifetime persistent``): reading
their state files, and stopping every process they name when a test ends (by pid: they
are left running by design, so no parent stops them)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from controlplane.resolvers.state import STATE_FILE
from controlplane.resolvers.terminator import DIRECTORY, STATE
from controlplane.runtime.process import Process


def resolver_states(directory: Path, tenant: str | None = None) -> list[dict[str, Any]]:
    """Each tenant resolver's state file under ``directory``, in path order; only
    ``tenant``'s when given (every DnsPolicy tenant has a resolver: the examples' DENY
    tenants a table-only one)."""
    states = [json.loads(p.read_text()) for p in sorted(directory.glob(f"*/{STATE_FILE}"))]
    return [s for s in states if tenant is None or s.get("tenant") == tenant]


def stop_persistent(directory: Path) -> None:
    """Stop every resolver (unbound, dnsdist) and the hop terminator the files name."""
    for state in resolver_states(directory):
        for key in ("unbound", "dnsdist"):
            if state.get(f"{key}_pid"):
                Process.adopt(key, list(state[f"{key}_argv"]), directory / "x.log",
                              pid=int(state[f"{key}_pid"])).stop(timeout=5)
    terminator = directory / DIRECTORY / STATE
    if terminator.exists():
        body = json.loads(terminator.read_text())
        Process.adopt("envoy", list(body["argv"]), directory / "x.log",
                      pid=int(body["pid"])).stop(timeout=5)


__all__ = ["resolver_states", "stop_persistent"]
