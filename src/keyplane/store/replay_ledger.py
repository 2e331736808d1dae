"""The Bitget replay records of a SQLite store: a request accepted once, decided by file order, no lock.

A replay record is 16 bytes, ``token i64 | expires_at i64`` (little-endian): ``token`` is 64 bits of the
accepted signature (auth/verifier.py), ``expires_at`` the time (ms) until which a repeat is refused. One
signed request has one timestamp, so every copy of it carries the same ``expires_at`` and lands in the
same **bucket**: the file ``<database path>.replay/<expires_at // BUCKET_MS>``. A bucket's file is only
needed until its last ``expires_at`` has passed, so records expire by deleting whole files (at the first
bucket a process opens after a bucket has ended ``KEEP_MS`` ago); there is no compaction into SQLite.

**Who wins: the earlier record in the file.** Every process opens a bucket ``O_APPEND``. One accept, under
the process's ``threading.Lock`` only:

1. a token this process has already read in the bucket is refused at once (nothing is written);
2. ``os.write`` the record: on a local filesystem an ``O_APPEND`` write of a regular file takes the
   inode's lock, so records from all processes land whole, one after another, in one order;
3. ``os.lseek(fd, 0, SEEK_CUR)`` is the end of this process's own record (the descriptor is this
   process's own: see fork below). If the record starts exactly where this process last read to,
   nobody appended meanwhile (the common case with one worker): accepted. Otherwise ``pread`` the records
   appended before it; if one holds the same token, the earlier one won and this request is refused (its
   own record is then a harmless later copy: whoever reads it has already seen the earlier one).

Two processes racing on one token both append; each reads everything before its own record, so exactly
one of them (the earlier in the file) finds no earlier copy. Why not the WhiteBIT nonce journal
(store/nonce_journal.py) any more: its ``flock`` + ``pread`` + 168-byte record, and above all the
compaction that wrote every record into SQLite's ``seen_nonces`` (~10.8 us per record amortized), made a
replay-protected Bitget POST cost ~5x a GET (bench/README.md, "Replay records"); here it is one
``write`` and one ``lseek`` (a ``pread`` only when other processes appended meanwhile).

**Durability is the store's own** (as the nonce journal's): the record is written into the page cache
before the request is accepted, unsynced. A process that crashes loses nothing; a power loss may lose
the last moments, as SQLite's ``synchronous=NORMAL`` may. A restart reads each live bucket's file once, at
its first accept there (step 1's set is filled then).

**Torn and zeroed records.** A record is used only if its ``expires_at`` lies inside its file's bucket:
the zeros a power loss can leave at a file's end (or any garbage) never refuse a request. A ``write`` of
16 bytes at a multiple of 16 never straddles a filesystem block, so it is whole or absent (a full disk
fails it with nothing written: the request is refused as an outage). A file whose length is not a
multiple of 16 anyway (edited by hand, say) cannot be read in order: its records fail closed
(``LedgerError``, answered as an outage) until the bucket has expired.

**Clocks.** The bucket comes from the request's own ``expires_at``, not from the clock, so processes
whose clocks read either side of a bucket edge still meet in one file. A file is deleted ``KEEP_MS``
after its bucket ended, and ``record`` refuses an ``expires_at`` already past (the verifier's timestamp
window refuses such a request earlier anyway); only a wall clock stepped back by more than ``KEEP_MS``
could reach a deleted bucket again.

**Fork.** A child forked after a bucket was opened shares the parent's file offsets, which step 3 relies
on: it closes its copies and starts again (the files are read again at its first accept). Processes
started with ``spawn`` open their own. With an in-memory database there is no file: one set per bucket.

A token is 64 bits of a signature made with a key the sender holds: two different requests share one with
a probability of 2^-64 per pair, so tokens of all keys share one namespace.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import weakref
from array import array
from struct import Struct

BUCKET_MS = 30_000
KEEP_MS = 60_000  # a bucket's file is deleted this long after its last expires_at
RECORD = Struct("<qq")  # token, expires_at
RECORD_SIZE = RECORD.size
_READ_CHUNK = RECORD_SIZE * 65536

_write = os.write
_lseek = os.lseek
_SEEK_CUR = os.SEEK_CUR
_pack = RECORD.pack


class LedgerError(OSError):
    """A bucket's file cannot be read in order (its length is not a multiple of the record size)."""


def ledger_directory(database: str) -> str:
    return os.path.abspath(database) + ".replay"


class _Bucket:
    __slots__ = ("fd", "number", "read_to", "tokens")

    def __init__(self, number: int, fd: int) -> None:
        self.number = number
        self.fd = fd
        self.read_to = 0  # this process has read (or written) every record before this offset
        self.tokens: set[int] = set()  # the tokens of those records


