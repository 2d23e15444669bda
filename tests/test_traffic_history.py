"""The console's traffic history kept across a restart: ``DnsTraffic.history_state`` /
``restore_history`` (pure, whatever the file holds) and ``run_traffic`` with a file (read
at start, written with each coarse point and at stop)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from controlplane.telemetry.stats_sink import run_traffic
from controlplane.telemetry.traffic import KINDS, DnsTraffic, Report


def busy(now: float) -> DnsTraffic:
    traffic = DnsTraffic(history=5, coarse=3, coarse_every=2)
    traffic.report(Report(node="a.acme", tenant="acme", namespace="acme", envoy_time=0,
                          queries=0), now=now)
    for i in range(1, 9):
        traffic.report(Report(node="a.acme", tenant="acme", namespace="acme",
                              envoy_time=i * 2.0, queries=10.0 * i), now=now + i * 2)
        traffic.sample(now=now + i * 2)
    return traffic


def test_the_history_comes_back_whole_and_bounded() -> None:
    before = busy(1000.0)
    state = json.loads(json.dumps(before.history_state()))  # as the file holds it
    after = DnsTraffic(history=5, coarse=3, coarse_every=2)
    assert after.restore_history(state, now=1016.5) == 5 + 3
    assert list(after.tenants["acme"].history) == list(before.tenants["acme"].history)
    assert list(after.tenants["acme"].coarse) == list(before.tenants["acme"].coarse)
    assert after.tenants["acme"].history[-1][1][0] == 5.0  # 10 queries per 2 s


def test_points_out_of_range_or_malformed_are_left_out() -> None:
    state = busy(1000.0).history_state()
    later = DnsTraffic(history=5, coarse=3, coarse_every=2)
    # 10 s after the last point: the history's 10 s and the coarse 12 s keep one each
    assert later.restore_history(state, now=1026.0) == 1 + 1
    future = DnsTraffic(history=5, coarse=3, coarse_every=2)
    assert future.restore_history(state, now=900.0) == 0  # never points in the future
    bad = {"version": 1, "kinds": list(KINDS), "tenants": {
        "acme": {"history": [[1000, [1] * len(KINDS)], "x", [1001, [1, 2]],
                             [1002, [-1] * len(KINDS)], [None, [1] * len(KINDS)]],
                 "coarse": "nope"},
        "": {"history": [[1000, [0] * len(KINDS)]]}, "7": None}}
    t = DnsTraffic()
    assert t.restore_history(bad, now=1003.0) == 2  # acme's first point and ""'s
    for junk in (None, [], "text", {"tenants": {}}, {"kinds": ["other"], "tenants": {}}):
        assert DnsTraffic().restore_history(junk, now=0.0) == 0


def test_run_traffic_keeps_the_history_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "traffic.json"
    clock = iter(2000 + i * 0.001 for i in range(100_000))  # one tick a call

    async def run(traffic: DnsTraffic, ticks: int) -> None:
        traffic.report(Report(node="a.acme", tenant="acme", namespace="acme", envoy_time=0,
                              queries=1), now=2000.0)  # a sidecar: the tenant is known
        stop = asyncio.Event()
        task = asyncio.create_task(run_traffic(traffic, lambda: ["acme"], stop,
                                               clock=lambda: next(clock),
                                               history_file=path))
        for _ in range(5000):  # at most 5 s
            if points(traffic) >= ticks:
                break
            await asyncio.sleep(0.001)
        stop.set()
        await task

    first = DnsTraffic(tick=0.001, coarse_every=2)
    asyncio.run(run(first, 4))
    kept = json.loads(path.read_text())
    assert len(kept["tenants"]["acme"]["history"]) >= 4
    second = DnsTraffic(tick=0.001, coarse_every=2)
    asyncio.run(run(second, 6))  # restored first, then sampled on
    times = [t for t, _ in second.tenants["acme"].history]
    assert times[:4] == [t for t, _ in first.tenants["acme"].history][:4]
    assert times == sorted(times)
    path.write_text("{broken")
    third = DnsTraffic(tick=0.001, coarse_every=2)
    asyncio.run(run(third, 1))  # a broken file: logged, the history starts empty
    assert json.loads(path.read_text())["tenants"]["acme"]["history"]


def points(traffic: DnsTraffic) -> int:
    tenant = traffic.tenants.get("acme")
    return len(tenant.history) if tenant is not None else 0
