"""WhiteBIT nonce state: a monotonic last nonce per key, or windowed nonces that are never reused.

Each accepted nonce is written to the store before the request is accepted, so a restarted server
still refuses a replay. The store's atomic conditional writes decide races between workers; the
in-memory copy only answers the obvious replays without a write.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import sqlalchemy.exc

from keyplane.auth.request import Reason
from keyplane.auth.whitebit import NONCE_WINDOW_MS
from keyplane.store import Store

# SQLite's fast path: one atomic statement, its own (WAL, synchronous=NORMAL) transaction. The row is
# written only when the nonce is higher; ``rowcount`` says whether it was. Through SQLAlchemy the same
# check-and-set cost ~700 us a request (statement building, pool checkout, BEGIN IMMEDIATE); this costs
# tens of microseconds (bench/README.md).
_ADVANCE_SQLITE = (
    "INSERT INTO key_nonces (api_key_id, last_nonce) VALUES (?, ?) "
    "ON CONFLICT (api_key_id) DO UPDATE SET last_nonce = excluded.last_nonce "
    "WHERE excluded.last_nonce > key_nonces.last_nonce"
)
_RECORD_SQLITE = "INSERT INTO seen_nonces (api_key_id, nonce, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


class NonceGuard:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._last: dict[str, int] = {}
        self._accepted = 0
        self._raw: Any = None  # SQLite only: a pooled DB-API connection (autocommit) kept for nonces
        self._raw_lock = threading.Lock()

    def close(self) -> None:
        with self._raw_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    def _execute_sqlite(self, sql: str, params: tuple[object, ...]) -> int:
        with self._raw_lock:
            if self._raw is None:
                self._raw = self._store.engine.raw_connection()
            cursor = self._raw.cursor()
            try:
                cursor.execute(sql, params)
                return int(cursor.rowcount)
            finally:
                cursor.close()

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
        if self._store.is_sqlite:
            try:
                if self._execute_sqlite(_ADVANCE_SQLITE, (key_id, nonce)) == 1:
                    return True
            except sqlite3.IntegrityError:  # the key was deleted meanwhile (foreign key): refuse
                return False
            with self._store.reading() as tx:
                last = tx.last_nonce(key_id)
            if last is not None:
                self._last[key_id] = last
            return False
        with self._store.transaction() as tx:
            last = tx.last_nonce(key_id)
            if last is not None and nonce <= last:
                self._last[key_id] = last
                return False
            tx.set_last_nonce(key_id, nonce)
        return True

    def _record_windowed(self, key_id: str, nonce: int, now_ms: int) -> bool:
        if self._store.is_sqlite:
            try:
                fresh = self._execute_sqlite(_RECORD_SQLITE, (key_id, nonce, nonce + 2 * NONCE_WINDOW_MS)) == 1
            except sqlite3.IntegrityError:
                return False
            self._accepted += 1
            if fresh and self._accepted % 1000 == 0:
                with self._store.transaction() as tx:
                    tx.purge_seen_nonces(before=now_ms - NONCE_WINDOW_MS)
            return fresh
        try:
            with self._store.transaction() as tx:
                fresh = tx.record_seen_nonce(key_id, nonce, expires_at=nonce + 2 * NONCE_WINDOW_MS)
                self._accepted += 1
                if self._accepted % 1000 == 0:
                    tx.purge_seen_nonces(before=now_ms - NONCE_WINDOW_MS)
        except sqlalchemy.exc.IntegrityError:
            return False
        return fresh
