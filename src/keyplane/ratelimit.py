"""Rate limits: fixed windows in this process's memory when alone; leased quotas through Redis when scaled out.

Without Redis (``LocalWindows``) every process counts alone: a limit of N holds per process, so
``keyplane serve --workers 2`` admits up to 2N per window on one machine, and k nodes k times that. A
fixed window per caller: ``limits``' in-memory moving window costs about 14 µs a hit plus 9 µs for its
state, and its MemoryStorage re-arms a timer thread that scans every key every 10 ms, which alone was 60%
of a verification (bench/README.md has the profile). A fixed window never refuses a client that paces
itself to N per window; it can let up to 2N through across a window's edge, as the exchanges' own fixed
windows do. Its cost is one dict lookup under a lock.

With Redis (``KEYPLANE_REDIS_URL``) the limit is global, decided locally from slices of each window's
quota leased through Redis (``ratelimit_redis``: design, error bound and outage behaviour there): no
network round trip per request except for limits under 40 a window, which stay exact.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse

from keyplane.auth.request import RateLimitState

if TYPE_CHECKING:
    from keyplane.ratelimit_redis import LeasedLimiter

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
    """Counts rate limits: ``LocalWindows`` in this process, or with ``redis_url`` shared by every process
    through leased quotas (``ratelimit_redis.LeasedLimiter``; its docstring has the design and error bound).

    ``blocking`` says whether a hit may ever wait for the network (only with Redis); ``would_block`` whether
    this one would, changing nothing: a caller that must not block checks it before anything spends state
    and runs the verification in a thread when it is true.
    """

    def __init__(self, redis_url: str | None = None) -> None:
        self.blocking = redis_url is not None
        self._local: LocalWindows | None = None
        self._shared: LeasedLimiter | None = None
        if redis_url:
            from keyplane.ratelimit_redis import LeasedLimiter

            self._shared = LeasedLimiter(redis_url)
            # ``hit`` for what ``prepare`` made, chosen once: the hot path's call, nothing parsed again
            self.hit_prepared: Callable[[Prepared], tuple[bool, RateLimitState]] = self._shared.hit_prepared
            self.would_block: Callable[[Prepared], bool] = self._shared.would_block
        else:
            self._local = LocalWindows()
            self.hit_prepared = self._local.hit_prepared
            self.would_block = _never

    def prepare(self, spec: str, *identifiers: str) -> Prepared:
        """What ``hit_prepared`` takes: the key, and the spec parsed once."""
        item = _item(spec)
        return (spec, *identifiers), item.amount, float(item.get_expiry())

    def hit(self, spec: str, *identifiers: str) -> tuple[bool, RateLimitState]:
        """Spends one unit of ``spec`` for ``identifiers``; returns whether it was allowed."""
        return self.hit_prepared(self.prepare(spec, *identifiers))

    def reset(self) -> None:
        """Forgets what this process counted (counters in Redis expire with their windows)."""
        if self._local is not None:
            self._local.reset()
        if self._shared is not None:
            self._shared.reset()

    def close(self) -> None:
        """Stops the lease thread and gives back unspent leased units (nothing to do without Redis)."""
        if self._shared is not None:
            self._shared.close()


def _never(prepared: Prepared) -> bool:
    return False
