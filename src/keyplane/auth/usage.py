"""Last use of each key: noted in memory on the hot path, stamped each second, written in batches.

A valid verification costs one dict store (``pending[key_id] = client_ip``, inlined in the verifier): no
clock read, which in some sandboxes is a system call costing more than the rest of the recording
(bench/README.md). A thread stamps what gathered with the time once a second (so a recorded use is at
most a second later than the real one; WhiteBIT's ``lastActivity`` counts seconds anyway) and writes
every ``interval`` seconds in one statement (``Transaction.record_usage``); ``close`` writes the rest. A
key used a million times between two flushes is one row. Entries are taken out one by one (``dict.pop``,
atomic under the GIL), so a use noted meanwhile is stamped now or at the next tick, never lost. A store
that is down keeps the batch for the next flush (unless a newer use came), and no request waits on it.
"""

from __future__ import annotations

import logging
import threading
import time

import sqlalchemy.exc

from keyplane.outages import warn
from keyplane.store import Store

log = logging.getLogger("keyplane.usage")

# KEYPLANE_LAST_USED_FLUSH: how often the gathered uses are written
FLUSH_INTERVAL_S = 5.0
# how often noted uses are stamped with the time: the precision of a recorded last use
STAMP_EVERY_S = 1.0


class UsageRecorder:
    """key id -> client address of its last valid verification, stamped and written in batches."""

    __slots__ = ("_lock", "_stamped", "_stop", "_store", "_thread", "interval", "pending")

    def __init__(self, store: Store, interval: float = FLUSH_INTERVAL_S) -> None:
        self._store = store
        self.interval = interval
        # key id -> client address, noted by the verifier; never replaced, so the verifier may hold it
        self.pending: dict[str, str] = {}
        self._stamped: dict[str, tuple[int, str]] = {}  # key id -> (Unix ms, address): the next write
        self._lock = threading.Lock()  # the thread's and close's (or a test's) flushes, one at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def used(self, key_id: str, client_ip: str) -> None:
        """What the verifier does inline."""
        self.pending[key_id] = client_ip

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="keyplane-usage", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        tick = min(STAMP_EVERY_S, self.interval)
        next_write = time.monotonic() + self.interval
        while not self._stop.wait(tick):
            with self._lock:
                self._stamp()
            if time.monotonic() >= next_write:
                self.flush()
                next_write = time.monotonic() + self.interval

    def _stamp(self) -> None:
        pending, stamped = self.pending, self._stamped
        now = int(time.time() * 1000)
        for key_id in list(pending):
            ip = pending.pop(key_id, None)
            if ip is not None:
                stamped[key_id] = (now, ip)

    def flush(self) -> int:
        """Stamps what was noted and writes every stamped use; returns how many keys. Never raises."""
        with self._lock:
            self._stamp()
            taken, self._stamped = self._stamped, {}
            if not taken:
                return 0
            batch = [(key_id, at, ip) for key_id, (at, ip) in taken.items()]
            try:
                self._write(batch)
            except Exception as error:
                for key_id, seen in taken.items():  # kept for the next flush, unless stamped anew meanwhile
                    self._stamped.setdefault(key_id, seen)
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
