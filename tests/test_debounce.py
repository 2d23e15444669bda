"""The debounce rule (runtime/debounce.py): leading edge after quiet, then at most one
run per window. A fake clock: no timing is measured here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from controlplane.runtime.debounce import Debouncer, wait_before_run


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        """Until the scenario has moved the clock ``seconds`` on."""
        self.slept.append(seconds)
        target = self.now + seconds
        while self.now < target - 1e-9:
            await asyncio.sleep(0)

    async def advance(self, seconds: float, *, step: float = 0.001) -> None:
        """Move the clock on in ``step``s, letting the debouncer run between them."""
        for _ in range(round(seconds / step)):
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            self.now += step


def drive(scenario: Callable[[Debouncer, FakeTime, list[float]], Awaitable[None]], *,
          window: float = 0.05, action_seconds: float = 0.0) -> tuple[list[float], FakeTime]:
    """Run ``scenario`` against a debouncer whose action records the fake time it ran at."""
    fake = FakeTime()
    runs: list[float] = []

    async def main() -> None:
        stop = asyncio.Event()

        async def action() -> None:
            runs.append(fake.now)
            fake.now += action_seconds
            await asyncio.sleep(0)

        debouncer = Debouncer(window, action, clock=fake.clock, sleep=fake.sleep,
                              wall=fake.clock)
        task = asyncio.ensure_future(debouncer.run(stop))
        await scenario(debouncer, fake, runs)
        stop.set()
        await task

    asyncio.run(main())
    return runs, fake


def near(a: float, b: float) -> bool:
    return abs(a - b) < 0.0015


def test_rule() -> None:
    assert wait_before_run(now=5.0, last_start=None, window=0.05) == 0.0
    assert wait_before_run(now=5.0, last_start=4.0, window=0.05) == 0.0
    assert abs(wait_before_run(now=5.0, last_start=4.98, window=0.05) - 0.03) < 1e-9


def test_first_change_after_quiet_runs_at_once() -> None:
    async def scenario(d: Debouncer, fake: FakeTime, runs: list[float]) -> None:
        d.poke()
        await fake.advance(0.01)
        assert runs == [1000.0]
        await fake.advance(10)  # quiet
        d.poke()
        await fake.advance(0.01)

    runs, fake = drive(scenario)
    assert len(runs) == 2 and runs[0] == 1000.0 and near(runs[1], 1010.01)
    assert fake.slept == []  # no window was waited for


def test_change_within_the_window_waits_for_its_end() -> None:
    async def scenario(d: Debouncer, fake: FakeTime, runs: list[float]) -> None:
        d.poke()
        await fake.advance(0.02)
        d.poke()
        d.poke()
        await fake.advance(1.0)

    runs, fake = drive(scenario)
    assert len(runs) == 2  # one more run, a window after the first
    assert runs[0] == 1000.0 and near(runs[1], 1000.05)
    assert len(fake.slept) == 1 and near(fake.slept[0], 0.03)


def test_burst_of_1000_changes_gives_a_bounded_number_of_runs() -> None:
    async def scenario(d: Debouncer, fake: FakeTime, runs: list[float]) -> None:
        for _ in range(1000):  # one change every millisecond for a second
            d.poke()
            await fake.advance(0.001)
        await fake.advance(1.0)

    runs, _ = drive(scenario, window=0.05)
    # the leading run, then at most one per 50 ms window of the 1 s burst, plus the last
    assert 2 <= len(runs) <= 1 + 20 + 1
    assert all(b - a >= 0.05 - 1e-9 for a, b in zip(runs, runs[1:], strict=False))


def test_changes_during_a_long_run_coalesce_into_one() -> None:
    async def scenario(d: Debouncer, fake: FakeTime, runs: list[float]) -> None:
        d.poke()
        await asyncio.sleep(0)  # the run begins: it takes 0.2 s of fake time
        for _ in range(50):
            d.poke()
        await fake.advance(1.0)

    runs, _ = drive(scenario, action_seconds=0.2)
    assert len(runs) == 2


def test_fired_poke_is_the_first_change_of_the_run() -> None:
    seen: list[float | None] = []

    async def scenario(d: Debouncer, fake: FakeTime, runs: list[float]) -> None:
        d.action = lambda: seen.append(d.fired_poke)
        d.poke()
        await fake.advance(0.01)
        d.poke()
        await fake.advance(0.01)
        d.poke()
        await fake.advance(1.0)

    drive(scenario)
    assert len(seen) == 2 and seen[0] == 1000.0
    assert seen[1] is not None and near(seen[1], 1000.01)
