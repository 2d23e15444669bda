"""Processes started on the control plane's behalf by another process: the resolver host.

Why: in a pod, every process belongs to the container that started it, and when that
container's main process dies the runtime kills the rest of it. Persistent tenant
resolvers started by ``controlplane serve`` itself therefore die with its container,
however they were detached. So ``deploy/`` runs a second container in the control-plane
pod, ``controlplane resolver-host``, which starts the resolvers and the hop terminator
for the control plane, and a pod-wide process namespace (``shareProcessNamespace``) lets
the control plane see, signal and adopt them by process id exactly as it adopts
persistent resolvers (``resolvers/pool.py``). The control-plane container can then be
killed and restarted while the resolvers keep answering.

The protocol is a spool directory on a volume both containers mount, one file per
request, each written whole (a temporary name, then a rename):

- the control plane writes ``requests/<id>.json``: ``argv``, ``log`` (a file the output
  is appended to), ``env`` (the whole environment, or null for the host's own);
- the host starts ``argv`` in a session of its own, writes ``started/<id>.json``:
  ``{"pid": N}`` or ``{"error": "..."}``, and removes the request;
- the control plane reads and removes the reply.

The host reaps its children; a child that exits is a zombie only until the next poll,
and ``process.running`` counts a zombie as gone, so the control plane's supervision
sees the death at once. The host answers within ``POLL_SECONDS``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.core.errors import SpawnError
from controlplane.runtime.process import command_line, running

log = logging.getLogger(__name__)

REQUESTS = "requests"
STARTED = "started"
HOST_PID = "host.pid"  # the host writes its pid here when it starts polling
POLL_SECONDS = 0.02


def _write(path: Path, body: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body))
    os.replace(tmp, path)


@dataclass
class SpoolSpawner:
    """The control plane's side: asks the resolver host on ``directory`` for a process."""

    directory: Path
    timeout: float = 10.0
    _met: bool = False  # a host answered once: from then on, no host fails a start at once
    _wait_until: float | None = None  # until a host answered: one deadline for every start

    def host_running(self) -> bool:
        """Whether the host that last wrote its pid here still runs (the pod shares one
        process namespace, so the control plane sees it)."""
        try:
            pid = int((self.directory / HOST_PID).read_text())
        except (OSError, ValueError):
            return False
        return running(pid) and any("resolver-host" in part for part in command_line(pid))

    def _wait_for_host(self) -> bool:
        """Whether a host runs. Until one has answered (the pod's containers start
        together, and the host may write its pid a second after the control plane's first
        start), wait for one until ``timeout`` after the first start asked; after that,
        answer at once: the pool's lock is held meanwhile, and a host that went away is not
        waited for per resolver."""
        if self._met:
            deadline = 0.0
        else:  # one wait in all, not one per resolver: a first apply starts several
            if self._wait_until is None:
                self._wait_until = time.monotonic() + self.timeout
            deadline = self._wait_until
        while not self.host_running():
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    def spawn(self, argv: list[str], log_path: Path, env: dict[str, str] | None) -> int:
        """Start ``argv`` through the host; its pid. ``SpawnError`` with the reason when the
        host says no or does not answer within ``timeout``."""
        if not self._wait_for_host():
            raise SpawnError(f"no resolver host runs on {self.directory}: start "
                             "`controlplane resolver-host --spool` on that directory (in "
                             "deploy/, the resolvers container)")
        requests, started = self.directory / REQUESTS, self.directory / STARTED
        requests.mkdir(parents=True, exist_ok=True)
        started.mkdir(parents=True, exist_ok=True)
        ident = uuid.uuid4().hex
        _write(requests / f"{ident}.json", {"argv": argv, "log": str(log_path), "env": env})
        reply = started / f"{ident}.json"
        deadline = time.monotonic() + self.timeout
        while not reply.exists():
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    (requests / f"{ident}.json").unlink()
                raise SpawnError(f"the resolver host on {self.directory} did not start "
                                 f"{Path(argv[0]).name} within {self.timeout:.0f} s: is "
                                 "`controlplane resolver-host` running on that directory?")
            time.sleep(POLL_SECONDS / 2)
        body = json.loads(reply.read_text())
        reply.unlink()
        self._met = True
        if "error" in body:
            raise SpawnError(f"the resolver host could not start {Path(argv[0]).name}: "
                             f"{body['error']}")
        return int(body["pid"])


@dataclass
class ResolverHost:
    """The host's side (``controlplane resolver-host``): starts what the requests ask for
    and reaps it. ``run`` polls until ``stop`` is set; ``stop_children`` ends them."""

    directory: Path
    children: dict[int, tuple[str, subprocess.Popen[bytes]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for sub in (REQUESTS, STARTED):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        # Replies nobody will read (a control plane that gave up) would pile up.
        for stale in (self.directory / STARTED).glob("*.json"):
            stale.unlink()
        (self.directory / HOST_PID).write_text(f"{os.getpid()}\n")

    def run(self, stop: threading.Event) -> None:
        log.info("resolver host: serving requests on %s", self.directory)
        while not stop.is_set():
            self.serve_once()
            stop.wait(POLL_SECONDS)

    def serve_once(self) -> int:
        """Handle every pending request and reap exited children; how many were handled."""
        handled = 0
        for request in sorted((self.directory / REQUESTS).glob("*.json")):
            try:
                body = json.loads(request.read_text())
            except (OSError, ValueError):
                continue  # half-written names start with '.', so this one was removed
            request.unlink(missing_ok=True)
            _write(self.directory / STARTED / request.name, self._start(body))
            handled += 1
        for pid, (name, child) in list(self.children.items()):
            code = child.poll()
            if code is not None:
                log.info("resolver host: pid %d (%s) exited with %d", pid, name, code)
                del self.children[pid]
        return handled

    def _start(self, body: dict[str, object]) -> dict[str, object]:
        try:
            argv = [str(a) for a in body["argv"]]  # type: ignore[attr-defined]
            log_path = Path(str(body["log"]))
            env = body.get("env")
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(log_path, "ab") as out:
                child = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=dict(env) if isinstance(env, dict) else None,
                    start_new_session=True)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            log.warning("resolver host: cannot start %s: %s", body.get("argv"), exc)
            return {"error": str(exc)}
        self.children[child.pid] = (Path(argv[0]).name, child)
        log.info("resolver host: started pid %d: %s", child.pid, " ".join(argv))
        return {"pid": child.pid}

    def stop_children(self, timeout: float = 5.0) -> None:
        """SIGTERM to every child, SIGKILL to those still there after ``timeout``."""
        for _, child in self.children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, child in self.children.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=timeout)
        self.children.clear()


__all__ = ["HOST_PID", "ResolverHost", "SpawnError", "SpoolSpawner"]
