"""Once-only state in the store: WhiteBIT nonces and Bitget replay records, as atomic check-and-sets, the
only store writes on the hot path.

On SQLite every accepted nonce is one record appended to the store's nonce journal
(``<database>.nonces``, ``store/nonce_journal.py``) under an exclusive ``flock``, about 2 us, instead of one
SQLite upsert per request (~9 us); the journal is moved into the ``key_nonces`` and ``seen_nonces`` tables
(the snapshot) whenever it passes 8 MiB. This module gives the journal its two ways into SQLite: loading
one key's snapshot, and compaction. With an in-memory database the state is kept in memory only.

Bitget replay records (auth/nonces.py ``accept_once``, ``record_once`` here) go elsewhere on SQLite: the
replay ledger (``<database>.replay/``, ``store/replay_ledger.py``), 16-byte records in time-bucketed files
that expire by deletion, decided by file order without a lock (~1 system call each, no compaction). On
PostgreSQL they are the key's "windowed nonces": ``seen_nonces`` rows holding a 64-bit token of the
accepted signature (a key signs in one scheme only, so its rows are all nonces or all tokens).

On PostgreSQL one conditional statement decides each check-and-set, in its own autocommit transaction
(``_ADVANCE_PG``, ``_RECORD_PG``; concurrent requests' claims are decided together, one statement of the
same kind and one commit per batch: ``store/nonce_batch.py``): under READ COMMITTED an
``INSERT … ON CONFLICT DO UPDATE … WHERE`` locks the conflicting row and evaluates its ``WHERE`` against
the newest committed version, so of two nodes sending the same nonce (a key's first included: the second
insert waits for the first and then takes the conflict path) exactly one gets its row back. A key deleted
meanwhile is a foreign-key violation: ``KeyGone``, which the caller answers as an unknown key. These
statements block on the network: ``blocking`` says so before anything is called (``Verifier.verify_async``
awaits the batch on the event loop; ``advance`` and the others wait in the calling thread).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc

from keyplane.store.nonce_batch import NonceBatcher
from keyplane.store.nonce_journal import COMPACT_BYTES, NonceJournal, journal_path, read_journal
from keyplane.store.replay_ledger import ReplayLedger, ledger_directory
from keyplane.store.store import Store

_LOAD_LAST = "SELECT last_nonce FROM key_nonces WHERE api_key_id = ?"
_LOAD_SEEN = "SELECT nonce, expires_at FROM seen_nonces WHERE api_key_id = ? AND expires_at >= ?"
# Compaction: a key deleted meanwhile is skipped (the foreign keys would refuse it); a row is only raised.
_SNAPSHOT_LAST = (
    "INSERT INTO key_nonces (api_key_id, last_nonce) SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?1) "
    "ON CONFLICT (api_key_id) DO UPDATE SET last_nonce = excluded.last_nonce "
    "WHERE excluded.last_nonce > key_nonces.last_nonce"
)
_SNAPSHOT_SEEN = (  # parameters (expires_at, key id, nonce), as the journal keeps them
    "INSERT INTO seen_nonces (api_key_id, nonce, expires_at) SELECT ?2, ?3, ?1 "
    "WHERE EXISTS (SELECT 1 FROM api_keys WHERE id = ?2) ON CONFLICT DO NOTHING"
)
_PURGE_SEEN = "DELETE FROM seen_nonces WHERE expires_at < ?"

# PostgreSQL: one statement each, the row comes back only when this call moved the state (module docstring).
_ADVANCE_PG = sa.text(
    "INSERT INTO key_nonces (api_key_id, last_nonce) VALUES (:key_id, :nonce) "
    "ON CONFLICT (api_key_id) DO UPDATE SET last_nonce = excluded.last_nonce "
    "WHERE key_nonces.last_nonce < excluded.last_nonce RETURNING last_nonce"
)
# An expired row of the same nonce (not purged yet) is taken over: its window has passed.
_RECORD_PG = sa.text(
    "INSERT INTO seen_nonces (api_key_id, nonce, expires_at) VALUES (:key_id, :nonce, :expires_at) "
    "ON CONFLICT (api_key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE seen_nonces.expires_at < :now RETURNING nonce"
)
_LAST_PG = sa.text("SELECT last_nonce FROM key_nonces WHERE api_key_id = :key_id")
_PURGE_PG = sa.text("DELETE FROM seen_nonces WHERE expires_at < :before")


class KeyGone(Exception):
    """The key was deleted (by another node, say) while its request was being verified."""


def sqlite_database(store: Store) -> str | None:
    """The SQLite database's file, or None when it lives in memory."""
    url = store.engine.url
    database = url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    if url.query.get("mode") == "memory":
        return None
    return database


