"""How the served control plane shares the interpreter between its event loop and
the threads that do its heavy work (views, parsing, relists), so the loop never stalls.

**The GIL.** A thread that wants the GIL waits until the holder gives it up,
at the latest after the switch interval (5 ms by default). An admin request
or an ADS response needs the GIL many times (every system call gives it up),
so with a view build running on the worker it waited up to 5 ms each time:
30 ms for a ``/healthz``. ``activate`` sets the interval to 1 ms.

**Full garbage collections.** A full collection examines every tracked object
with the GIL held. At 50,000 Services the control plane holds about a million
of them (records, views, model objects) and one full collection takes
0.3-0.4 s, in whichever thread triggers it: the event loop waits that long.
Heavy work off the loop allocates enough to trigger several in a row.

``quiet()`` wraps that work. While any ``quiet`` block runs, automatic
collections are off; when the last one ends, what is alive is moved to the
permanent generation (``gc.freeze``), so later collections examine only the
objects made since: their cost follows the change, not the cluster.
Reference counting still frees frozen objects; only *cyclic* garbage among
them is never collected. Before a small batch is frozen its young
generations are collected (cheap: fewer than ``LARGE`` objects), so what is
kept is the cyclic garbage of older objects (made since the previous freeze
and dead since) and of large batches (a first load, a big file), frozen
without it; closed ADS streams leave about four such objects each (measured),
kept if the stream was open at such a moment.

**Young generations.** The interpreter's default (a collection every 700 net new
objects, the middle generation every 10 of those) moves what an ADS stream allocates
for one request (a message, futures, callbacks: dead a few milliseconds later) to the
old generation, and a full collection follows each time that grew by a quarter: in a
reconnect storm two or more per storm of 2,000 streams, 100-130 ms each with the loop
held, ~10% of the server's CPU. ``activate`` sets ``THRESHOLDS``: a collection every
5,000, the middle one every 5 (at most 25,000 objects, ~15 ms): the short-lived die
young, and the storm runs without a full collection (RESULTS.md section 26).

Inactive until ``activate()`` (``serve`` calls it): unit tests and tools keep
the interpreter's defaults.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
from collections.abc import Iterator

SWITCH_INTERVAL = 0.001  # seconds a thread holds the GIL while another one waits for it
# New objects since the last collection above which a batch is frozen without collecting
# it first (a collection of 20,000 objects takes a few milliseconds).
LARGE = 20_000
THRESHOLDS = (5_000, 5, 10)  # gc.set_threshold while active (see "Young generations")


class HeapGuard:
    def __init__(self) -> None:
        self.active = False
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = True
        self.freezes = 0  # batches frozen
        self.uncollected = 0  # of which without a collection first

    def activate(self) -> None:
        self.active = True
        sys.setswitchinterval(SWITCH_INTERVAL)
        gc.set_threshold(*THRESHOLDS)

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """No automatic collection while this runs; the result frozen afterwards."""
        if not self.active:
            yield
            return
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    if gc.get_count()[0] > LARGE:  # net new objects since the last one
                        self.uncollected += 1
                    else:  # the young generations only: bounded by what was just made
                        gc.collect(1)
                    gc.freeze()
                    self.freezes += 1
                    if self._was_enabled:
                        gc.enable()


GUARD = HeapGuard()


def quiet() -> contextlib.AbstractContextManager[None]:
    return GUARD.quiet()


def activate() -> None:
    GUARD.activate()
