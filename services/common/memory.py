"""What a replica remembers a short while, to spare a database read whose answer may be a little old."""

import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """Values remembered for `ttl` seconds after they were put, at most `limit` of them.

    When it is full, a new key first drops what has expired, and everything if nothing had: the next
    calls read again, which costs round trips, never a wrong answer."""

    def __init__(self, ttl: float, limit: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._kept: dict[K, tuple[float, V]] = {}

    def fresh(self, key: K) -> V | None:
        """What was put under `key` less than `ttl` seconds ago, else None."""
        kept = self._kept.get(key)
        return kept[1] if kept is not None and self.clock() - kept[0] < self.ttl else None

    def last(self, key: K) -> V | None:
        """What was last put under `key`, however long ago, while it is still kept."""
        kept = self._kept.get(key)
        return kept[1] if kept is not None else None

    def put(self, key: K, value: V) -> V:
        now = self.clock()
        if key not in self._kept and len(self._kept) >= self.limit:
            self._kept = {k: kept for k, kept in self._kept.items() if now - kept[0] < self.ttl}
            if len(self._kept) >= self.limit:
                self._kept.clear()
        self._kept[key] = (now, value)
        return value

    def __len__(self) -> int:
        return len(self._kept)
