"""WhiteBIT nonce state: a monotonic last nonce per key, or windowed nonces that are never reused.

Each accepted nonce is written to the store before the request is accepted, so a restarted server
still refuses a replay. The store's atomic conditional writes decide races between workers; the
in-memory copy only answers the obvious replays without a write.
"""

from __future__ import annotations

from keyplane.auth.request import Reason
from keyplane.auth.whitebit import NONCE_WINDOW_MS
from keyplane.store import Store
from keyplane.store.nonces import NonceLedger

PURGE_EVERY = 1000  # windowed nonces accepted between two purges of the expired ones


class NonceGuard:
    def __init__(self, store: Store) -> None:
        self._ledger = NonceLedger(store)
        self._last: dict[str, int] = {}
        self._accepted = 0

    def close(self) -> None:
        self._ledger.close()

    def accept(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        """Records the nonce if it is acceptable; returns VALID or why not."""
        if windowed:
            if abs(nonce - now_ms) > NONCE_WINDOW_MS:
                return Reason.NONCE_OUT_OF_WINDOW
            if not self._ledger.record(key_id, nonce, expires_at=nonce + 2 * NONCE_WINDOW_MS):
                return Reason.NONCE_REPLAYED
            self._accepted += 1
            if self._accepted % PURGE_EVERY == 0:
                self._ledger.purge(before=now_ms - NONCE_WINDOW_MS)
            return Reason.VALID
        last = self._last.get(key_id)
        if last is not None and nonce <= last:
            return Reason.NONCE_TOO_LOW
        advanced, stored = self._ledger.advance(key_id, nonce)
        if not advanced:
            if stored is not None:
                self._last[key_id] = stored
            return Reason.NONCE_TOO_LOW
        self._last[key_id] = nonce
        return Reason.VALID

    def forget(self, key_id: str) -> None:
        self._last.pop(key_id, None)
