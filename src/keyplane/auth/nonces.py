"""WhiteBIT nonce state: a monotonic last nonce per key, or windowed nonces that are never reused.

Each accepted nonce is written to the store before the request is accepted, so a restarted server
still refuses a replay. The store's atomic conditional writes decide races between workers; the
in-memory copy only answers the obvious replays without a write.
"""

from __future__ import annotations

import sqlalchemy.exc

from keyplane.auth.request import Reason
from keyplane.auth.whitebit import NONCE_WINDOW_MS
from keyplane.store import Store


class NonceGuard:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._last: dict[str, int] = {}
        self._accepted = 0

    def accept(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        """Records the nonce if it is acceptable; returns VALID or why not."""
        if windowed:
            if abs(nonce - now_ms) > NONCE_WINDOW_MS:
                return Reason.NONCE_OUT_OF_WINDOW
            return Reason.VALID if self._record_windowed(key_id, nonce, now_ms) else Reason.NONCE_REPLAYED
        last = self._last.get(key_id)
        if last is not None and nonce <= last:
            return Reason.NONCE_TOO_LOW
        if not self._advance(key_id, nonce):
            return Reason.NONCE_TOO_LOW
        self._last[key_id] = nonce
        return Reason.VALID

    def forget(self, key_id: str) -> None:
        self._last.pop(key_id, None)

    def _advance(self, key_id: str, nonce: int) -> bool:
        with self._store.transaction() as tx:
            last = tx.last_nonce(key_id)
            if last is not None and nonce <= last:
                self._last[key_id] = last
                return False
            tx.set_last_nonce(key_id, nonce)
        return True

    def _record_windowed(self, key_id: str, nonce: int, now_ms: int) -> bool:
        try:
            with self._store.transaction() as tx:
                fresh = tx.record_seen_nonce(key_id, nonce, expires_at=nonce + 2 * NONCE_WINDOW_MS)
                self._accepted += 1
                if self._accepted % 1000 == 0:
                    tx.purge_seen_nonces(before=now_ms - NONCE_WINDOW_MS)
        except sqlalchemy.exc.IntegrityError:
            return False
        return fresh
