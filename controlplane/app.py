"""Wiring: source -> store -> hub -> ADS server, plus the admin API, in one event loop.

Every long-running task is supervised: if one fails, the failure is logged
and the process exits non-zero instead of serving with a dead loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import uvicorn

from controlplane.admin import create_app
from controlplane.hub import Hub
from controlplane.inventory import Store
from controlplane.settings import Settings
from controlplane.sources.files import FileSource
from controlplane.xds.server import add_ads_service

log = logging.getLogger("controlplane")


class _AdminServer(uvicorn.Server):
    """uvicorn without its own signal handling: the control plane decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Debouncer:
    """Coalesces bursts of input changes into one rebuild per window."""

    def __init__(self, window: float, action: Callable[[], None]) -> None:
        self.window = window
        self.action = action
        self._pending = asyncio.Event()

    def poke(self) -> None:
        self._pending.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._pending.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            if stop.is_set():
                return
            await asyncio.sleep(self.window)  # the debounce window itself
            self._pending.clear()
            self.action()


async def _supervise(tasks: dict[str, asyncio.Task[None]], stop: asyncio.Event) -> int:
    stopper = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({*tasks.values(), stopper},
                                 return_when=asyncio.FIRST_COMPLETED)
    code = 0
    for name, task in tasks.items():
        if task in done and not task.cancelled() and task.exception() is not None:
            log.error("task %s crashed", name, exc_info=task.exception())
            code = 1
        elif task in done and not stop.is_set():
            log.error("task %s ended unexpectedly", name)
            code = 1
    stop.set()
    stopper.cancel()
    return code


async def _wait_grpc(server: grpc.aio.Server) -> None:
    await server.wait_for_termination()


async def serve_files(source_dir: Path, settings: Settings) -> int:
    store = Store()
    hub = Hub(settings)
    stop = asyncio.Event()

    def rebuild() -> None:
        hub.set_inventory(store.inventory())
        if not source.healthy:
            hub.not_ready_reason = source.problem
        log.info("configuration rebuilt: %d tenants, %d input errors",
                 len(hub.tenant_views) - 1, len(hub.input_errors()))

    debouncer = Debouncer(settings.debounce_seconds, rebuild)
    source = FileSource(source_dir, store, debouncer.poke)
    source.load_all()
    hub.set_inventory(store.inventory())
    if source.healthy:
        hub.ready = True
    else:
        hub.not_ready_reason = source.problem

    grpc_server = grpc.aio.server(options=[("grpc.max_send_message_length", 256 * 1024 * 1024)])
    add_ads_service(grpc_server, hub)
    xds_port = grpc_server.add_insecure_port(f"{settings.xds_host}:{settings.xds_port}")
    log.warning("ADS listens on %s:%d WITHOUT TLS or authentication (insecure mode, for "
                "local use)", settings.xds_host, xds_port)
    await grpc_server.start()

    def source_status() -> dict[str, object]:
        return {"kind": "files", "path": str(source_dir), "healthy": source.healthy,
                "problem": source.problem or None}

    admin_app = create_app(hub, source_status=source_status)
    config = uvicorn.Config(admin_app, host=settings.admin_host, port=settings.admin_port,
                            log_config=None, access_log=False, lifespan="off")
    admin = _AdminServer(config)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def run_admin() -> None:
        await admin.serve()
        if not stop.is_set():
            raise RuntimeError("admin server stopped (is the port in use?)")

    tasks = {
        "file-watch": asyncio.create_task(source.watch(stop)),
        "rebuild": asyncio.create_task(debouncer.run(stop)),
        "admin": asyncio.create_task(run_admin()),
        "ads": asyncio.create_task(_wait_grpc(grpc_server)),
    }
    log.info("control plane serving: xds=%s:%d admin=http://%s:%d source=%s", settings.xds_host,
             xds_port, settings.admin_host, settings.admin_port, source_dir)
    code = await _supervise(tasks, stop)
    admin.should_exit = True
    await grpc_server.stop(grace=1.0)
    for task in tasks.values():
        task.cancel()
    for task in tasks.values():
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    log.info("control plane stopped")
    return code
