"""What a tenant resolver's directory says about it: ``state.json``, written atomically
after every start, restart and trigger reload, so that a control plane started later
can find the resolver again (``ResolverPool`` adopts it; see ``pool.py``).

It holds the tenant, the directory's generation, the process ids and the exact command
lines (an adopted process id counts only while ``/proc/PID/cmdline`` is still that
command line, which names the directory's config file), every path and port
(``ResolverPaths``: an adopted resolver keeps its ports, so the listener pushed to the
sidecars is the same), and two digests: ``server_key`` (what needs a new process when it
changes) and ``triggers_key`` (what a live ``auth_zone_reload`` applies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.dns.views import Upstream
from controlplane.translate.unbound import ResolverPaths

STATE_FILE = "state.json"
VERSION = 1


@dataclass(frozen=True, slots=True)
class ResolverState:
    """One resolver directory's state file."""

    tenant: str
    generation: int
    server_key: str
    triggers_key: str
    paths: ResolverPaths
    unbound_pid: int
    unbound_argv: tuple[str, ...]
    dnsdist_pid: int = 0  # 0: no DoH proxy
    dnsdist_argv: tuple[str, ...] = ()
    restarts: int = 0
    server: str = ""  # the tenant's server and transport, for the admin API
    transport: str = ""


def digest(*parts: object) -> str:
    """A stable digest of frozen dataclasses, enums, strings and tuples (their repr)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def generation_of(directory: str | Path) -> int:
    """The generation a resolver directory's name ends with (``tenant-slug-N``); 0: none."""
    tail = Path(directory).name.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def write_state(state: ResolverState) -> None:
    """Replace the directory's state file in one rename (never half written)."""
    directory = Path(state.paths.directory)
    body = dataclasses.asdict(state)
    body["version"] = VERSION
    tmp = directory / f".{STATE_FILE}.tmp"
    with open(tmp, "w") as f:
        json.dump(body, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / STATE_FILE)


def read_state(directory: Path) -> ResolverState | None:
    """The directory's state; None when it has none or it cannot be read."""
    try:
        body = json.loads((directory / STATE_FILE).read_text())
        if body.pop("version", None) != VERSION:
            return None
        return _decode(body, directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _decode(body: dict[str, Any], directory: Path) -> ResolverState:
    raw = dict(body.pop("paths"))
    raw["listen"] = Upstream(**raw["listen"])
    raw["doh_proxy"] = Upstream(**raw["doh_proxy"]) if raw.get("doh_proxy") else None
    raw["access"] = tuple(raw["access"])
    paths = ResolverPaths(**raw)
    if Path(paths.directory).resolve() != directory.resolve():
        raise ValueError(f"{directory}: the state names {paths.directory}")
    return ResolverState(**{**body, "paths": paths,
                            "unbound_argv": tuple(body["unbound_argv"]),
                            "dnsdist_argv": tuple(body.get("dnsdist_argv", ()))})
