"""The Bitget replay records of a SQLite store: a request accepted once, across threads, processes and restarts.

A replay record is 16 bytes, ``token i64 | expires_at i64`` (little-endian): ``token`` is 64 bits of the
accepted signature (auth/verifier.py), ``expires_at`` the time (ms) until which a repeat is refused. One
signed request has one timestamp, so every copy of it carries the same ``expires_at`` and lands in the
same **bucket**: the file ``<database path>.replay/<expires_at // BUCKET_MS>``. A bucket's file is only
needed until its last ``expires_at`` has passed, so records expire by deleting whole files (at the first
bucket a process opens after a bucket has ended ``KEEP_MS`` ago); there is no compaction into SQLite.
Each process keeps the tokens of the live buckets it has read in a table (``Tokens``); a token already there is
refused at once, with nothing written.

**Two modes: one process owns the ledger, or all share it.** Which one is decided by a POSIX record lock
on ``<directory>/owner``, taken at a process's first record (not before: a CLI command that never records
never takes part):

- **Owner** (an exclusive lock: no other process records). The common case, ``keyplane serve`` with one
  worker. A record is a store into the bucket's file mapped with ``MAP_SHARED``: no system call at all.
  The mapped page is the file's page in the kernel's page cache, so a record outlives a crash of the
  process exactly as a ``write`` would. The mapping grows 1 MiB at a time with ``posix_fallocate``, so a
  full disk fails there, as an outage, never as a ``SIGBUS`` on a store into an unallocated page.
- **Shared** (shared locks: several processes, e.g. ``serve --workers N``). Each record is appended with
  no lock between processes, decided by file order:

  1. ``os.write`` the record to the bucket opened ``O_APPEND``: on a local filesystem such a write takes
     the inode's lock, so records from all processes land whole, one after another, in one order;
  2. ``os.lseek(fd, 0, SEEK_CUR)`` is the end of this process's own record. If it starts exactly where this
     process last read to, nobody appended meanwhile: accepted. Otherwise ``pread`` the records appended
     before it; if one holds the same token, the earlier one won and this request is refused (its own
     record is then a harmless later copy).

  Two processes racing on one token both append; each reads everything before its own record, so exactly
  one of them (the earlier in the file) finds no earlier copy.

**The owner's record** is one call of a small C extension (``store/_tokens.c``): ``Front.record`` finds
the bucket of the last record (``Front.hot``) and there, in ``Tokens``, the bucket's tokens in an
open-addressing table of 8-byte slots, checks, inserts and stores the 16-byte record into the mapping.
The call holds the GIL throughout, so it is one step for every other thread: no lock, and a bucket that
is dropped, grown or handed over meanwhile (under the ledger's lock) is *detached* first, after which it
decides nothing and the call goes on to the locked path in Python (``_record_locked``). In Python the same
step cost twice the budget of a replay-protected POST (a ``set`` of int objects, a ``threading.Lock``, a struct pack;
bench/README.md). Where the extension was not built, ``_PyTokens`` gives the same answers with a lock.

**The hand-over.** A process that finds the ledger owned writes a flag into the lock file and waits
(``JOIN_TIMEOUT_S``, then ``LedgerError``: an outage answer, never an unchecked acceptance) for a shared
lock. The owner's watcher thread reads the flag every ``POLL_S``; under the ledger's thread lock it unmaps
every bucket, cuts each file to its last record (the appends go after it) and turns its exclusive lock
into a shared one — one atomic step for ``fcntl`` locks, so no third process can take the ledger in
between. The owner's stores happened before that system call and the joiner reads the files after its
own lock call returns, so it sees every record. Later, when the watcher can turn its shared lock back
into an exclusive one (every other process has gone), the process owns the ledger again: it reads what
the others appended and maps the files once more. ``fcntl`` locks belong to a process, so one process has
one ledger per directory (``ReplayLedger(directory)`` returns it, counted); a lock dies with its process,
so a crashed owner never blocks the next.

Why not a lock-free shared table for every mode: Python has no atomic operation on shared memory (through
``ctypes`` one costs as much as the two system calls it would replace), and per-process logs would need
a memory fence Python does not document (bench/README.md, "Replay records"). The file order needs none.

**Durability is the store's own** (as the nonce journal's): a record is in the page cache before the
request is accepted, unsynced. A process that crashes loses nothing; a power loss may lose the last
moments, as SQLite's ``synchronous=NORMAL`` may. A restart reads each live bucket's file once, at its
first record there.

**Torn and zeroed records.** A record is used only if its ``expires_at`` lies inside its file's bucket: the
zeros of an owner's unused mapping (left at a file's end if it crashed) or of a power loss never refuse a
request. A 16-byte record at a multiple of 16 never straddles a page or a filesystem block. A file whose
length is not a multiple of 16 (edited by hand, say) cannot be read in order: its records fail closed
(``LedgerError``, answered as an outage) until the bucket has expired.

**Clocks.** The bucket comes from the request's own ``expires_at``, not from the clock, so processes
whose clocks read either side of a bucket edge still meet in one file. A file is deleted ``KEEP_MS``
after its bucket ended, and ``record`` refuses an ``expires_at`` already past (the verifier's timestamp
window refuses such a request earlier anyway); only a wall clock stepped back by more than ``KEEP_MS``
could reach a deleted bucket again.

**Fork.** A forked child holds none of its parent's locks: it closes its copies of the files and mappings
(never cutting them: they are the parent's) and decides its mode at its first record, as a new process
does. With an in-memory database there is no file: one ``set`` per bucket.

Every process that records into one directory must run this version: an earlier one appended without
asking the owner (stop every process before an upgrade, as for a migration).

A token is 64 bits of a signature made with a key the sender holds: two different requests share one with
a probability of 2^-64 per pair, so tokens of all keys share one namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import sys
import threading
import time
import weakref
from array import array
from collections.abc import Callable
from struct import Struct
from typing import Any

BUCKET_MS = 30_000
KEEP_MS = 60_000  # a bucket's file is deleted this long after its last expires_at
RECORD = Struct("<qq")  # token, expires_at
RECORD_SIZE = RECORD.size
POLL_S = 0.01  # how often an owner looks for a process waiting to join
TAKE_BACK_S = 1.0  # how often a process that handed over tries to own the ledger again
JOIN_TIMEOUT_S = 2.0  # how long a process waits for the owner to hand over (it looks every POLL_S)
JOIN_FOLLOW_S = 0.25  # how long another thread of the process waits on that wait before failing closed
JOIN_BACKOFF_S = 1.0  # after a wait in vain, records fail at once for this long (no new wait)
CHUNK = 1 << 20  # an owner maps (and allocates) a bucket's file this much at a time
OWNER_FILE = "owner"
_FLAG_AT = 8  # the byte of the owner file a waiting process sets
_READ_CHUNK = RECORD_SIZE * 65536
_GRANULE = mmap.ALLOCATIONGRANULARITY

_write = os.write
_lseek = os.lseek
_SEEK_CUR = os.SEEK_CUR
_pack = RECORD.pack

_MEMORY, _UNDECIDED, _OWNER, _SHARED = "memory", "undecided", "owner", "shared"


class _PyTokens:
    """``_tokens.Tokens`` in Python, where the C module is not built (no compiler at install) or cannot be
    one step (a free-threaded Python): a ``set``, and a lock that makes ``record`` and ``detach`` one step
    each, as the C calls are under the GIL. The same answers, at about twice the cost of a POST's record."""

    __slots__ = ("_at", "_high", "_lock", "_low", "_mapped", "_set")

    def __init__(self, low: int, high: int) -> None:
        self._low, self._high = low, high
        self._set: set[int] = set()
        self._lock = threading.Lock()
        self._mapped: mmap.mmap | None = None
        self._at = 0

    def add(self, token: int) -> bool:
        with self._lock:
            if token in self._set:
                return False
            self._set.add(token)
            return True

    def __contains__(self, token: int) -> bool:
        return token in self._set

    def __len__(self) -> int:
        return len(self._set)

    def record(self, token: int, expires_at: int) -> bool | None:
        if not self._low <= expires_at < self._high:
            return None
        with self._lock:
            if token in self._set:
                return False
            mapped = self._mapped
            if mapped is None or self._at + RECORD_SIZE > len(mapped):
                return None
            RECORD.pack_into(mapped, self._at, token, expires_at)
            self._at += RECORD_SIZE
            self._set.add(token)
            return True

    def attach(self, mapped: mmap.mmap, at: int) -> None:
        with self._lock:
            self._mapped, self._at = mapped, at

    def detach(self) -> int:
        with self._lock:
            at, self._mapped, self._at = self._at, None, 0
            return at


