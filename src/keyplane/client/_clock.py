"""Timestamps and nonces for signing: milliseconds, strictly increasing per signer, from any thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Increasing:
    """Milliseconds from ``clock``, never the same twice: a call in the same millisecond as the last one (or
    after the clock stepped back) gets the last value plus one, as ccxt's ``incrementing_nonce`` does.

    WhiteBIT refuses a nonce not above the key's last one, and keyplane refuses a replayed Bitget request
    (same timestamp, same signature); the lock makes that hold across threads sharing one signer. Holding
    it costs no await, so an ``AsyncClient`` shares it safely too.
    """

    __slots__ = ("_clock", "_last", "_lock")

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or wall_clock_ms
        self._last = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        now = self._clock()
        with self._lock:
            self._last = now if now > self._last else self._last + 1
            return self._last
