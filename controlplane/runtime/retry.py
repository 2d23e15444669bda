"""When to try again something that keeps failing: a doubling back-off that starts over
once nothing fails (the composition root retries failed tenant resolvers with it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetryClock:
    """When to try failed tenant resolvers again: ``first`` seconds after a failure is
    seen, then doubling up to ``most``; back to the start once nothing fails."""

    first: float = 5.0
    most: float = 60.0
    _next: float | None = None
    _delay: float = 0.0

    def due(self, failing: bool, *, now: float) -> bool:
        if not failing:
            self._next, self._delay = None, 0.0
            return False
        if self._next is None:
            self._delay = self.first
            self._next = now + self._delay
            return False
        if now < self._next:
            return False
        self._delay = min(self.most, self._delay * 2)
        self._next = now + self._delay
        return True
