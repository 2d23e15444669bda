"""Supervision: a crashed thread or task is logged with its context and fails readiness or
the process, never a silent dead loop (runtime/supervise.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import kubernetes
import pytest

from controlplane._kit.localrun import ControlPlane, wait_for
from controlplane.admin.api import create_app
from controlplane.admin.reads import AdminReads
from controlplane.core.settings import Settings
from controlplane.hub.hub import Hub
from controlplane.runtime.readiness import WAITING, Readiness
from controlplane.runtime.supervise import Crash, Failure, Supervisor
from controlplane.sources.kubernetes import CORE_KINDS, Backoff, KindWatcher
from controlplane.store.store import Store
from tests.fakes.kube import CORE, OURS, FakeKube


class Boom(Exception):
    pass


def crash() -> None:
    raise Boom("the loop broke")


async def crash_later() -> None:
    await asyncio.sleep(0)
    raise Boom("the loop broke")


# -- readiness -----------------------------------------------------------------------
def test_readiness_waits_for_the_first_load_then_reports_the_source_problem() -> None:
    r = Readiness()
    assert r.state() == (False, WAITING)
    assert r.state("waiting for the initial list of services") == (
        False, "waiting for the initial list of services")
    r.loaded()
    assert r.state() == (True, "")
    assert r.state("API unreachable") == (True, "API unreachable")  # degraded, still ready


def test_a_failure_makes_readiness_fail_for_good() -> None:
    r = Readiness()
    r.loaded()
    r.fail("watch-services crashed: Boom")
    assert r.state("a source problem") == (False, "watch-services crashed: Boom")
    r.loaded()
    assert r.state()[0] is False


# -- threads -------------------------------------------------------------------------
def test_a_crashed_thread_is_logged_with_its_context_and_ends_the_process(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor()

    async def main() -> int:
        stop = asyncio.Event()
        sup.thread("watch-services", crash, crash=Crash.EXIT, context={"kind": "services"})
        return await sup.wait(stop)  # returns without stop: the crash ends the process

    with caplog.at_level(logging.ERROR, logger="controlplane.runtime.supervise"):
        assert asyncio.run(main()) == 1
    failure = Failure("watch-services", "Boom: the loop broke", Crash.EXIT, (("kind", "services"),))
    assert sup.failures == (failure,)
    assert sup.readiness.state() == (False, str(failure))
    assert str(failure) == "watch-services (kind services) crashed: Boom: the loop broke"
    [record] = caplog.records
    assert record.exc_info is not None and record.exc_info[0] is Boom  # the traceback
    assert record.task == "watch-services"  # type: ignore[attr-defined]
    assert record.kind == "services"  # type: ignore[attr-defined]
    assert "the process ends" in record.getMessage()


def test_a_crash_before_the_loop_watches_still_ends_the_process() -> None:
    sup = Supervisor()
    sup.thread("status-writer", crash, crash=Crash.EXIT).join()

    async def main() -> int:
        return await sup.wait(asyncio.Event())

    assert asyncio.run(main()) == 1


def test_a_thread_that_returns_is_not_a_crash() -> None:
    sup = Supervisor()
    done = threading.Event()
    sup.thread("watch-pods", done.set, crash=Crash.EXIT).join()
    assert done.is_set()
    assert sup.failures == ()
    sup.readiness.loaded()
    assert sup.readiness.state() == (True, "")


# -- tasks ---------------------------------------------------------------------------
def test_a_crashed_task_with_readiness_keeps_the_process_and_fails_readiness() -> None:
    sup = Supervisor()
    sup.readiness.loaded()

    async def main() -> tuple[int, tuple[bool, str]]:
        stop = asyncio.Event()
        task = sup.task("render for new streams", crash_later(), crash=Crash.READINESS,
                        context={"view": "acme"})
        await asyncio.wait({task})
        state = sup.readiness.state()
        stop.set()
        return await sup.wait(stop), state

    code, (ready, reason) = asyncio.run(main())
    assert code == 0
    assert not ready
    assert reason == "render for new streams (view acme) crashed: Boom: the loop broke"


def test_a_task_that_must_run_until_stop_and_ends_early_ends_the_process() -> None:
    sup = Supervisor()

    async def main() -> int:
        stop = asyncio.Event()
        sup.task("admin", asyncio.sleep(0), crash=Crash.EXIT, until=stop)
        return await sup.wait(stop)

    assert asyncio.run(main()) == 1
    assert [str(f) for f in sup.failures] == ["admin crashed: ended before the process stopped"]


def test_stopping_and_cancelling_are_not_crashes() -> None:
    sup = Supervisor()

    async def main() -> int:
        stop = asyncio.Event()
        ends = sup.task("status", stop.wait(), crash=Crash.EXIT, until=stop)
        waits = sup.task("loop-lag", asyncio.Event().wait(), crash=Crash.EXIT, until=stop)
        stop.set()
        code = await sup.wait(stop)
        waits.cancel()
        await asyncio.wait({ends, waits})
        return code

    assert asyncio.run(main()) == 0
    assert sup.failures == ()


# -- the hub and the admin API -------------------------------------------------------
def test_readyz_answers_503_with_the_reason_once_a_hub_task_crashed() -> None:
    sup = Supervisor()
    hub = Hub(Settings(), supervisor=sup)
    hub.readiness.loaded()

    async def main() -> list[httpx.Response]:
        app = create_app(AdminReads.of_hub(hub))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://admin") as c:
            before = await c.get("/readyz")
            task = sup.task("rebuild", crash_later(), crash=Crash.READINESS)
            await asyncio.wait({task})
            return [before, await c.get("/readyz")]

    before, after = asyncio.run(main())
    assert before.status_code == 200
    assert after.status_code == 503
    assert after.json()["reason"] == "rebuild crashed: Boom: the loop broke"


# -- a Kubernetes watch thread ------------------------------------------------------------
class BrokenBackoff(Backoff):
    """A bug in the error path: the watch loop's own retry raises."""

    def next(self) -> float:
        raise Boom("backoff broke")


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    k = FakeKube(resources=CORE + OURS).start()
    yield k
    k.stop()


