"""Coalescing input changes into rebuilds: leading edge, then at most one per window.

The rule (``Debouncer``): a change that comes after quiet (no rebuild started within the
last ``window``) runs the action at once: a lone change pays no window. Changes that
come while the action runs, or within ``window`` of its start, coalesce into one more
run, ``window`` after the previous one started (or when it ends, if it takes longer). So
a burst of any number of changes gives at most one run per window, plus the leading one:
the burst protection of a trailing debounce, without its floor on every change.

``clock`` and ``sleep`` are injectable (the unit tests drive the rule with a fake clock);
the defaults are the loop's monotonic time and ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_before_run(*, now: float, last_start: float | None, window: float) -> float:
    """How long a pending change waits before the action runs: 0 after quiet (leading
    edge), else until ``window`` after the last run started."""
    if last_start is None:
        return 0.0
    return max(0.0, last_start + window - now)


class Debouncer:
    """Runs ``action`` for input changes (``poke``): leading edge, then one per window."""

    def __init__(self, window: float, action: Callable[[], Awaitable[None] | None], *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 wall: Callable[[], float] = time.time) -> None:
        self.window = window
        self.action = action  # awaited when it returns an awaitable; pokes meanwhile wait
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._pending = asyncio.Event()
        self._last_start: float | None = None  # ``clock`` time the last run began
        self.runs = 0
        self.first_poke: float | None = None  # wall time of the first change not yet run
        self.fired_poke: float | None = None  # first_poke of the changes the action runs for

    def poke(self) -> None:
        if not self._pending.is_set():
            self.first_poke = self._wall()
        self._pending.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if not self._pending.is_set():
                waiter = asyncio.ensure_future(self._pending.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                stopper.cancel()
                if stop.is_set():
                    return
            delay = wait_before_run(now=self._clock(), last_start=self._last_start,
                                    window=self.window)
            if delay > 0:
                await self._sleep(delay)  # changes meanwhile join this run
                if stop.is_set():
                    return
            await self.run_once()

    async def run_once(self) -> None:
        """Run the action now for every pending change."""
        self._pending.clear()
        self.fired_poke, self.first_poke = self.first_poke, None
        self._last_start = self._clock()
        self.runs += 1
        result = self.action()
        if result is not None:
            await result
