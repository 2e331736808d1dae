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
from collections.abc import Callable

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
        # SQLite: ``accept_once`` is the replay ledger's record and nothing more (no key can be gone: the
        # ledger names no key; nothing to purge), so the verifier calls this instead; None on PostgreSQL
        self.record_once_inline: Callable[[str, int, int, int], bool] | None = (
            None if self._transactional else self._record_once
        )
        self._replays = self._ledger.replays
        self._last: dict[str, int] = {}
        self._accepted = 0

    def replay_ledger_mode(self) -> str | None:
        """The SQLite replay ledger's mode in this process (``owner``, ``shared``, ``undecided``, ``memory``);
        None on PostgreSQL. For ``/metrics``."""
        return self._replays.mode if self._replays is not None else None

    def once_would_wait(self) -> bool:
        """Whether ``accept_once`` may wait for another process (SQLite: this process's first replay record,
        which may wait for the ledger's owner to hand it over); the event loop leaves such a call to a thread."""
        replays = self._replays
        return replays is not None and not replays.decide_nowait()

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

    async def accept_async(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        """``accept`` for an event loop, where ``blocking`` (PostgreSQL): the claim joins the next batch
        (``store/nonce_batch.py``) and the loop goes on meanwhile. An outage raises, as ``accept`` does."""
        batcher = self._ledger.batcher
        assert batcher is not None, "accept_async is for the PostgreSQL ledger (blocking)"
        refused = self._precheck(key_id, nonce, windowed, now_ms)
        if refused is not None:
            return refused
        try:
            if windowed:
                accepted = await batcher.record_async(key_id, nonce, nonce + 2 * NONCE_WINDOW_MS, now_ms)
            else:
                accepted = await batcher.advance_async(key_id, nonce, now_ms)
        except KeyGone:
            return _KEY_GONE
        return self._accepted_or(key_id, nonce, windowed, now_ms, accepted)

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

    async def accept_once_async(self, key_id: str, token: int, expires_at: int, now_ms: int) -> Reason:
        """``accept_once`` for an event loop, where ``blocking`` (as ``accept_async``)."""
        batcher = self._ledger.batcher
        assert batcher is not None, "accept_once_async is for the PostgreSQL ledger (blocking)"
        try:
            if not await batcher.record_async(key_id, token, expires_at, now_ms):
                return _REQUEST_REPLAYED
        except KeyGone:
            return _KEY_GONE
        self._count_for_purge(now_ms)
        return _VALID

    def _count_for_purge(self, now_ms: int) -> None:
        self._accepted += 1
        if self._accepted % PURGE_EVERY == 0:
            # rows past their expiry, with a few seconds' slack for the clocks of other nodes; on the
            # batch thread (PostgreSQL), never on the caller's event loop
            self._ledger.request_purge(before=now_ms - NONCE_WINDOW_MS)

    def _precheck(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason | None:
        """Why the nonce is refused without asking the store (PostgreSQL), or None: the store decides."""
        if windowed:
            return _OUT_OF_WINDOW if abs(nonce - now_ms) > NONCE_WINDOW_MS else None
        if nonce > NONCE_MAX:  # for callers that did not parse it with whitebit.parse_nonce: no store holds it
            return _UNSTORABLE
        last = self._last.get(key_id)
        if last is not None and nonce <= last:
            return _TOO_LOW
        return None

    def _accepted_or(self, key_id: str, nonce: int, windowed: bool, now_ms: int, accepted: bool) -> Reason:
        if windowed:
            if not accepted:
                return _REPLAYED
            self._count_for_purge(now_ms)
            return _VALID
        if not accepted:
            return _TOO_LOW
        if nonce > self._last.get(key_id, -1):  # concurrent accepts finish in any order: keep the highest
            self._last[key_id] = nonce
        return _VALID

    def _accept(self, key_id: str, nonce: int, windowed: bool, now_ms: int) -> Reason:
        if not self._transactional:  # SQLite: the journal decides alone, from its own in-memory state
            if windowed:
                if abs(nonce - now_ms) > NONCE_WINDOW_MS:
                    return _OUT_OF_WINDOW
                # kept twice the window: a nonce that old is refused by the window check already
                return _VALID if self._record(key_id, nonce, nonce + 2 * NONCE_WINDOW_MS, now_ms) else _REPLAYED
            if nonce > NONCE_MAX:
                return _UNSTORABLE
            return _VALID if self._advance(key_id, nonce, now_ms)[0] else _TOO_LOW
        refused = self._precheck(key_id, nonce, windowed, now_ms)
        if refused is not None:
            return refused
        if windowed:
            accepted = self._record(key_id, nonce, nonce + 2 * NONCE_WINDOW_MS, now_ms)
        else:
            accepted = self._advance(key_id, nonce, now_ms)[0]
        return self._accepted_or(key_id, nonce, windowed, now_ms, accepted)
