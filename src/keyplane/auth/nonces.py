"""Once-only acceptance: WhiteBIT nonces (a monotonic last nonce per key, or windowed nonces never reused)
and Bitget replay records (a state-changing request accepted once within its timestamp window).

Each accepted nonce or request is recorded in the store before the request is accepted, so a restarted
server, another worker or another node on the same store still refuses a replay. On SQLite a nonce is
one append to the store's nonce journal under a file lock (``store/nonce_journal.py``), a Bitget replay
record one lock-free append to the replay ledger (``store/replay_ledger.py``); on PostgreSQL each is one
conditional statement (``store/nonces.py``). The store decides races between workers and nodes. On
PostgreSQL the in-memory copy here answers the obvious replays of a monotonic nonce without a round trip;
on SQLite the journal's own in-memory state does.
"""

from __future__ import annotations

import os

from keyplane.auth.request import Reason
from keyplane.auth.whitebit import NONCE_MAX, NONCE_WINDOW_MS
from keyplane.store import Store
from keyplane.store.nonce_journal import COMPACT_BYTES
from keyplane.store.nonces import KeyGone, NonceLedger

PURGE_EVERY = 1000  # PostgreSQL: windowed nonces accepted between two purges of the expired ones

# Module constants: on Python 3.11 reading an enum member goes through the enum's metaclass (~70 ns).
_VALID = Reason.VALID
_TOO_LOW = Reason.NONCE_TOO_LOW
_REPLAYED = Reason.NONCE_REPLAYED
_OUT_OF_WINDOW = Reason.NONCE_OUT_OF_WINDOW
_UNSTORABLE = Reason.MISSING_NONCE
_REQUEST_REPLAYED = Reason.REQUEST_REPLAYED
_KEY_GONE = Reason.UNKNOWN_KEY


class NonceGuard:
    """``accept`` decides a WhiteBIT nonce and records it; thread-safe (the ledger locks what it shares).

    ``compact_bytes``: the size past which the SQLite nonce journal is moved into the store's tables.
    ``blocking``: deciding waits on the network (PostgreSQL); known before any call changes state.
    """

    def __init__(self, store: Store, *, compact_bytes: int = COMPACT_BYTES) -> None:
        self._ledger = NonceLedger(store, compact_bytes=compact_bytes)
        self._advance = self._ledger.advance
        self._record = self._ledger.record
        self._record_once = self._ledger.record_once
        self._transactional = self._ledger.transactional
        # PostgreSQL's ledger is a transaction per accept (it waits on the network); the SQLite journal is
        # one flock'd append of microseconds. The verifier runs a blocking accept off the event loop.
        self.blocking: bool = self._ledger.blocking
        self._last: dict[str, int] = {}
        self._accepted = 0

    def close(self) -> None:
        self._ledger.close()

    def journal_bytes(self) -> int | None:
        """The SQLite nonce journal's size (``/metrics``), None without one (PostgreSQL, in memory)."""
        journal = self._ledger.journal
        if journal is None or journal.path is None:
            return None
        try:
            return os.stat(journal.path).st_size
        except OSError:
            return 0  # not made yet: no nonce recorded since the last compaction

    def accept(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        """Records the nonce if it is acceptable; returns VALID or why not (UNKNOWN_KEY: deleted meanwhile)."""
        try:
            return self._accept(key_id, nonce, windowed, now_ms)
        except KeyGone:
            return _KEY_GONE

    def accept_once(self, key_id: str, token: int, expires_at: int, now_ms: int) -> Reason:
        """Records a request (``token``: 64 bits of its signature) until ``expires_at``; VALID the first time,
        REQUEST_REPLAYED after (UNKNOWN_KEY: the key was deleted meanwhile)."""
        try:
            if not self._record_once(key_id, token, expires_at, now_ms):
                return _REQUEST_REPLAYED
        except KeyGone:
            return _KEY_GONE
        if self._transactional:
            self._count_for_purge(now_ms)
        return _VALID

    def _count_for_purge(self, now_ms: int) -> None:
        self._accepted += 1
        if self._accepted % PURGE_EVERY == 0:
            # rows past their expiry, with a few seconds' slack for the clocks of other nodes
            self._ledger.purge(before=now_ms - NONCE_WINDOW_MS)

    def _accept(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        if windowed:
            if abs(nonce - now_ms) > NONCE_WINDOW_MS:
                return _OUT_OF_WINDOW
            # kept twice the window: a nonce that old is refused by the window check already
            if not self._record(key_id, nonce, nonce + 2 * NONCE_WINDOW_MS, now_ms):
                return _REPLAYED
            if self._transactional:
                self._count_for_purge(now_ms)
            return _VALID
        if nonce > NONCE_MAX:  # for callers that did not parse it with whitebit.parse_nonce: no store holds it
            return _UNSTORABLE
        if not self._transactional:  # SQLite: the journal keeps every key's last nonce in memory and decides alone
            return _VALID if self._advance(key_id, nonce, now_ms)[0] else _TOO_LOW
        last = self._last.get(key_id)
        if last is not None and nonce <= last:
            return _TOO_LOW
        advanced, stored = self._advance(key_id, nonce, now_ms)
        if not advanced:
            if stored is not None:
                self._last[key_id] = stored
            return _TOO_LOW
        self._last[key_id] = nonce
        return _VALID
