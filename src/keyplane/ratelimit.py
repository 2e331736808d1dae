"""Rate limits: in this process's memory when alone, through the ``limits`` library in Redis when scaled out.

In Redis, the moving-window strategy is exact (never more than N in any window), which is what a client
that paces itself to the documented figure relies on.

In memory, a fixed window per caller (``LocalWindows``): ``limits``' in-memory moving window costs about
14 µs a hit plus 9 µs for its state, and its MemoryStorage re-arms a timer thread that scans every key
every 10 ms, which alone was 60% of a verification (bench/README.md has the profile). A fixed window
never refuses a client that paces itself to N per window either; it can let up to 2N through across a
window's edge, as the exchanges' own fixed windows do. Its cost is one dict lookup under a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from keyplane.auth.request import RateLimitState

# (the key: spec and identifiers; the spec's amount; its window in seconds), built once per caller
Prepared = tuple[tuple[str, ...], int, float]


@lru_cache(maxsize=256)
def _item(spec: str) -> RateLimitItem:
    return parse(spec)


class LocalWindows:
    """Fixed windows in memory: ``(spec, *identifiers) -> [window_end, count]``; stale ones swept lazily."""

    SWEEP_EVERY = 100_000

    def __init__(self) -> None:
        self._windows: dict[tuple[str, ...], list[Any]] = {}
        self._lock = threading.Lock()
        self._hits = 0

    def hit(self, spec: str, identifiers: tuple[str, ...]) -> tuple[bool, RateLimitState]:
        item = _item(spec)
        return self.hit_prepared(((spec, *identifiers), item.amount, float(item.get_expiry())))

    def hit_prepared(self, prepared: Prepared) -> tuple[bool, RateLimitState]:
        """Spends one unit of what ``RateLimiter.prepare`` made: ``(key, amount, seconds)``."""
        key, amount, seconds = prepared
        now = time.time()
        with self._lock:
            window = self._windows.get(key)
            if window is None or window[0] <= now:
                end = now + seconds
                window = self._windows[key] = [end, 0, int(end * 1000)]  # end, count, end in ms
            count = window[1]
            allowed = count < amount
            if allowed:
                count += 1
                window[1] = count
            self._hits += 1
            if self._hits >= self.SWEEP_EVERY:
                self._hits = 0
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
        return allowed, RateLimitState(amount, amount - count, window[2])

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        storage: Storage = RedisStorage(redis_url) if redis_url else MemoryStorage()
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(storage)
        self._local = None if redis_url else LocalWindows()
        # ``hit`` for what ``prepare`` made, chosen once: the hot path's call, nothing parsed or packed again
        self.hit_prepared: Callable[[Prepared], tuple[bool, RateLimitState]] = (
            self._hit_shared if self._local is None else self._local.hit_prepared
        )

    def prepare(self, spec: str, *identifiers: str) -> Prepared:
        """What ``hit_prepared`` takes: the key, and the spec parsed once."""
        item = _item(spec)
        return (spec, *identifiers), item.amount, float(item.get_expiry())

    def _hit_shared(self, prepared: Prepared) -> tuple[bool, RateLimitState]:
        key = prepared[0]
        return self.hit(key[0], *key[1:])

    def hit(self, spec: str, *identifiers: str) -> tuple[bool, RateLimitState]:
        """Spends one unit of ``spec`` for ``identifiers``; returns whether it was allowed."""
        if self._local is not None:
            return self._local.hit(spec, identifiers)
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
        if self._local is not None:
            self._local.reset()
        self._storage.reset()
