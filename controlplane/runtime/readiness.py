"""Whether this replica should take new ADS streams (``/readyz``), and why not.

Not ready until the first full load of the source is applied (``loaded``), and
never again once a supervised task has failed it (``fail``, ``supervise.py``).
Once loaded, a current source problem is reported as ``degraded`` while the
last configuration keeps serving.
"""

from __future__ import annotations

import threading

WAITING = "the first full load of the source has not finished"


class Readiness:
    def __init__(self) -> None:
        self._lock = threading.Lock()  # failed from any thread
        self._loaded = False
        self._failures: list[str] = []

    def loaded(self) -> None:
        """The first full load of the source is applied."""
        self._loaded = True

    @property
    def is_loaded(self) -> bool:
        return self._loaded

    def fail(self, reason: str) -> None:
        """Not ready from now on, for ``reason`` (a supervised task crashed)."""
        with self._lock:
            self._failures.append(reason)

    @property
    def failures(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._failures)

    def state(self, problem: str = "") -> tuple[bool, str]:
        """(ready, reason): the reason is why not, or, when ready, the source's current
        ``problem`` (degraded)."""
        failures = self.failures
        if failures:
            return False, "; ".join(failures)
        if not self._loaded:
            return False, problem or WAITING
        return True, problem
