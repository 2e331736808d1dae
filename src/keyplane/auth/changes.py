"""Follows the store's ``key_changes`` so that a change made by another process (another worker, another
instance, the ``keyplane`` command) reaches this process's key cache within ``interval`` seconds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import sqlalchemy.exc

from keyplane.store import Store
from keyplane.store.store import now_ms

log = logging.getLogger("keyplane.changes")

KEEP_MS = 24 * 3600 * 1000


class KeyChangeFeed:
    def __init__(self, store: Store, invalidate: Callable[[Sequence[str]], None], interval: float = 0.25) -> None:
        self._store = store
        self._invalidate = invalidate
        self._interval = interval
        with store.reading() as tx:
            self._last = tx.last_key_change()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keyplane-key-changes", daemon=True)
        self._thread.start()

    def poll(self) -> None:
        """Drops every key changed since the last poll; runs in the feed's thread, callable in tests."""
        with self._store.reading() as tx:
            changes = tx.key_changes_after(self._last)
        if changes:
            self._last = changes[-1][0]
            self._invalidate([api_key for _id, api_key in changes])

    def close(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        rounds = 0
        while not self._stopped.wait(self._interval):
            try:
                self.poll()
                rounds += 1
                if rounds % 14_400 == 0:  # about once an hour
                    with self._store.transaction() as tx:
                        tx.purge_key_changes(before=now_ms() - KEEP_MS)
            except sqlalchemy.exc.SQLAlchemyError:
                log.warning("could not read key changes; retrying", exc_info=True)