def test_a_watch_thread_whose_loop_raises_fails_readiness_and_the_process(
        kube: FakeKube, tmp_path: Path) -> None:
    api = kubernetes.config.new_client_from_config(str(kube.kubeconfig(tmp_path)))
    services = next(k for k in CORE_KINDS if k.plural == "services")
    stop = threading.Event()
    kube.fail("services", 500)  # the first list fails: the loop backs off, and that raises
    watcher = KindWatcher(services, api, Store(), lambda: None, stop,
                          backoff=BrokenBackoff())
    sup = Supervisor()
    sup.readiness.loaded()

    async def main() -> int:
        watcher.start(sup)
        return await sup.wait(asyncio.Event())

    try:
        assert asyncio.run(main()) == 1
    finally:
        stop.set()
    [failure] = sup.failures
    assert failure.name == "watch-services"
    assert failure.context == (("kind", "kubernetes:services.core"),)
    assert failure.reason == "Boom: backoff broke"
    ready, reason = sup.readiness.state()
    assert not ready and reason.startswith("watch-services (kind kubernetes:services.core)")


# -- the real process ----------------------------------------------------------------
def test_serve_exits_non_zero_when_the_status_writer_thread_dies(
        kube: FakeKube, tmp_path: Path) -> None:
    kube.apply({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "acme", "labels": {"tenant": "acme"}}})
    kube.apply({"apiVersion": "networking.example.com/v1alpha1", "kind": "DnsPolicy",
                "metadata": {"name": "acme"},
                "spec": {"namespaceSelector": {"matchLabels": {"tenant": "acme"}},
                         "policy": {"defaultAction": "DENY"}}})
    # The status writer's own thread crashes as it starts (a hidden test-only fault).
    cp = ControlPlane(Path("kubernetes"), tmp_path, extra_args=[
        "--kubeconfig", str(kube.kubeconfig(tmp_path)), "--tenant-resolvers", "none",
        "--debounce", "0.02", "--status-interval", "0.1", "--watch-timeout", "5",
        "--no-leader-election", "--fault-crash-task", "status-writer"])
    cp.start(wait_ready=False)
    assert cp.process is not None
    try:
        wait_for(lambda: not cp.process.alive(), timeout=60,  # type: ignore[union-attr]
                 what="the control plane to exit after its status writer died")
    finally:
        code = cp.stop()
    assert code == 1
    lines = [json.loads(line) for line in cp.process.log().splitlines()
             if line.startswith("{")]
    [crashed] = [x for x in lines if x.get("task") == "status-writer"]
    assert crashed["level"] == "error"
    assert crashed["msg"].startswith("status-writer crashed: FaultInjected")
    assert "the process ends" in crashed["msg"]
    assert "Traceback" in crashed["exc"] and "--fault-crash-task status-writer" in crashed["exc"]
    assert any(x["msg"] == "control plane stopped" for x in lines)
