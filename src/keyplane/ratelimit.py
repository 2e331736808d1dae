"""Rate limits through the ``limits`` library: in memory when alone, in Redis when scaled out.

The moving-window strategy is exact (never more than N in any window), which is what a client that
paces itself to the documented figure relies on.
"""

from __future__ import annotations

import time
from functools import lru_cache

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from keyplane.auth.request import RateLimitState


@lru_cache(maxsize=256)
def _item(spec: str) -> RateLimitItem:
    return parse(spec)


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        storage: Storage = RedisStorage(redis_url) if redis_url else MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)

    def hit(self, spec: str, *identifiers: str) -> tuple[bool, RateLimitState]:
        """Spends one unit of ``spec`` for ``identifiers``; returns whether it was allowed."""
        item = _item(spec)
        allowed = self._limiter.hit(item, *identifiers)
        stats = self._limiter.get_window_stats(item, *identifiers)
        state = RateLimitState(
            limit=item.amount,
            remaining=stats.remaining,
            reset_ms=int(stats.reset_time * 1000) if stats.reset_time else int(time.time() * 1000),
        )
        return allowed, state

    def reset(self) -> None:
        self._storage.reset()