def _c_tokens() -> tuple[type[_PyTokens], Any] | None:
    try:
        from keyplane.store import _tokens
    except ImportError:
        return None
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    if not gil or getattr(_tokens, "ABI", None) != 3:  # 3: the interface this file calls
        return None
    return _tokens.Tokens, _tokens.Front  # type: ignore[return-value]  # the same interface (store/_tokens.pyi)


_C = _c_tokens()
_C_TOKENS, _Front = _C if _C is not None else (None, None)
Tokens: type[_PyTokens] = _C_TOKENS or _PyTokens  # which one is in use: ``Tokens is _PyTokens`` without C


class LedgerError(OSError):
    """A bucket cannot be decided: its file is not whole records, or the owner did not hand over."""


def ledger_directory(database: str) -> str:
    # the database file's real path: reached through a symlink, one database must still have one ledger
    return os.path.realpath(database) + ".replay"


class _Bucket:
    __slots__ = ("fd", "map_base", "mapped", "number", "read_to", "tokens")

    def __init__(self, number: int, fd: int) -> None:
        self.number = number
        self.fd = fd
        self.read_to = 0  # this process has read (or written) every record before this offset
        # the tokens of those records (and, attached, the owner's mapping)
        self.tokens = Tokens(number * BUCKET_MS, (number + 1) * BUCKET_MS)
        # the owner's mapping of ``CHUNK`` bytes of the file from ``map_base``
        self.mapped: mmap.mmap | None = None
        self.map_base = 0


