"""WhiteBIT nonce state in the store: atomic check-and-set writes, the only store writes on the hot path.

On SQLite each write is one atomic statement on a kept DB-API connection (its own WAL transaction):
through SQLAlchemy the same check-and-set cost ~700 us a request (statement building, pool checkout,
BEGIN IMMEDIATE); this costs tens of microseconds (bench/README.md). Elsewhere (PostgreSQL) the
store's ordinary transactions decide it.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import sqlalchemy.exc

from keyplane.store.store import Store

# The row is written only when the nonce is higher; ``rowcount`` says whether it was.
_ADVANCE_SQLITE = (
    "INSERT INTO key_nonces (api_key_id, last_nonce) VALUES (?, ?) "
    "ON CONFLICT (api_key_id) DO UPDATE SET last_nonce = excluded.last_nonce "
    "WHERE excluded.last_nonce > key_nonces.last_nonce"
)
_RECORD_SQLITE = "INSERT INTO seen_nonces (api_key_id, nonce, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"


class NonceLedger:
    """``advance`` (monotonic nonces) and ``record`` (windowed nonces), each atomic across workers."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._raw: Any = None  # SQLite only: a pooled DB-API connection (autocommit) kept for nonces
        self._raw_lock = threading.Lock()

    def close(self) -> None:
        with self._raw_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    def advance(self, key_id: str, nonce: int) -> tuple[bool, int | None]:
        """Sets the key's last nonce to ``nonce`` if it is higher: (whether it was, the last one if not)."""
        if self._store.is_sqlite:
            try:
                if self._execute_sqlite(_ADVANCE_SQLITE, (key_id, nonce)) == 1:
                    return True, None
            except sqlite3.IntegrityError:  # the key was deleted meanwhile (foreign key): refuse
                return False, None
            with self._store.reading() as tx:
                return False, tx.last_nonce(key_id)
        with self._store.transaction() as tx:
            last = tx.last_nonce(key_id)
            if last is not None and nonce <= last:
                return False, last
            tx.set_last_nonce(key_id, nonce)
        return True, None

    def record(self, key_id: str, nonce: int, expires_at: int) -> bool:
        """Records a windowed nonce; False when it was already seen (a replay) or the key is gone."""
        if self._store.is_sqlite:
            try:
                return self._execute_sqlite(_RECORD_SQLITE, (key_id, nonce, expires_at)) == 1
            except sqlite3.IntegrityError:
                return False
        try:
            with self._store.transaction() as tx:
                return tx.record_seen_nonce(key_id, nonce, expires_at=expires_at)
        except sqlalchemy.exc.IntegrityError:
            return False

    def purge(self, before: int) -> None:
        with self._store.transaction() as tx:
            tx.purge_seen_nonces(before=before)

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