class ReplayLedger:
    """``record(key_id, token, expires_at, now_ms)``: True the first time across every process sharing
    ``directory`` (``None``: this process only), False for a repeat before ``expires_at``. ``key_id`` is
    not used (tokens share one namespace): it gives ``record`` the shape of the store's other
    check-and-sets, so the verifier calls it with no wrapper in between."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._buckets: dict[int, _Bucket] = {}
        self._oldest = -1  # buckets below this number were dropped
        _open_ledgers.add(self)

    def record(self, key_id: str, token: int, expires_at: int, now_ms: int) -> bool:
        if expires_at < now_ms:  # past its window: refused (the verifier's timestamp check comes first)
            return False
        number = expires_at // BUCKET_MS
        with self._lock:
            bucket = self._buckets.get(number)
            if bucket is None:
                bucket = self._open(number, now_ms)
            tokens = bucket.tokens
            if token in tokens:
                return False
            fd = bucket.fd
            if fd < 0:  # in memory
                tokens.add(token)
                return True
            if _write(fd, _pack(token, expires_at)) != RECORD_SIZE:
                raise OSError(f"the replay ledger {self.directory} could not take a whole record")
            end = _lseek(fd, 0, _SEEK_CUR)
            start = end - RECORD_SIZE
            accepted = True
            if start != bucket.read_to:
                self._read(bucket, start)
                accepted = token not in tokens
            bucket.read_to = end
            tokens.add(token)
            return accepted

    # the files ---------------------------------------------------------------------------------------

    def _open(self, number: int, now_ms: int) -> _Bucket:
        """The bucket's state, its file opened and read as it stands; old buckets dropped and deleted."""
        self._expire(now_ms)
        if self.directory is None:
            bucket = _Bucket(number, -1)
        else:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            path = os.path.join(self.directory, str(number))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            bucket = _Bucket(number, fd)
            try:
                self._read(bucket, os.fstat(fd).st_size)
            except BaseException:
                os.close(fd)
                raise
        self._buckets[number] = bucket
        return bucket

    def _read(self, bucket: _Bucket, until: int) -> None:
        """Adds the tokens of the records in ``[bucket.read_to, until)`` and moves ``read_to`` there."""
        if until % RECORD_SIZE:
            raise LedgerError(f"the replay ledger bucket {self.directory}/{bucket.number} is not whole records")
        low = bucket.number * BUCKET_MS
        high = low + BUCKET_MS
        tokens = bucket.tokens
        offset = bucket.read_to
        while offset < until:
            data = os.pread(bucket.fd, min(until - offset, _READ_CHUNK), offset)
            if not data:
                break
            data = data[: len(data) - len(data) % RECORD_SIZE]
            values = array("q")
            values.frombytes(data)
            if values.itemsize != 8:  # pragma: no cover - every platform keyplane runs on
                raise RuntimeError("array('q') is not 64-bit")
            if sys.byteorder != "little":  # pragma: no cover
                values.byteswap()
            for index in range(0, len(values), 2):
                if low <= values[index + 1] < high:  # zeros and garbage refuse nothing
                    tokens.add(values[index])
            offset += len(data)
        bucket.read_to = max(bucket.read_to, offset)

    def _expire(self, now_ms: int) -> None:
        """Drops the buckets that ended ``KEEP_MS`` ago, here and (their files) in the directory."""
        limit = (now_ms - KEEP_MS) // BUCKET_MS  # a bucket below ``limit`` ended before now - KEEP_MS
        if limit <= self._oldest:
            return
        self._oldest = limit
        for number in [n for n in self._buckets if n < limit]:
            bucket = self._buckets.pop(number)
            if bucket.fd >= 0:
                os.close(bucket.fd)
        if self.directory is None:
            return
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.isdigit() and int(entry.name) < limit:
                with contextlib.suppress(FileNotFoundError):  # another process deleted it first
                    os.unlink(entry.path)

    # lifetime ----------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:
        for bucket in self._buckets.values():
            if bucket.fd >= 0:
                os.close(bucket.fd)
        self._buckets = {}
        self._oldest = -1

    def _after_fork(self) -> None:
        """In a forked child: the parent's descriptors share their offsets with it (step 3 reads them)."""
        self._lock = threading.Lock()
        self._release()


_open_ledgers: weakref.WeakSet[ReplayLedger] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    for ledger in list(_open_ledgers):
        ledger._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)


def read_ledger(directory: str) -> dict[int, list[tuple[int, int]]]:
    """Every bucket's records in file order, as (token, expires_at), torn ones included; for tests."""
    found: dict[int, list[tuple[int, int]]] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if name.isdigit():
            with open(os.path.join(directory, name), "rb") as file:
                data = file.read()
            found[int(name)] = list(RECORD.iter_unpack(data[: len(data) - len(data) % RECORD_SIZE]))
    return found
