"""When the admin API first saw each current input error (``FirstSeen``).

Input errors carry no time of their own (they are values rebuilt from the input on
every load), so the errors route stamps each one the first time it lists it and keeps
the stamp while the error stays; an error that is gone is forgotten, so memory is
bounded by the errors there are now. Every console page asks for the errors every
5 s, so with the console open the stamp is within 5 s of the error's arrival; without
it, the stamp is the first time anyone asked.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterable


class FirstSeen:
    """Thread-safe: the admin routes run in a thread pool."""

    def __init__(self) -> None:
        self._since: dict[Hashable, float] = {}
        self._lock = threading.Lock()

    def stamp(self, keys: Iterable[Hashable], *, now: float) -> list[float]:
        """The first-seen time of each of ``keys`` (``now`` for a new one), in order;
        keys not given are forgotten."""
        keys = list(keys)
        with self._lock:
            since = {k: self._since.get(k, now) for k in keys}
            self._since = since
            return [since[k] for k in keys]

    def __len__(self) -> int:
        return len(self._since)
