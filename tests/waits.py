"""Waiting for a condition inside an event loop: the async twin of ``localrun.wait_for``.

A test waits for what it needs to have happened, never for a fixed time: a loaded machine
only makes the wait longer, and ``timeout`` is the limit past which the test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def until(condition: Callable[[], T], *, what: str, timeout: float = 10.0,
                interval: float = 0.005) -> T:
    """The first truthy value of ``condition()``; fails the test after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := condition()):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)
    return value