_NO_BUCKET = _Bucket(-1, -1)


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, 1, 0)
    except OSError:  # EAGAIN / EACCES: another process holds a conflicting lock
        return False
    return True


def _allocate(fd: int, end: int) -> None:
    """Blocks for the file up to ``end``, so a store into the mapping never finds the disk full."""
    size = os.fstat(fd).st_size
    if end <= size:
        return
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, size, end - size)
    else:  # pragma: no cover - macOS: write the zeros
        os.pwrite(fd, bytes(end - size), size)


class ReplayLedger:
    """``record(key_id, token, expires_at, now_ms)``: True the first time across every process sharing
    ``directory`` (``None``: this object only), False for a repeat before ``expires_at``. ``key_id`` is
    not used (tokens share one namespace): it gives ``record`` the shape of the store's other
    check-and-sets, so the verifier calls it with no wrapper in between.

    A handle: the lock that decides the mode is the process's, so one process has one ledger per
    directory, shared by every handle on it (counted; the last handle's ``close`` releases it, and a
    closed handle's ``record`` raises). ``record`` is the shared ledger's own method, not a wrapper."""

    def __init__(self, directory: str | None) -> None:
        self._ledger = _Ledger.acquire(directory)
        self.directory = self._ledger.directory
        self.record: Callable[[str, int, int, int], bool] = self._ledger.record
        self._closed = False

    @property
    def mode(self) -> str:
        """``owner``, ``shared``, ``undecided`` (nothing recorded yet) or ``memory``; for tests and /metrics."""
        return self._ledger.mode

    def decide_nowait(self) -> bool:
        """Whether ``record`` is sure not to wait for another process: True once the mode is decided, which
        this tries at once without waiting (a process alone owns the ledger here and now). False: another
        process owns it, has been asked to hand it over, and the first record will wait for that."""
        return self._ledger.decide_nowait()

    def close(self) -> None:
        """Once per handle (a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        self.record = _closed_record
        self._ledger.release()


def _closed_record(key_id: str, token: int, expires_at: int, now_ms: int) -> bool:
    raise LedgerError("the replay ledger was closed")


class _Ledger:
    """One process's replay ledger of one directory (``ReplayLedger`` is a handle on it)."""

    directory: str | None

    @classmethod
    def acquire(cls, directory: str | None) -> _Ledger:
        if directory is None:
            ledger = cls(None)
            ledger._users = 1
            return ledger
        directory = os.path.realpath(directory)
        with _registry_lock:
            shared = _registry.get(directory)
            if shared is None or shared._closed:  # (a fork may copy one closed but still registered)
                shared = _registry[directory] = cls(directory)
            shared._users += 1
            return shared

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        # ``record``: with the C table, one C call that decides in the hot bucket's table and otherwise
        # calls ``_record_locked``; with the Python table, ``_record_py``, the same steps in Python
        self._front = _Front(self._record_locked) if _Front is not None and Tokens is _C_TOKENS else None
        self.record: Callable[[str, int, int, int], bool] = (
            self._front.record if self._front is not None else self._record_py
        )
        self._users = 0
        self._closed = False
        self._lock = threading.Lock()
        self._buckets: dict[int, _Bucket] = {}
        self._hot = _NO_BUCKET  # the bucket of the last record: most records go to it
        self._oldest = -1  # buckets below this number were dropped
        self._mode = _MEMORY if directory is None else _UNDECIDED
        self._owner_fd = -1
        self._join_failed_at = -JOIN_BACKOFF_S  # monotonic time of the last join that timed out
        self._joining = False  # a thread of this process waits for another process to hand over
        self._joined = threading.Condition(self._lock)
        self._stop: threading.Event | None = None
        _open_ledgers.add(self)

    @property
    def mode(self) -> str:
        return self._mode

    def _set_hot(self, bucket: _Bucket) -> None:
        self._hot = bucket
        if self._front is not None:
            self._front.hot = bucket.tokens if bucket is not _NO_BUCKET else None

    def decide_nowait(self) -> bool:
        if self._mode is not _UNDECIDED:
            return True
        if not self._lock.acquire(blocking=False):  # another thread is deciding (and may be waiting)
            return False
        try:
            if self._mode is _UNDECIDED and not self._closed:
                self._decide(wait=False)
            return self._mode is not _UNDECIDED
        finally:
            self._lock.release()

    def _record_py(self, key_id: str, token: int, expires_at: int, now_ms: int) -> bool:
        if expires_at < now_ms:  # past its window: refused (the verifier's timestamp check comes first)
            return False
        # No lock here: ``Tokens.record`` is one step for every other thread (module docstring, "The
        # owner's record"); a bucket dropped or handed over meanwhile is detached, and answers None.
        accepted = self._hot.tokens.record(token, expires_at)
        if accepted is not None:
            return accepted
        return self._record_locked(key_id, token, expires_at, now_ms)

    def _record_locked(self, key_id: str, token: int, expires_at: int, now_ms: int) -> bool:
        """Another bucket, a full mapping, a shared ledger or one in memory: under the ledger's lock."""
        with self._lock:
            if self._closed:
                raise LedgerError("the replay ledger was closed")
            number = expires_at // BUCKET_MS
            bucket = self._hot if self._hot.number == number else self._bucket(number, now_ms)
            tokens = bucket.tokens
            accepted = tokens.record(token, expires_at)
            if accepted is not None:
                return accepted
            if bucket.mapped is not None:  # the owner's mapping is full
                self._grow(bucket)
                return tokens.record(token, expires_at) is True
            fd = bucket.fd
            if fd < 0:  # in memory
                return tokens.add(token)
            # shared: append, then read what other processes appended before this record
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

    # buckets -----------------------------------------------------------------------------------------

    def _bucket(self, number: int, now_ms: int) -> _Bucket:
        if self._mode is _UNDECIDED:
            self._decide()
        bucket = self._buckets.get(number)
        if bucket is None:
            bucket = self._open(number, now_ms)
        self._set_hot(bucket)
        return bucket

    def _open(self, number: int, now_ms: int) -> _Bucket:
        """The bucket's state, its file opened and read as it stands (and mapped by an owner); old buckets
        dropped and deleted."""
        self._expire(now_ms)
        if self.directory is None:
            bucket = _Bucket(number, -1)
        else:
            path = os.path.join(self.directory, str(number))
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            bucket = _Bucket(number, fd)
            try:
                self._read(bucket, os.fstat(fd).st_size)
                if self._mode is _OWNER:
                    self._map(bucket)
            except BaseException:
                self._unmap(bucket, cut=False)
                os.close(fd)
                raise
        self._buckets[number] = bucket
        return bucket

    def _map(self, bucket: _Bucket) -> None:
        """Maps the file from its last record on; the next record goes right after that record."""
        base = bucket.read_to - bucket.read_to % _GRANULE
        _allocate(bucket.fd, base + CHUNK)
        bucket.mapped = mmap.mmap(bucket.fd, CHUNK, offset=base)
        bucket.map_base = base
        bucket.tokens.attach(bucket.mapped, bucket.read_to - base)

    def _grow(self, bucket: _Bucket) -> None:
        assert bucket.mapped is not None
        base = bucket.map_base + CHUNK
        _allocate(bucket.fd, base + CHUNK)  # before the old mapping goes: a full disk changes nothing
        bucket.tokens.detach()
        full, bucket.mapped = bucket.mapped, None
        full.close()
        bucket.read_to = base  # should mapping fail, the records go on as appends (after the zeros)
        bucket.mapped = mmap.mmap(bucket.fd, CHUNK, offset=base)
        bucket.map_base = base
        bucket.tokens.attach(bucket.mapped, 0)

    def _unmap(self, bucket: _Bucket, *, cut: bool) -> None:
        """Ends an owner's mapping; ``cut``: the file ends at its last record again (where appends go)."""
        if bucket.mapped is None:
            return
        bucket.read_to = bucket.map_base + bucket.tokens.detach()
        bucket.mapped.close()
        bucket.mapped = None
        if cut:
            os.ftruncate(bucket.fd, bucket.read_to)

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
            self._unmap(bucket, cut=False)  # the file goes
            if bucket.fd >= 0:
                os.close(bucket.fd)
            if bucket is self._hot:
                self._set_hot(_NO_BUCKET)
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

    # the mode ----------------------------------------------------------------------------------------

    def _decide(self, *, wait: bool = True) -> None:
        """Owner if no other process records here; else waits for the owner to hand over. Under the lock,
        which the wait releases (``_joined``): one thread of the process waits for the hand-over, the others
        wait on it only briefly, then fail closed, so a stuck owner ties up one thread, not the pool.
        ``wait=False``: one attempt, which leaves the mode undecided (and the owner asked) if it is owned."""
        assert self.directory is not None
        if self._joining:  # another thread of this process waits for the hand-over
            if wait:
                self._joined.wait_for(lambda: self._mode is not _UNDECIDED or not self._joining, JOIN_FOLLOW_S)
                if self._mode is _UNDECIDED:
                    raise LedgerError(f"the replay ledger {self.directory} is being handed over")
            return
        if wait and time.monotonic() - self._join_failed_at < JOIN_BACKOFF_S:  # the owner just failed to hand over
            raise LedgerError(f"the replay ledger {self.directory} is owned by a process that did not hand it over")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        fd = os.open(os.path.join(self.directory, OWNER_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        self._joining = wait
        try:
            while True:
                if _try_lock(fd, fcntl.LOCK_EX):
                    os.pwrite(fd, b"\0", _FLAG_AT)  # a flag a process that has since gone left behind
                    mode = _OWNER
                    break
                if _try_lock(fd, fcntl.LOCK_SH):
                    mode = _SHARED
                    break
                os.pwrite(fd, b"\1", _FLAG_AT)  # again each time: an owner that just started clears it
                if not wait:
                    os.close(fd)
                    return
                if time.monotonic() >= deadline:
                    self._join_failed_at = time.monotonic()
                    raise LedgerError(
                        f"the replay ledger {self.directory} is owned by a process that did not hand it over"
                    )
                self._joined.wait(POLL_S / 5)  # the lock is free meanwhile
                if self._closed:
                    raise LedgerError("the replay ledger was closed")
        except BaseException:
            os.close(fd)
            raise
        finally:
            if wait:
                self._joining = False
                self._joined.notify_all()
        self._owner_fd = fd
        self._mode = mode
        stop = self._stop = threading.Event()
        threading.Thread(target=self._watch, args=(stop,), name="keyplane-replay-ledger", daemon=True).start()

    def _watch(self, stop: threading.Event) -> None:
        """The owner hands over when a process waits to join; a process that handed over takes it back
        once it is alone. Never raises: a failed step is tried again (the joiner fails closed meanwhile)."""
        last_try = time.monotonic()
        while not stop.wait(POLL_S):
            try:
                if self._mode is _OWNER:
                    if os.pread(self._owner_fd, 1, _FLAG_AT) == b"\1":
                        with self._lock:
                            if not stop.is_set() and self._mode is _OWNER:
                                self._hand_over()
                elif self._mode is _SHARED and time.monotonic() - last_try >= TAKE_BACK_S:
                    last_try = time.monotonic()
                    with self._lock:
                        if not stop.is_set() and self._mode is _SHARED:
                            self._take_back()
            except OSError:
                continue

    def _hand_over(self) -> None:
        for bucket in self._buckets.values():
            self._unmap(bucket, cut=True)
        fcntl.lockf(self._owner_fd, fcntl.LOCK_SH, 1, 0)  # from exclusive: atomic, never waits
        self._mode = _SHARED

    def _take_back(self) -> None:
        if not _try_lock(self._owner_fd, fcntl.LOCK_EX):  # a failed attempt keeps the shared lock
            return
        os.pwrite(self._owner_fd, b"\0", _FLAG_AT)
        self._mode = _OWNER
        for bucket in self._buckets.values():
            try:
                self._read(bucket, os.fstat(bucket.fd).st_size)
                self._map(bucket)
            except OSError:  # stays appending (and a bucket that is not whole records fails closed there)
                continue

    # lifetime ----------------------------------------------------------------------------------------

    def release(self) -> None:
        """A handle closed: the last one releases the files, the mappings and the lock. Under the registry's
        lock throughout, so no new ledger of the directory opens the owner file before this one has closed
        its descriptor (closing any descriptor of a file drops every lock the process holds on it)."""
        with _registry_lock:
            self._users -= 1
            if self._users > 0:
                return
            with self._lock:
                self._closed = True
                self._release(cut=True)
            if self.directory is not None and _registry.get(self.directory) is self:
                del _registry[self.directory]

    def _release(self, *, cut: bool) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        for bucket in self._buckets.values():
            with contextlib.suppress(OSError):
                self._unmap(bucket, cut=cut)
            if bucket.fd >= 0:
                os.close(bucket.fd)
        self._forget()

    def _forget(self) -> None:
        """No bucket, no owner file (closing it releases this process's lock, if it held one), no mode."""
        self._buckets = {}
        self._set_hot(_NO_BUCKET)
        self._oldest = -1
        if self._owner_fd >= 0:
            os.close(self._owner_fd)
            self._owner_fd = -1
        if self._mode is not _MEMORY:
            self._mode = _UNDECIDED

    def _after_fork(self) -> None:
        """In a forked child: no lock of the parent's is the child's, and its files and mappings stay the
        parent's. The child drops its copies without touching them (a table's own lock may have been held
        by a thread that does not exist here: nothing of the old state is called), and decides its mode at
        its first record."""
        self._lock = threading.Lock()
        self._joined = threading.Condition(self._lock)
        self._joining = False
        self._stop = None  # the watcher is the parent's thread
        for bucket in self._buckets.values():
            if bucket.fd >= 0:
                os.close(bucket.fd)  # its mapping goes with the objects (the child's view of it only)
        self._forget()  # the child holds no lock on the owner file


_registry: dict[str, _Ledger] = {}
_registry_lock = threading.Lock()
_open_ledgers: weakref.WeakSet[_Ledger] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()
    for directory, ledger in list(_registry.items()):
        if ledger._closed:  # forked in the middle of its last close
            del _registry[directory]
    for ledger in list(_open_ledgers):
        ledger._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)


def read_ledger(directory: str) -> dict[int, list[tuple[int, int]]]:
    """Every bucket's records in file order, as (token, expires_at), torn ones included but not the zeros
    of an owner's mapping past its last record; for tests."""
    found: dict[int, list[tuple[int, int]]] = {}
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return found
    for name in names:
        if name.isdigit():
            with open(os.path.join(directory, name), "rb") as file:
                data = file.read()
            records = list(RECORD.iter_unpack(data[: len(data) - len(data) % RECORD_SIZE]))
            while records and records[-1] == (0, 0):
                records.pop()
            found[int(name)] = records
    return found
