"""The WhiteBIT nonce journal of a SQLite store: one appended record per accepted nonce, shared by processes.

A file beside the database (``<database path>.nonces``) holds a 16-byte header (magic, generation) and
fixed-size records of 168 bytes::

    crc32 u32 | kind u8 | key id length u8 | 2 bytes padding | nonce i64 | expires_at i64 | key id 144 bytes

``kind`` is ``ADVANCE`` (a monotonic nonce: the key's last nonce is now this one) or ``SEEN`` (a windowed
nonce, never to be accepted again before ``expires_at``). The key id is its UTF-8 bytes, NUL-padded, its
length in its own byte: 144 bytes hold any 36-character id (the schema's width), whatever its script. The
CRC covers everything after itself.

One accept, under the process's ``threading.Lock`` and then ``flock(LOCK_EX)`` on the journal:

1. read the header's generation (an ``mmap`` of the header page: no system call); a new generation means
   another process compacted the journal: drop the in-memory state and read the journal from its start;
2. read what other processes appended since this process's offset (``os.preadv`` into a kept buffer:
   one system call, which returns 0 bytes when nothing was appended) and apply it to the in-memory state;
3. a key met for the first time in this generation is loaded once from the SQLite snapshot tables
   (``key_nonces``, ``seen_nonces``; unexpired windowed nonces only) and merged with what the journal said;
4. decide; if accepted, append the record (``os.write`` on a descriptor opened ``O_APPEND``) and only
   then change the in-memory state; unlock.

**Durability is the store's own.** The store runs SQLite in WAL mode with ``synchronous=NORMAL``: a commit
is a ``write()`` into the WAL, in the operating system's page cache, with no ``fsync`` (SQLite syncs at
checkpoints). An accepted nonce is likewise a ``write()`` into the page cache before the request is
accepted: it survives the process crashing (the kernel still writes it out), and, as with SQLite's
NORMAL, a power loss or kernel crash may lose the last moments before it. Compaction is the one place
where the two files must not disagree after a power loss, so it commits the snapshot with
``synchronous=FULL`` (an ``fsync``) before it truncates the journal.

**Compaction.** When the journal passes ``compact_bytes`` (8 MiB: ~50,000 records), the process holding
the lock hands what the journal said (each key's highest monotonic nonce, the unexpired windowed nonces)
to ``compact`` (``store/nonces.py`` writes it into the snapshot tables in one transaction: last nonce =
max(stored, journal), windowed nonces inserted if absent, expired ones deleted, deleted keys skipped),
then bumps the header's generation and truncates the journal to its header, in that order. A crash after
the commit and before the bump leaves records the snapshot already holds: applying them again changes
nothing (max and set union). A crash after the bump and before the truncation, likewise: every process
then reads the new generation from the journal's start. Other processes see the new generation at their
next accept, drop their state and reload each key they use from the snapshot, once (one indexed read);
the process that compacted keeps its state, which already holds everything the snapshot does.

**Torn records.** Every writer holds the lock, so a record cut short can only come from a crash in the
middle of ``write()``; the next process to take the lock truncates the journal back to its last whole
record before it appends (so records stay aligned). A record whose CRC does not match (zeros a power loss
left behind, say) is skipped. Startup replays the whole journal.

A child forked after the journal was opened opens it again (a descriptor shared across ``fork`` would
share its ``flock`` too). Do not delete the journal while processes use it, as with the database's
``-wal`` file: each would keep its own open copy. With an in-memory database there is no file: the state
is kept in memory only.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import struct
import sys
import threading
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

MAGIC = b"KPNONCE\x01"
_HEADER = struct.Struct("<8sQ")  # magic, generation
HEADER_SIZE = _HEADER.size
_GENERATION = struct.Struct("<Q")
KEY_BYTES = 144  # 36 characters of 4 UTF-8 bytes each: any id the schema's 36-character column holds
_BODY = struct.Struct(f"<BBxxqq{KEY_BYTES}s")  # kind, key id length, nonce, expires_at, key id
_RECORD = struct.Struct(f"<IBBxxqq{KEY_BYTES}s")  # the same, after its CRC
_CRC = struct.Struct("<I")
RECORD_SIZE = _RECORD.size
ADVANCE = 1
SEEN = 2
COMPACT_BYTES = 8 << 20
INT64_MAX = (1 << 63) - 1

_flock = fcntl.flock
_LOCK_EX = fcntl.LOCK_EX
_LOCK_UN = fcntl.LOCK_UN
_preadv = os.preadv
_write = os.write
_crc32 = zlib.crc32
_pack_body = _BODY.pack
_pack_crc = _CRC.pack
_unpack_generation = _GENERATION.unpack_from

_NOT_OPEN = mmap.mmap(-1, HEADER_SIZE)  # stands for the header page while no journal is open
_READ_BUFFER = RECORD_SIZE * 512  # whole records: a full buffer never ends in the middle of one
_ADVANCED = (True, None)

# (key id, now_ms) -> (the snapshot's last monotonic nonce or None, its windowed nonces unexpired at now_ms
# as (nonce, expires_at))
Loader = Callable[[str, int], tuple[int | None, Iterable[tuple[int, int]]]]
# (each key's highest monotonic nonce in the journal, the journal's unexpired windowed nonces as
# (expires_at, key id, nonce), now_ms): writes them into the snapshot, durably, or raises
Compactor = Callable[[dict[str, int], list[tuple[int, str, int]], int], None]


def journal_path(database: str) -> str:
    return os.path.abspath(database) + ".nonces"


class NonceJournal:
    """Decides and records nonces for every process sharing ``path`` (``None``: this process only, in memory).

    ``advance`` and ``record`` are the check-and-set of ``store/nonces.NonceLedger``; both are atomic across
    the threads of this process and every process that opens the same journal.
    """

    def __init__(
        self,
        path: str | None,
        load: Loader | None = None,
        compact: Compactor | None = None,
        compact_bytes: int = COMPACT_BYTES,
    ) -> None:
        self.path = path
        self._loader = load
        self._compactor = compact
        self._compact_bytes = max(compact_bytes, RECORD_SIZE)
        self._lock = threading.Lock()
        self._fd = -1
        self._map = _NOT_OPEN  # the journal's header page (mapped shared), once it is open
        self._buf = bytearray(_READ_BUFFER)
        self._bufs = [self._buf]
        self._view = memoryview(self._buf)
        self._clear(-1)
        _open_journals.add(self)

    # state --------------------------------------------------------------------------------------------

    def _clear(self, generation: int) -> None:
        """Forgets everything: the journal of ``generation`` is read again from its start."""
        self._generation = generation
        self._offset = HEADER_SIZE
        self._compact_at = HEADER_SIZE + self._compact_bytes
        self._last: dict[str, int] = {}  # per key: the highest monotonic nonce (snapshot and journal)
        self._seen: dict[str, set[int]] = {}  # per key: the windowed nonces not yet expired
        self._expiry: deque[tuple[int, str, int]] = deque()  # (expires_at, key, nonce), roughly in order
        self._loaded: set[str] = set()  # keys merged with the snapshot in this generation
        self._journal_last: dict[str, int] = {}  # what this generation's journal says: compaction writes it
        self._journal_seen: list[tuple[int, str, int]] = []

    def _merge_snapshot(self, key_id: str, now_ms: int) -> None:
        if self._loader is not None:
            last, seen = self._loader(key_id, now_ms)  # when it raises, the key stays to be loaded
            if last is not None and last > self._last.get(key_id, -1):
                self._last[key_id] = last
            for nonce, expires_at in seen:
                self._remember(key_id, nonce, expires_at)
        self._loaded.add(key_id)

    def _remember(self, key_id: str, nonce: int, expires_at: int) -> None:
        seen = self._seen.get(key_id)
        if seen is None:
            seen = self._seen[key_id] = set()
        seen.add(nonce)
        self._expiry.append((expires_at, key_id, nonce))

    def _forget_expired(self, now_ms: int) -> None:
        expiry = self._expiry
        while expiry and expiry[0][0] < now_ms:
            _expires_at, key_id, nonce = expiry.popleft()
            seen = self._seen.get(key_id)
            if seen is not None:
                seen.discard(nonce)
                if not seen:
                    del self._seen[key_id]

    # the check-and-sets -------------------------------------------------------------------------------
    # Each is lock, catch up, decide, append, unlock; written out inline but for the append itself.

    def _append(self, fd: int, kind: int, key_id: str, nonce: int, expires_at: int) -> None:
        """Writes one record at the journal's end (the caller holds the lock) and moves past it."""
        encoded = key_id.encode()
        size = len(encoded)
        if size > KEY_BYTES:
            raise ValueError(f"a key id of more than {KEY_BYTES} UTF-8 bytes: {key_id!r}")
        body = _pack_body(kind, size, nonce, expires_at, encoded)
        if _write(fd, _pack_crc(_crc32(body)) + body) != RECORD_SIZE:
            self._short_write()
        self._offset += RECORD_SIZE

    def advance(self, key_id: str, nonce: int, now_ms: int) -> tuple[bool, int | None]:
        """Makes ``nonce`` the key's last nonce if it is higher: (True, None), else (False, the last nonce)."""
        with self._lock:
            if self.path is None:
                return self._advance_in_memory(key_id, nonce, now_ms)
            fd = self._fd
            if fd < 0:
                fd = self._open(now_ms)
            _flock(fd, _LOCK_EX)
            try:
                if _unpack_generation(self._map, 8)[0] != self._generation or _preadv(fd, self._bufs, self._offset):
                    self._catch_up(now_ms)
                if key_id not in self._loaded:
                    self._merge_snapshot(key_id, now_ms)
                last = self._last.get(key_id)
                if last is not None and nonce <= last:
                    return False, last
                self._append(fd, ADVANCE, key_id, nonce, 0)
                self._last[key_id] = nonce
                self._journal_last[key_id] = nonce
                if self._offset >= self._compact_at:
                    self._compact(now_ms)
                return _ADVANCED
            finally:
                _flock(fd, _LOCK_UN)

    def record(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        """Records a windowed nonce until ``expires_at``; False when it is already recorded (a replay)."""
        with self._lock:
            if self.path is None:
                return self._record_in_memory(key_id, nonce, expires_at, now_ms)
            fd = self._fd
            if fd < 0:
                fd = self._open(now_ms)
            _flock(fd, _LOCK_EX)
            try:
                if _unpack_generation(self._map, 8)[0] != self._generation or _preadv(fd, self._bufs, self._offset):
                    self._catch_up(now_ms)
                if self._expiry and self._expiry[0][0] < now_ms:
                    self._forget_expired(now_ms)
                if key_id not in self._loaded:
                    self._merge_snapshot(key_id, now_ms)
                seen = self._seen.get(key_id)
                if seen is not None and nonce in seen:
                    return False
                self._append(fd, SEEN, key_id, nonce, expires_at)
                self._remember(key_id, nonce, expires_at)
                self._journal_seen.append((expires_at, key_id, nonce))
                if self._offset >= self._compact_at:
                    self._compact(now_ms)
                return True
            finally:
                _flock(fd, _LOCK_UN)

    def _advance_in_memory(self, key_id: str, nonce: int, now_ms: int) -> tuple[bool, int | None]:
        if key_id not in self._loaded:
            self._merge_snapshot(key_id, now_ms)
        last = self._last.get(key_id)
        if last is not None and nonce <= last:
            return False, last
        self._last[key_id] = nonce
        return _ADVANCED

    def _record_in_memory(self, key_id: str, nonce: int, expires_at: int, now_ms: int) -> bool:
        self._forget_expired(now_ms)
        if key_id not in self._loaded:
            self._merge_snapshot(key_id, now_ms)
        seen = self._seen.get(key_id)
        if seen is not None and nonce in seen:
            return False
        self._remember(key_id, nonce, expires_at)
        return True

    # the file -----------------------------------------------------------------------------------------

    def _open(self, now_ms: int) -> int:
        """Opens (or creates) the journal and replays it; the caller holds ``self._lock``."""
        assert self.path is not None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size < HEADER_SIZE:  # new, or its creator crashed while writing the header
                    os.ftruncate(fd, 0)
                    os.write(fd, _HEADER.pack(MAGIC, 0))
                elif os.pread(fd, len(MAGIC), 0) != MAGIC:
                    raise RuntimeError(f"{self.path} is not a keyplane nonce journal")
                self._map = mmap.mmap(fd, HEADER_SIZE)
                self._fd = fd
                self._clear(-1)
                self._catch_up(now_ms)  # the whole journal, as it stands
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            if self._map is not _NOT_OPEN:
                self._map.close()
                self._map = _NOT_OPEN
            self._fd = -1
            os.close(fd)
            raise
        return fd

    def _catch_up(self, now_ms: int) -> None:
        """Catches up with the journal: a new generation, then the records appended since our offset."""
        generation = _unpack_generation(self._map, 8)[0]
        if generation != self._generation:
            self._clear(generation)
        while True:
            got = _preadv(self._fd, self._bufs, self._offset)
            if not got:
                return
            whole = got - got % RECORD_SIZE
            if whole:
                self._apply(self._view[:whole], now_ms)
                self._offset += whole
            if got < _READ_BUFFER:
                if whole != got:  # a record cut short by a crash: appends must start on a record boundary
                    os.ftruncate(self._fd, self._offset)
                return

    def _apply(self, records: memoryview, now_ms: int) -> None:
        last, journal_last = self._last, self._journal_last
        crc32 = zlib.crc32
        start = 0
        for crc, kind, size, nonce, expires_at, key in _RECORD.iter_unpack(records):
            body = records[start + 4 : start + RECORD_SIZE]
            start += RECORD_SIZE
            if crc32(body) != crc or not 0 < size <= KEY_BYTES:
                continue  # torn or zeroed by a crash: never written whole, so never accepted
            try:
                key_id = key[:size].decode()
            except UnicodeDecodeError:
                continue
            if kind == ADVANCE:
                if nonce > last.get(key_id, -1):
                    last[key_id] = nonce
                if nonce > journal_last.get(key_id, -1):
                    journal_last[key_id] = nonce
            elif kind == SEEN and expires_at >= now_ms:
                self._remember(key_id, nonce, expires_at)
                self._journal_seen.append((expires_at, key_id, nonce))

    def _short_write(self) -> None:
        # a full disk: nothing is accepted, and the next lock holder truncates the piece away
        raise OSError(f"the nonce journal {self.path} could not take a whole record")

    def _compact(self, now_ms: int) -> None:
        """Moves the journal into the snapshot and empties it; the caller holds both locks."""
        if self._compactor is None:  # no snapshot to move it into: the journal is the only copy
            self._compact_at = sys.maxsize
            return
        seen = [entry for entry in self._journal_seen if entry[0] >= now_ms]
        try:
            self._compactor(self._journal_last, seen, now_ms)
        except Exception:  # the nonce is already recorded: the request stands, compaction waits
            log.warning("nonce journal compaction failed; %s keeps growing", self.path, exc_info=True)
            self._compact_at = self._offset + max(self._compact_bytes // 4, RECORD_SIZE)
            return
        generation = self._generation + 1
        self._map[8:16] = _GENERATION.pack(generation)  # first the generation, then the truncation
        os.ftruncate(self._fd, HEADER_SIZE)
        self._generation = generation
        self._offset = HEADER_SIZE
        self._compact_at = HEADER_SIZE + self._compact_bytes
        self._journal_last = {}
        self._journal_seen = []
        # what this process knows stays: it holds everything the snapshot now holds

    # lifetime -----------------------------------------------------------------------------------------

    def close(self) -> None:
        """Closes the file; a later accept opens it again (and replays it)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._map is not _NOT_OPEN:
            self._map.close()
            self._map = _NOT_OPEN
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _after_fork(self) -> None:
        """In a forked child: a descriptor shared with the parent would share its ``flock`` too."""
        self._lock = threading.Lock()
        if self.path is not None:
            self._release()  # closes the child's copies only; the parent's lock and file stay
            self._clear(-1)  # the parent may have forked in the middle of an accept: start again


_open_journals: weakref.WeakSet[NonceJournal] = weakref.WeakSet()


def _reopen_after_fork() -> None:
    for journal in list(_open_journals):
        journal._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reopen_after_fork)


def read_journal(
    path: str, now_ms: int | None = None, locked: Callable[[], None] | None = None
) -> tuple[dict[str, int], dict[str, set[int]]]:
    """What a journal holds, read under a shared lock without changing it: (last nonce per key, windowed
    nonces per key, expired ones too unless ``now_ms`` is given). ``locked`` runs under the same lock first
    (no compaction can move records into the snapshot meanwhile). For inspection and tests."""
    last: dict[str, int] = {}
    seen: dict[str, set[int]] = {}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if locked is not None:
            locked()
        return last, seen
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        if locked is not None:
            locked()
        data = b""
        while chunk := os.pread(fd, 1 << 20, HEADER_SIZE + len(data)):
            data += chunk
        magic = os.pread(fd, len(MAGIC), 0)
        if len(magic) == len(MAGIC) and magic != MAGIC:
            raise RuntimeError(f"{path} is not a keyplane nonce journal")
    finally:
        os.close(fd)
    view = memoryview(data)[: len(data) - len(data) % RECORD_SIZE]
    start = 0
    for crc, kind, size, nonce, expires_at, key in _RECORD.iter_unpack(view):
        body = view[start + 4 : start + RECORD_SIZE]
        start += RECORD_SIZE
        if zlib.crc32(body) != crc or not 0 < size <= KEY_BYTES:
            continue
        key_id = key[:size].decode(errors="replace")
        if kind == ADVANCE:
            last[key_id] = max(nonce, last.get(key_id, -1))
        elif kind == SEEN and (now_ms is None or expires_at >= now_ms):
            seen.setdefault(key_id, set()).add(nonce)
    return last, seen
