"""Follows the store's ``key_changes`` so that every change committed by another process (another worker,
another node, the ``keyplane`` command) reaches this process's key cache, and none is ever skipped.

Three things run here, in two threads:

- **A cursor with gaps.** ``key_changes`` ids are taken before their transaction commits, so a lower id can
  commit after a higher one has been read. Each poll reads the ids above the highest seen *and* the ids
  below it that were missing when it was read (its gaps); a gap is re-read until it appears or
  ``GAP_SECONDS`` pass (a rolled-back transaction leaves a gap for good). Polls run every ``interval``.
- **PostgreSQL ``LISTEN``** on a dedicated connection: every transaction that changes keys sends
  ``NOTIFY`` with their names, which PostgreSQL delivers at commit; the keys are dropped at once and a poll
  follows. A lost connection only costs speed: the cursor does not depend on it.
- **A backstop**: cache entries older than the cache's ``ttl`` are re-validated against the store here,
  off the hot path (``KeyCache.revalidate``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import sqlalchemy.exc

from keyplane import outages
from keyplane.store import Store
from keyplane.store.store import now_ms

log = logging.getLogger("keyplane.changes")

KEEP_MS = 24 * 3600 * 1000
# How long a missing id is re-read. The id is taken by the transaction's last statement, so only its
# commit separates the two: a minute is far beyond any commit; the cache's TTL covers the rest.
GAP_SECONDS = 60.0
MAX_GAPS = 10_000
# A starting feed re-reads this many ids below the newest, so that changes still committing then are gaps.
TRAILING_IDS = 1_000


class KeyChangeFeed:
    def __init__(
        self,
        store: Store,
        invalidate: Callable[[Sequence[str]], None],
        interval: float = 0.25,
        *,
        clear: Callable[[], None] | None = None,
        revalidate: Callable[[], object] | None = None,
        listen: bool = True,
    ) -> None:
        self._store = store
        self._invalidate = invalidate
        self._clear = clear
        self._revalidate = revalidate
        self._interval = interval
        with store.reading() as tx:
            self._last = max(0, tx.last_key_change() - TRAILING_IDS)
        self._gaps: dict[int, float] = {}  # id -> when it was first seen missing (monotonic)
        self._poll_lock = threading.Lock()
        self._stopped = threading.Event()
        self._wake = threading.Event()
        self.poll()
        self._threads = [threading.Thread(target=self._run, name="keyplane-key-changes", daemon=True)]
        self.listening = threading.Event()  # set while the LISTEN connection is up (tests, health)
        channel = store.changes_channel() if listen else None
        if channel is not None:
            self._threads.append(
                threading.Thread(target=self._listen, args=(channel,), name="keyplane-key-notify", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    @property
    def gaps(self) -> int:
        return len(self._gaps)

    def wake(self) -> None:
        """Polls now (e.g. after the Redis channel came back: whatever it missed is in the store)."""
        self._wake.set()

    def poll(self) -> None:
        """Drops every key changed since the last poll, gaps included; runs in the feed's thread."""
        with self._poll_lock:
            with self._store.reading() as tx:
                changes = tx.key_changes_after(self._last, sorted(self._gaps))
            now = time.monotonic()
            seen = {change_id for change_id, _key in changes}
            for change_id in seen:
                self._gaps.pop(change_id, None)
            newest = max(seen, default=self._last)
            if newest > self._last:
                for missing in range(self._last + 1, newest):
                    if missing not in seen:
                        self._gaps[missing] = now
                self._last = newest
            for change_id, since in list(self._gaps.items()):
                if now - since > GAP_SECONDS:
                    del self._gaps[change_id]
            overflow = len(self._gaps) > MAX_GAPS
            if overflow:
                self._gaps.clear()
        if overflow and self._clear is not None:
            log.warning("more than %d missing change ids: the key cache starts over", MAX_GAPS)
            self._clear()
        if changes:
            self._invalidate(sorted({api_key for _id, api_key in changes}))

    def close(self) -> None:
        self._stopped.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _run(self) -> None:
        last_purge = time.monotonic()
        while not self._stopped.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                self.poll()
                if self._revalidate is not None:
                    self._revalidate()
                if time.monotonic() - last_purge > 3600:
                    last_purge = time.monotonic()
                    with self._store.transaction() as tx:
                        tx.purge_key_changes(before=now_ms() - KEEP_MS)
            except sqlalchemy.exc.SQLAlchemyError as error:
                # an outage is one throttled line; anything else keeps its traceback
                if outages.unavailable(error) is not None:
                    outages.warn("key change feed: the store is unavailable; retrying", error)
                else:
                    log.warning("could not read key changes; retrying", exc_info=True)
                self._stopped.wait(1.0)
            except Exception:  # never let the thread die: the cache would stop hearing of changes
                log.exception("key change feed error; retrying")
                self._stopped.wait(1.0)

    def _listen(self, channel: str) -> None:
        import psycopg
        from psycopg import sql

        args, kwargs = self._store.listen_connection_args()
        kwargs = {"connect_timeout": 5, **kwargs, "autocommit": True}
        failures = 0
        while not self._stopped.is_set():
            try:
                with psycopg.connect(*args, **kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    if failures:
                        log.info("key change notifications back")
                    failures = 0
                    self._wake.set()  # whatever committed while not listening is in the table
                    while not self._stopped.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            if notice.payload:
                                self._invalidate(notice.payload.split(","))
                            self._wake.set()
            except psycopg.Error as error:
                self.listening.clear()
                if not failures:  # once per outage: the cursor still brings every change meanwhile
                    log.warning("key change notifications lost (%s); reconnecting", type(error).__name__)
                failures += 1
                self._stopped.wait(min(1.0 * failures, 5.0))
        self.listening.clear()
