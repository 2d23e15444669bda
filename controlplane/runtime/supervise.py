"""Long-lived work, started under a name and watched: no silent dead loops.

Every long-lived thread and task of the process starts through a ``Supervisor``
(``thread``, ``task``). A crash (an exception out of its loop; for a task that
must run until the process stops, also returning before that) is logged once,
at ERROR, with its name, its context (kind, node, tenant where known) and the
traceback, and then:

- fails readiness, always: ``/readyz`` answers 503 with the reason from then on;
- with ``Crash.EXIT``, also ends the process: ``Supervisor.wait`` returns 1, the
  app shuts down (ADS drained) and ``serve`` exits non-zero, so Kubernetes
  restarts the pod into a fresh list, election and write loop.

The choice, per task:

=====================================  =========  ==========================================
task or thread                         on crash   why
=====================================  =========  ==========================================
app tasks: source, rebuild, status,    EXIT       the process is no use without any of them
ads, admin, resolvers, policy-server,
traffic, loop-lag, webhook (app.py;
the webhook's certificate reload
loop crashes the webhook task)
``watch-<plural>`` threads             EXIT       that kind's objects would stay stale
(sources/kubernetes.py)                           forever; a restart lists them again
``leader-election`` (kube/leader.py)   EXIT       a dead elector never leads again (or
                                                  stops renewing); a restart rejoins
``status-writer`` (kube/status_writer) EXIT       status would never be written again
hub ``rebuild`` and ``render for new   READINESS  the streams already served keep their
streams`` (hub/hub.py)                            snapshots; new sidecars go elsewhere, and
                                                  the next change rebuilds (a crash there
                                                  ends the process through ``rebuild``)
=====================================  =========  ==========================================

Test-only: ``serve --fault-crash-task NAME`` (hidden from --help) makes the thread or task
called NAME raise ``FaultInjected`` as it starts, so a test can prove on a real process
that the crash of that very thread ends it non-zero, without a bug to trigger.

A part started alone, without the app's ``Supervisor`` (tests, tools:
``KubernetesSource.start()``), gets one of its own: a crash is still logged and
recorded, and fails that supervisor's ``readiness`` only.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.core.errors import FaultInjected
from controlplane.runtime.readiness import Readiness

log = logging.getLogger("controlplane.runtime.supervise")


class Crash(enum.Enum):
    """What a supervised task's crash does besides failing readiness."""

    READINESS = "readiness"  # not ready from then on; the process keeps serving
    EXIT = "exit"  # and the process ends non-zero


@dataclass(frozen=True)
class Failure:
    name: str
    reason: str
    crash: Crash
    context: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in self.context)
        return f"{self.name}{f' ({where})' if where else ''} crashed: {self.reason}"


class Supervisor:
    def __init__(self, readiness: Readiness | None = None, *,
                 crash_faults: frozenset[str] = frozenset()) -> None:
        self.readiness = readiness if readiness is not None else Readiness()
        self._crash_faults = crash_faults  # test-only: names that crash as they start
        self._lock = threading.Lock()
        self._failures: list[Failure] = []
        self._fatal: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # held until done (the loop holds weakly)

    @property
    def failures(self) -> tuple[Failure, ...]:
        with self._lock:
            return tuple(self._failures)

    def thread(self, name: str, target: Callable[[], None], *, crash: Crash,
               context: Mapping[str, str] | None = None) -> threading.Thread:
        """Start ``target`` on a daemon thread called ``name``; an exception out of it is
        a crash. Returning is not: a thread may finish its work (an optional kind the
        API does not serve)."""
        ctx = tuple((context or {}).items())

        def run() -> None:
            try:
                if name in self._crash_faults:
                    raise FaultInjected(f"--fault-crash-task {name}")
                target()
            except Exception as exc:  # noqa: BLE001 - reported, then readiness/exit
                self._crashed(name, exc, crash, ctx)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        return thread

    def task(self, name: str, coro: Coroutine[Any, Any, Any], *, crash: Crash,
             context: Mapping[str, str] | None = None,
             until: asyncio.Event | None = None) -> asyncio.Task[Any]:
        """Run ``coro`` as a task called ``name`` on the running loop; an exception out of
        it is a crash, and so, with ``until``, is returning before ``until`` is set.
        Cancelling it is not."""
        ctx = tuple((context or {}).items())
        if name in self._crash_faults:
            coro.close()
            coro = _raise(FaultInjected(f"--fault-crash-task {name}"))
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                self._crashed(name, exc, crash, ctx)
            elif until is not None and not until.is_set():
                self._fail(Failure(name, "ended before the process stopped", crash, ctx), None)

        task.add_done_callback(done)
        return task

    def _crashed(self, name: str, exc: BaseException, crash: Crash,
                 context: tuple[tuple[str, str], ...]) -> None:
        self._fail(Failure(name, f"{type(exc).__name__}: {exc}", crash, context), exc)

    def _fail(self, failure: Failure, exc: BaseException | None) -> None:
        then = ("the process ends" if failure.crash is Crash.EXIT
                else "this replica is not ready from now on")
        log.error("%s; %s", failure, then, exc_info=exc,
                  extra={"task": failure.name, **dict(failure.context)})
        with self._lock:
            self._failures.append(failure)
            fatal = self._fatal
        self.readiness.fail(str(failure))
        if failure.crash is Crash.EXIT and fatal is not None:
            loop, event = fatal
            loop.call_soon_threadsafe(event.set)

    async def wait(self, stop: asyncio.Event) -> int:
        """Until ``stop`` is set or a crash ends the process: 0, or 1 after such a crash."""
        event = asyncio.Event()
        with self._lock:
            self._fatal = (asyncio.get_running_loop(), event)
            if any(f.crash is Crash.EXIT for f in self._failures):
                event.set()  # one before the loop watched
        stopper = asyncio.ensure_future(stop.wait())
        fatal = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({stopper, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            fatal.cancel()
        return 1 if event.is_set() else 0


async def _raise(exc: Exception) -> None:
    raise exc
