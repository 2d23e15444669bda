"""How many bytes of ADS responses are in flight at once, across every stream.

A stream's response is the view's shared response (or its body plus the stream's
own nonce, joined when it is sent); gRPC copies it and holds that copy until the
bytes have left for the socket. A thousand streams woken by one change, or
reconnecting in a storm, would each hold one such copy at the same time: memory
would follow the number of streams times the listener's size (1.6 MB at 10,000
names). ``ByteBudget`` bounds that: a stream waits (first come, first served)
until the bytes already in flight leave room for its response. A response larger
than the whole budget goes alone.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass, field

DEFAULT_BYTES_IN_FLIGHT = 64 * 1024 * 1024


@dataclass
class ByteBudget:
    limit: int = DEFAULT_BYTES_IN_FLIGHT
    in_flight: int = 0
    peak: int = 0  # the most bytes ever in flight at once
    waited: int = 0  # responses that had to wait for room
    _waiters: collections.deque[tuple[int, asyncio.Future[None]]] = field(
        default_factory=collections.deque)

    def _fits(self, size: int) -> bool:
        return self.in_flight == 0 or self.in_flight + size <= self.limit

    async def acquire(self, size: int) -> None:
        """Wait until ``size`` more bytes may be in flight, then count them."""
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        self.waited += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, future)
        self._waiters.append(entry)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(size)  # granted as it was cancelled: hand the room on
            else:
                if entry in self._waiters:
                    self._waiters.remove(entry)
                self._grant()
            raise

    def release(self, size: int) -> None:
        """``size`` bytes acquired before have left (or will never be sent)."""
        self.in_flight -= size
        self._grant()

    def _take(self, size: int) -> None:
        self.in_flight += size
        self.peak = max(self.peak, self.in_flight)

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, future = self._waiters.popleft()
            if future.done():  # cancelled while it waited
                continue
            self._take(size)
            future.set_result(None)