class NonceLedger:
    """``advance`` (monotonic nonces) and ``record`` (windowed nonces), each atomic across workers.

    ``advance(key_id, nonce, now_ms)`` -> (True, None) when ``nonce`` is now the key's last nonce, else
    (False, the last nonce or None); ``record(key_id, nonce, expires_at, now_ms)`` -> False when the
    windowed nonce was already recorded (a replay). On PostgreSQL both raise ``KeyGone`` for a deleted key
    (on SQLite the journal records it anyway: compaction skips it). ``transactional``: the PostgreSQL
    path, whose expired windowed nonces the caller purges (``purge``); on SQLite compaction does it.
    ``blocking``: a call waits on the network (PostgreSQL), so an event loop should not make it.

    ``record_once(key_id, token, expires_at, now_ms)`` -> False for a request already recorded (a replay);
    on SQLite the replay ledger decides it (``key_id`` unused: tokens share one namespace).

    ``batcher``: on PostgreSQL, where every claim goes (``advance`` and the others wait for its batch;
    an event loop awaits ``batcher.advance_async`` and ``batcher.record_async`` instead).
    """

    advance: Callable[[str, int, int], tuple[bool, int | None]]
    record: Callable[[str, int, int, int], bool]
    record_once: Callable[[str, int, int, int], bool]

    def __init__(self, store: Store, *, compact_bytes: int = COMPACT_BYTES) -> None:
        self._store = store
        self._raw: Any = None  # SQLite only: a pooled DB-API connection (autocommit) kept for the journal
        self._raw_lock = threading.Lock()
        self.journal: NonceJournal | None = None
        self.replays: ReplayLedger | None = None
        self.batcher: NonceBatcher | None = None
        self._purge_before: int | None = None
        self.transactional = not store.is_sqlite
        self.blocking = self.transactional
        self._autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        if store.is_sqlite:
            database = sqlite_database(store)
            if database is None:
                self.journal = NonceJournal(None, compact_bytes=compact_bytes)
                self.replays = ReplayLedger(None)
            else:
                self.journal = NonceJournal(journal_path(database), self._load, self._compact, compact_bytes)
                self.replays = ReplayLedger(ledger_directory(database))
            self.advance = self.journal.advance
            self.record = self.journal.record
            self.record_once = self.replays.record
        else:
            self.batcher = batcher = NonceBatcher(
                store.engine, self._advance_alone, self._record_in_transaction, self._purge_if_asked
            )
            self.advance = self._advance_batched
            self.record = batcher.record
            self.record_once = batcher.record

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        if self.journal is not None:
            self.journal.close()
        if self.replays is not None:
            self.replays.close()
        with self._raw_lock:
            if self._raw is not None:
                self._raw.close()
                self._raw = None

    # SQLite: the journal's snapshot ------------------------------------------------------------------

    def _connection(self) -> Any:
        if self._raw is None:
            self._raw = self._store.engine.raw_connection()
        return self._raw.driver_connection

    def _load(self, key_id: str, now_ms: int) -> tuple[int | None, list[tuple[int, int]]]:
        with self._raw_lock:
            conn = self._connection()
            row = conn.execute(_LOAD_LAST, (key_id,)).fetchone()
            seen = conn.execute(_LOAD_SEEN, (key_id, now_ms)).fetchall()
        return (int(row[0]) if row is not None else None), [(int(n), int(e)) for n, e in seen]

    def _compact(self, last: dict[str, int], seen: list[tuple[int, str, int]], now_ms: int) -> None:
        """One transaction, synced to disk before the journal is truncated (see nonce_journal)."""
        with self._raw_lock:
            conn = self._connection()
            conn.execute("PRAGMA synchronous=FULL")
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(_SNAPSHOT_LAST, last.items())
                    conn.executemany(_SNAPSHOT_SEEN, seen)
                    conn.execute(_PURGE_SEEN, (now_ms,))
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")

    # PostgreSQL: one conditional statement each ----------------------------------------------------

    def _advance_in_transaction(self, key_id: str, nonce: int, now_ms: int) -> tuple[bool, int | None]:
        with self._autocommit.connect() as conn:
            try:
                if conn.execute(_ADVANCE_PG, {"key_id": key_id, "nonce": nonce}).first() is not None:
                    return True, None
            except sqlalchemy.exc.IntegrityError:
                raise KeyGone(key_id) from None
            last = conn.execute(_LAST_PG, {"key_id": key_id}).scalar()  # for the caller's in-memory copy
        return False, (int(last) if last is not None else None)

    def _advance_alone(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        return self._advance_in_transaction(key_id, nonce, now_ms)[0]

    def _advance_batched(self, key_id: str, nonce: int, now_ms: int) -> tuple[bool, int | None]:
        assert self.batcher is not None
        return self.batcher.advance(key_id, nonce, now_ms), None

    def _record_in_transaction(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        params = {"key_id": key_id, "nonce": nonce, "expires_at": expires_at, "now": now_ms}
        with self._autocommit.connect() as conn:
            try:
                return conn.execute(_RECORD_PG, params).first() is not None
            except sqlalchemy.exc.IntegrityError:
                raise KeyGone(key_id) from None

    def purge(self, before: int) -> None:
        with self._autocommit.connect() as conn:
            conn.execute(_PURGE_PG, {"before": before})

    def request_purge(self, before: int) -> None:
        """``purge`` later, on the batch thread after its next batch (never on the caller's event loop)."""
        self._purge_before = before

    def _purge_if_asked(self) -> None:
        before, self._purge_before = self._purge_before, None
        if before is not None:
            self.purge(before)


def recorded_nonces(store: Store, key_id: str) -> tuple[int | None, set[int]]:
    """One key's nonce state as every process sees it, snapshot and journal (SQLite files only): its last
    monotonic nonce, and the windowed nonces recorded (expired ones included until compaction drops them).
    Reads without writing; for inspection and tests."""
    database = sqlite_database(store)
    if not store.is_sqlite or database is None:
        raise ValueError("recorded_nonces reads a SQLite database file")
    snapshot: dict[str, Any] = {}

    def read_snapshot() -> None:
        with store.reading() as tx:
            snapshot["last"] = tx.last_nonce(key_id)
            rows = tx.conn.exec_driver_sql("SELECT nonce FROM seen_nonces WHERE api_key_id = ?", (key_id,)).all()
            snapshot["seen"] = {int(row[0]) for row in rows}

    journal_last, journal_seen = read_journal(journal_path(database), locked=read_snapshot)
    last: int | None = snapshot["last"]
    if key_id in journal_last:
        last = max(journal_last[key_id], last if last is not None else -1)
    seen: set[int] = snapshot["seen"] | journal_seen.get(key_id, set())
    return last, seen
