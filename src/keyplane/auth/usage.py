"""Last use of each key: recorded in memory on the hot path, written to the store in batches.

A valid verification costs one clock read and one dict store (``pending[key_id] = (time.time(), ip)``,
inlined in the verifier); a thread writes what gathered every ``interval`` seconds in one statement
(``Transaction.record_usage``), and ``close`` writes the rest. A key used a million times between two
flushes is one row of the statement. The flush takes entries out one by one (``dict.pop``, atomic under
the GIL), so a use recorded meanwhile is either in this batch or the next, never lost. A store that is
down keeps the batch for the next flush (unless a newer use came), and no request ever waits on it.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy.exc

from keyplane.outages import warn
from keyplane.store import Store

log = logging.getLogger("keyplane.usage")

# KEYPLANE_LAST_USED_FLUSH_S: how often the gathered uses are written
FLUSH_INTERVAL_S = 5.0


class UsageRecorder:
    """key id -> (Unix ms, client address) of its last valid verification in this process."""

    __slots__ = ("_lock", "_stop", "_store", "_thread", "interval", "pending")

    def __init__(self, store: Store, interval: float = FLUSH_INTERVAL_S) -> None:
        self._store = store
        self.interval = interval
        # key id -> (Unix seconds, client address); never replaced, so the verifier may hold it
        self.pending: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()  # one flush at a time (the thread's and close's)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used(self, key_id: str, client_ip: str) -> None:
        """The hot path's call (the verifier inlines the same two steps)."""
        self.pending[key_id] = (time.time(), client_ip)

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="keyplane-usage", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> int:
        """Writes what gathered since the last flush; returns how many keys. Never raises."""
        with self._lock:
            pending = self.pending
            taken: dict[str, tuple[float, str]] = {}
            for key_id in list(pending):
                seen = pending.pop(key_id, None)
                if seen is not None:
                    taken[key_id] = seen
            if not taken:
                return 0
            batch = [(key_id, int(at * 1000), ip) for key_id, (at, ip) in taken.items()]
            try:
                self._write(batch)
            except Exception as error:
                # kept for the next flush, unless a newer use of the key came meanwhile
                for key_id, seen in taken.items():
                    newer = pending.get(key_id)
                    if newer is None or newer[0] < seen[0]:
                        pending[key_id] = seen
                warn("last-used times could not be written", error)
                return 0
            return len(batch)

    def _write(self, batch: list[tuple[str, int, str]]) -> None:
        try:
            with self._store.transaction() as tx:
                tx.record_usage(batch)
        except sqlalchemy.exc.IntegrityError:
            # a key deleted since it verified (its row is gone, the foreign key refuses): leave it out
            with self._store.transaction() as tx:
                known = tx.existing_key_ids([key_id for key_id, _at, _ip in batch])
                tx.record_usage([entry for entry in batch if entry[0] in known])

    def close(self) -> None:
        """Stops the thread and writes what is left (at shutdown)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self.flush()
