"""WhiteBIT nonces on SQLite: the nonce journal beside the database (``<db>.nonces``) keeps every accepted
nonce refused afterwards — after a restart, in another OS process on the same file, across compaction
into the store's tables, after a crash tore the journal's last record — and PostgreSQL keeps its
transactional path. Real files, real processes; nothing of the store is mocked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import multiprocessing
import os
import sqlite3
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyplane import Reason, Requirement, SignedRequest, Verifier, crypto
from keyplane.auth.nonces import NonceGuard
from keyplane.domain.model import Scheme
from keyplane.services import KeyplaneService
from keyplane.store import Store
from keyplane.store.nonce_journal import (
    HEADER_SIZE,
    RECORD_SIZE,
    NonceJournal,
    read_journal,
)
from keyplane.store.nonces import NonceLedger, recorded_nonces

MASTER = crypto.MasterKey(b"n" * 32)
NOW = 1_800_000_000_000
TINY = RECORD_SIZE * 8  # a journal this size is compacted every 8 records


# --- helpers ----------------------------------------------------------------------------------------


class Plane:
    """A SQLite store on disk with WhiteBIT main keys."""

    def __init__(self, tmp_path: Path, keys: int = 1) -> None:
        self.path = tmp_path / "keyplane.db"
        self.url = f"sqlite:///{self.path}"
        self.store = Store(self.url)
        self.store.migrate()
        self.service = KeyplaneService(self.store, MASTER)
        main = self.service.accounts.create_main_account("venue")
        self.issued = [self.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT) for _ in range(keys)]
        self.key_id = self.issued[0].key.id

    @property
    def journal(self) -> Path:
        return Path(str(self.path) + ".nonces")

    def guard(self, **kwargs: Any) -> NonceGuard:
        return NonceGuard(Store(self.url), **kwargs)

    def snapshot(self, key_id: str) -> tuple[int | None, set[int]]:
        with self.store.reading() as tx:
            last = tx.last_nonce(key_id)
            rows = tx.conn.exec_driver_sql("SELECT nonce FROM seen_nonces WHERE api_key_id = ?", (key_id,)).all()
        return last, {int(row[0]) for row in rows}

    def close(self) -> None:
        self.store.close()


@pytest.fixture()
def plane(tmp_path: Path) -> Iterator[Plane]:
    p = Plane(tmp_path)
    yield p
    p.close()


def whitebit_request(api_key: str, secret: str, nonce: int, window: bool) -> SignedRequest:
    path = "/api/v4/trade-account/balance"
    body = json.dumps({"request": path, "nonce": str(nonce), "nonceWindow": window}, separators=(",", ":")).encode()
    payload = base64.b64encode(body).decode()
    signature = hmac.new(secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = {"x-txc-apikey": api_key, "x-txc-payload": payload, "x-txc-signature": signature}
    return SignedRequest("POST", path, "", headers, body, "127.0.0.1")


def journal_records(path: Path) -> list[tuple[int, str, int]]:
    """(kind, key id, nonce) of each whole record with a good CRC, in file order."""
    data = path.read_bytes()[HEADER_SIZE:]
    out = []
    for start in range(0, len(data) - len(data) % RECORD_SIZE, RECORD_SIZE):
        record = data[start : start + RECORD_SIZE]
        crc, kind, size, nonce, _expires, key = struct.unpack("<IBBxxqq144s", record)
        if zlib.crc32(record[4:]) == crc:
            out.append((kind, key[:size].decode(), nonce))
    return out


def generation(path: Path) -> int:
    return int(struct.unpack_from("<Q", path.read_bytes(), 8)[0])


# --- restarts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("windowed", [False, True], ids=["monotonic", "windowed"])
def test_a_replay_is_refused_by_a_verifier_opened_again_on_the_same_file(plane: Plane, windowed: bool) -> None:
    issued = plane.issued[0]
    assert issued.secret is not None
    nonce = NOW + 1_000
    request = whitebit_request(issued.key.api_key, issued.secret, nonce, windowed)

    def verifier() -> Verifier:
        return Verifier(Store(plane.url), MASTER, clock_ms=lambda: NOW)

    first = verifier()
    assert first.verify(request, Requirement(), Scheme.WHITEBIT).reason is Reason.VALID
    first.close()
    first.store.close()

    again = verifier()  # a restarted process: nothing in memory, the file remembers
    try:
        replay = again.verify(request, Requirement(), Scheme.WHITEBIT).reason
        assert replay is (Reason.NONCE_REPLAYED if windowed else Reason.NONCE_TOO_LOW)
        later = whitebit_request(issued.key.api_key, issued.secret, nonce + 1, windowed)
        assert again.verify(later, Requirement(), Scheme.WHITEBIT).reason is Reason.VALID
    finally:
        again.close()
        again.store.close()
    assert plane.journal.exists()


def test_both_modes_survive_a_restart_of_the_guard(plane: Plane) -> None:
    guard = plane.guard()
    assert guard.accept(plane.key_id, 10, False, NOW) is Reason.VALID
    assert guard.accept(plane.key_id, NOW, True, NOW) is Reason.VALID
    assert guard.accept(plane.key_id, NOW - 4_000, True, NOW) is Reason.VALID
    guard.close()

    restarted = plane.guard()
    try:
        assert restarted.accept(plane.key_id, 10, False, NOW) is Reason.NONCE_TOO_LOW
        assert restarted.accept(plane.key_id, 9, False, NOW) is Reason.NONCE_TOO_LOW
        assert restarted.accept(plane.key_id, NOW, True, NOW) is Reason.NONCE_REPLAYED
        assert restarted.accept(plane.key_id, NOW - 4_000, True, NOW) is Reason.NONCE_REPLAYED
        assert restarted.accept(plane.key_id, NOW - 6_000, True, NOW) is Reason.NONCE_OUT_OF_WINDOW
        assert restarted.accept(plane.key_id, 11, False, NOW) is Reason.VALID
        assert restarted.accept(plane.key_id, NOW + 1, True, NOW) is Reason.VALID
    finally:
        restarted.close()
    # the two modes keep their own state, as before
    assert recorded_nonces(plane.store, plane.key_id) == (11, {NOW, NOW - 4_000, NOW + 1})


def test_the_guard_refuses_without_writing_what_is_already_refused(plane: Plane) -> None:
    guard = plane.guard()
    try:
        assert guard.accept(plane.key_id, 100, False, NOW) is Reason.VALID
        size = plane.journal.stat().st_size
        assert guard.accept(plane.key_id, 100, False, NOW) is Reason.NONCE_TOO_LOW
        assert guard.accept(plane.key_id, 50, False, NOW) is Reason.NONCE_TOO_LOW
        assert guard.accept(plane.key_id, NOW + 6_000, True, NOW) is Reason.NONCE_OUT_OF_WINDOW
        assert plane.journal.stat().st_size == size  # a refused nonce appends nothing
        # a nonce no store can hold is refused as unreadable, not accepted and never raised on
        assert guard.accept(plane.key_id, 2**63, False, NOW) is Reason.MISSING_NONCE
        assert guard.accept(plane.key_id, 10**19 - 1, True, NOW) is Reason.NONCE_OUT_OF_WINDOW
        assert guard.accept(plane.key_id, 2**63 - 1, False, NOW) is Reason.VALID
    finally:
        guard.close()


def test_a_second_guard_in_the_same_process_sees_the_first_ones_nonces(plane: Plane) -> None:
    first, second = plane.guard(), plane.guard()
    try:
        assert first.accept(plane.key_id, 1, False, NOW) is Reason.VALID
        assert second.accept(plane.key_id, 1, False, NOW) is Reason.NONCE_TOO_LOW
        assert second.accept(plane.key_id, 2, False, NOW) is Reason.VALID
        assert first.accept(plane.key_id, 2, False, NOW) is Reason.NONCE_TOO_LOW
        assert second.accept(plane.key_id, NOW, True, NOW) is Reason.VALID
        assert first.accept(plane.key_id, NOW, True, NOW) is Reason.NONCE_REPLAYED
    finally:
        first.close()
        second.close()


def test_threads_of_one_process_never_accept_a_nonce_twice(plane: Plane) -> None:
    guard = plane.guard(compact_bytes=TINY * 4)
    accepted: list[list[int]] = [[], [], [], []]
    start = threading.Barrier(len(accepted))

    def run(mine: list[int]) -> None:
        start.wait()
        for nonce in range(NOW - 4_000, NOW - 3_000):
            if guard.accept(plane.key_id, nonce, True, NOW) is Reason.VALID:
                mine.append(nonce)

    threads = [threading.Thread(target=run, args=(mine,)) for mine in accepted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    guard.close()
    everything = [n for mine in accepted for n in mine]
    assert sorted(everything) == list(range(NOW - 4_000, NOW - 3_000))  # each exactly once


# --- two OS processes -------------------------------------------------------------------------------


RACED = range(NOW - 5_000, NOW + 5_000)  # every nonce of the window


def _race(
    url: str, key_id: str, compact_bytes: int, windowed: bool, start: Any, out: Any, backwards: bool = False
) -> None:
    """One worker process: tries every nonce of the range in order, reports the ones it was granted."""
    guard = NonceGuard(Store(url), compact_bytes=compact_bytes)
    granted = []
    start.wait()  # both processes are up: they race from here
    for nonce in reversed(RACED) if backwards else RACED:
        if guard.accept(key_id, nonce, windowed, NOW) is Reason.VALID:
            granted.append(nonce)
    guard.close()
    out.put(granted)


def _run_race(plane: Plane, compact_bytes: int, windowed: bool, context: str = "spawn") -> list[list[int]]:
    ctx = multiprocessing.get_context(context)
    start, out = ctx.Barrier(2), ctx.Queue()
    # Windowed nonces: the second process walks the range backwards, so the two meet whichever is
    # scheduled first (walking the same way, one that ran ahead on a busy machine took every nonce).
    workers = [
        ctx.Process(
            target=_race, args=(plane.url, plane.key_id, compact_bytes, windowed, start, out, windowed and index == 1)
        )
        for index in range(2)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    return results


@pytest.mark.parametrize("compact_bytes", [8 << 20, TINY], ids=["journal", "compacting"])
def test_two_processes_racing_windowed_nonces_accept_each_exactly_once(plane: Plane, compact_bytes: int) -> None:
    first, second = _run_race(plane, compact_bytes, windowed=True)
    assert not set(first) & set(second), "a nonce was accepted by both processes"
    assert sorted(first + second) == list(RACED)
    assert first and second, "the processes did not race"
    _last, seen = recorded_nonces(plane.store, plane.key_id)
    assert seen == set(RACED)


@pytest.mark.parametrize("compact_bytes", [8 << 20, TINY], ids=["journal", "compacting"])
def test_two_processes_racing_monotonic_nonces_keep_them_in_order(plane: Plane, compact_bytes: int) -> None:
    first, second = _run_race(plane, compact_bytes, windowed=False)
    assert not set(first) & set(second), "a nonce was accepted by both processes"
    assert first == sorted(first) and second == sorted(second)
    highest = RACED[-1]
    assert highest in first + second  # the last nonce tried is always accepted by one of them
    assert recorded_nonces(plane.store, plane.key_id)[0] == highest
    if compact_bytes == TINY:
        assert generation(plane.journal) > 0
    else:
        # the journal's own order is the order of acceptance: strictly increasing, each nonce once
        records = [nonce for _kind, key, nonce in journal_records(plane.journal) if key == plane.key_id]
        assert records == sorted(set(first + second))  # strictly increasing, each granted nonce once


def _race_inherited(guard: NonceGuard, key_id: str, start: Any, out: Any) -> None:
    """A forked worker racing with the guard its parent opened (its journal descriptor inherited)."""
    granted = []
    start.wait()
    for nonce in RACED:
        if guard.accept(key_id, nonce, True, NOW) is Reason.VALID:
            granted.append(nonce)
    out.put(granted)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_guard_opened_before_a_fork_gets_its_own_lock_in_each_child(plane: Plane) -> None:
    guard = plane.guard()
    assert guard.accept(plane.key_id, NOW - 5_001, True, NOW - 1) is Reason.VALID  # the journal is open here
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Barrier(2), ctx.Queue()
    # a descriptor shared across fork would share its flock too: both children would hold "the" lock
    workers = [ctx.Process(target=_race_inherited, args=(guard, plane.key_id, start, out)) for _ in range(2)]
    for w in workers:
        w.start()
    first, second = (out.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    assert not set(first) & set(second) and sorted(first + second) == list(RACED)
    assert guard.accept(plane.key_id, NOW - 3_000, True, NOW) is Reason.NONCE_REPLAYED  # the parent sees them
    guard.close()


# --- compaction -------------------------------------------------------------------------------------


def test_compaction_moves_the_journal_into_the_tables_and_replays_stay_refused(plane: Plane) -> None:
    compacting = plane.guard(compact_bytes=TINY)
    other = plane.guard(compact_bytes=8 << 20)  # another worker, which loaded the key before compaction
    try:
        assert other.accept(plane.key_id, 1, False, NOW) is Reason.VALID
        assert other.accept(plane.key_id, NOW - 4_900, True, NOW) is Reason.VALID
        for nonce in range(2, 40):
            assert compacting.accept(plane.key_id, nonce, False, NOW) is Reason.VALID
        for nonce in range(NOW - 4_000, NOW - 3_960):
            assert compacting.accept(plane.key_id, nonce, True, NOW) is Reason.VALID
        assert generation(plane.journal) >= 9
        assert plane.journal.stat().st_size < HEADER_SIZE + TINY
        last, seen = plane.snapshot(plane.key_id)  # the store's tables hold what the journal held
        assert last is not None and last >= 33
        assert {NOW - 4_900, *range(NOW - 4_000, NOW - 3_968)} <= seen

        for guard in (compacting, other):  # the compacting process, and the one that must reload
            assert guard.accept(plane.key_id, 39, False, NOW) is Reason.NONCE_TOO_LOW
            assert guard.accept(plane.key_id, NOW - 4_900, True, NOW) is Reason.NONCE_REPLAYED
            assert guard.accept(plane.key_id, NOW - 3_999, True, NOW) is Reason.NONCE_REPLAYED
        assert other.accept(plane.key_id, 40, False, NOW) is Reason.VALID
        assert compacting.accept(plane.key_id, 40, False, NOW) is Reason.NONCE_TOO_LOW
        assert compacting.accept(plane.key_id, 41, False, NOW) is Reason.VALID
    finally:
        compacting.close()
        other.close()
    fresh = plane.guard()
    try:
        assert fresh.accept(plane.key_id, 41, False, NOW) is Reason.NONCE_TOO_LOW
        assert fresh.accept(plane.key_id, NOW - 3_961, True, NOW) is Reason.NONCE_REPLAYED
    finally:
        fresh.close()


def test_compaction_forgets_expired_windowed_nonces_only(plane: Plane) -> None:
    guard = plane.guard(compact_bytes=TINY)
    try:
        assert guard.accept(plane.key_id, NOW, True, NOW) is Reason.VALID  # kept until NOW + 10 s
        later = NOW + 11_000
        for nonce in range(later - 100, later - 100 + 10):  # passes the size: compaction at `later`
            assert guard.accept(plane.key_id, nonce, True, later) is Reason.VALID
        _last, seen = plane.snapshot(plane.key_id)
        assert NOW not in seen and later - 100 in seen
    finally:
        guard.close()


def test_a_crash_between_commit_and_truncation_is_harmless(plane: Plane) -> None:
    guard = plane.guard()
    for nonce in range(1, 6):
        assert guard.accept(plane.key_id, nonce, False, NOW) is Reason.VALID
    assert guard.accept(plane.key_id, NOW, True, NOW) is Reason.VALID
    guard.close()
    # what a compaction commits before it truncates: the same records, now in the tables too
    ledger = NonceLedger(Store(plane.url))
    ledger._compact({plane.key_id: 5}, [(NOW + 10_000, plane.key_id, NOW)], NOW)
    ledger.close()
    assert plane.snapshot(plane.key_id) == (5, {NOW})
    restarted = plane.guard(compact_bytes=TINY)
    try:
        assert restarted.accept(plane.key_id, 5, False, NOW) is Reason.NONCE_TOO_LOW
        assert restarted.accept(plane.key_id, NOW, True, NOW) is Reason.NONCE_REPLAYED
        for nonce in range(6, 20):  # compacts the same records again: nothing breaks
            assert restarted.accept(plane.key_id, nonce, False, NOW) is Reason.VALID
        assert plane.snapshot(plane.key_id)[0] is not None
        assert restarted.accept(plane.key_id, 19, False, NOW) is Reason.NONCE_TOO_LOW
    finally:
        restarted.close()


def test_a_deleted_key_does_not_break_compaction(tmp_path: Path) -> None:
    plane = Plane(tmp_path, keys=2)
    gone, kept = plane.issued[0].key, plane.issued[1].key
    guard = plane.guard(compact_bytes=TINY)
    try:
        assert guard.accept(gone.id, 1, False, NOW) is Reason.VALID
        assert guard.accept(gone.id, NOW, True, NOW) is Reason.VALID
        with plane.store.transaction() as tx:  # as the service deletes a key
            tx.delete_api_key(gone.id)
        for nonce in range(1, 12):  # compaction with the deleted key's records in the journal
            assert guard.accept(kept.id, nonce, False, NOW) is Reason.VALID
        assert generation(plane.journal) >= 1
        assert plane.snapshot(kept.id)[0] is not None and plane.snapshot(gone.id) == (None, set())
    finally:
        guard.close()
        plane.close()


# --- crashes ----------------------------------------------------------------------------------------


def test_a_torn_trailing_record_is_ignored_and_cut_away(plane: Plane) -> None:
    guard = plane.guard()
    assert guard.accept(plane.key_id, 10, False, NOW) is Reason.VALID
    guard.close()
    # a process died in the middle of writing nonce 20's record: only its first 100 bytes reached the file
    other = NonceJournal(str(plane.journal))
    assert other.advance(plane.key_id, 20, NOW) == (True, None)
    other.close()
    data = plane.journal.read_bytes()
    plane.journal.write_bytes(data[: -RECORD_SIZE + 100])

    restarted = plane.guard()
    try:
        assert restarted.accept(plane.key_id, 10, False, NOW) is Reason.NONCE_TOO_LOW  # the whole one counts
        assert restarted.accept(plane.key_id, 20, False, NOW) is Reason.VALID  # the torn one never did
        assert (plane.journal.stat().st_size - HEADER_SIZE) % RECORD_SIZE == 0  # appends stay aligned
        assert [n for _k, _key, n in journal_records(plane.journal)] == [10, 20]
    finally:
        restarted.close()
    again = plane.guard()
    try:
        assert again.accept(plane.key_id, 20, False, NOW) is Reason.NONCE_TOO_LOW
    finally:
        again.close()


def test_a_torn_record_left_by_a_process_still_running_is_cut_by_the_next_writer(plane: Plane) -> None:
    guard = plane.guard()
    try:
        assert guard.accept(plane.key_id, 1, False, NOW) is Reason.VALID
        with open(plane.journal, "ab") as f:  # another process crashed mid-write meanwhile
            f.write(b"\x01" * 50)
        assert guard.accept(plane.key_id, 2, False, NOW) is Reason.VALID
        assert [n for _k, _key, n in journal_records(plane.journal)] == [1, 2]
    finally:
        guard.close()


def test_a_record_zeroed_by_a_power_loss_is_skipped(plane: Plane) -> None:
    guard = plane.guard()
    for nonce in (NOW, NOW + 1, NOW + 2):
        assert guard.accept(plane.key_id, nonce, True, NOW) is Reason.VALID
    guard.close()
    data = bytearray(plane.journal.read_bytes())
    middle = HEADER_SIZE + RECORD_SIZE
    data[middle : middle + RECORD_SIZE] = bytes(RECORD_SIZE)
    plane.journal.write_bytes(bytes(data))
    restarted = plane.guard()
    try:
        assert restarted.accept(plane.key_id, NOW, True, NOW) is Reason.NONCE_REPLAYED
        assert restarted.accept(plane.key_id, NOW + 2, True, NOW) is Reason.NONCE_REPLAYED
        assert restarted.accept(plane.key_id, NOW + 1, True, NOW) is Reason.VALID  # lost with the power
    finally:
        restarted.close()


def test_a_file_that_is_not_a_journal_is_never_overwritten(plane: Plane) -> None:
    plane.journal.write_bytes(b"something else entirely")
    guard = plane.guard()
    try:
        with pytest.raises(RuntimeError, match="not a keyplane nonce journal"):
            guard.accept(plane.key_id, 1, False, NOW)
    finally:
        guard.close()
    assert plane.journal.read_bytes() == b"something else entirely"


# --- key ids, memory, PostgreSQL ---------------------------------------------------------------------


def test_any_key_id_the_schema_holds_fits_a_record(tmp_path: Path) -> None:
    path = str(tmp_path / "ids.nonces")
    widest = "\U0001f511" * 36  # 36 characters of 4 UTF-8 bytes each
    journal = NonceJournal(path)
    for key_id in (widest, "k", str(uuid.uuid4()), "ключ-" + "x" * 20):
        assert journal.advance(key_id, 7, NOW) == (True, None)
        assert journal.record(key_id, NOW, NOW + 10_000, NOW)
    journal.close()
    reopened = NonceJournal(path)
    assert reopened.advance(widest, 7, NOW) == (False, 7)
    assert reopened.record(widest, NOW, NOW + 10_000, NOW) is False
    with pytest.raises(ValueError, match="key id"):
        reopened.advance("x" * 145, 1, NOW)
    reopened.close()
    last, seen = read_journal(path)
    assert last[widest] == 7 and seen[widest] == {NOW} and "x" * 145 not in last


def test_a_key_whose_snapshot_could_not_be_read_is_read_again(tmp_path: Path) -> None:
    calls: list[str] = []

    def load(key_id: str, now_ms: int) -> tuple[int | None, list[tuple[int, int]]]:
        calls.append(key_id)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return 50, [(NOW, NOW + 10_000)]

    journal = NonceJournal(str(tmp_path / "x.nonces"), load)
    with pytest.raises(sqlite3.OperationalError):
        journal.advance("k", 10, NOW)
    assert journal.advance("k", 10, NOW) == (False, 50)  # never decided without the snapshot
    assert journal.record("k", NOW, NOW + 10_000, NOW) is False
    assert journal.advance("k", 51, NOW) == (True, None)
    assert calls == ["k", "k"]
    journal.close()


def test_an_in_memory_database_keeps_nonces_in_memory_only(tmp_path: Path) -> None:
    store = Store("sqlite://")
    store.migrate()
    guard = NonceGuard(store)
    try:
        assert guard._ledger.journal is not None and guard._ledger.journal.path is None
        assert guard.accept("some-key", 5, False, NOW) is Reason.VALID
        assert guard.accept("some-key", 5, False, NOW) is Reason.NONCE_TOO_LOW
        assert guard.accept("some-key", NOW, True, NOW) is Reason.VALID
        assert guard.accept("some-key", NOW, True, NOW) is Reason.NONCE_REPLAYED
        assert guard.accept("some-key", NOW, True, NOW + 20_000) is Reason.NONCE_OUT_OF_WINDOW
    finally:
        guard.close()
        store.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_postgres_keeps_its_transactional_path(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.migrate()
    service = KeyplaneService(store, MASTER)
    key = service.keys.issue_main_key(service.accounts.create_main_account("venue").uid, Scheme.WHITEBIT).key
    first, second = NonceGuard(store, compact_bytes=TINY), NonceGuard(store, compact_bytes=TINY)
    try:
        assert first._ledger.journal is None and first._ledger.transactional
        for nonce in range(1, 20):
            assert first.accept(key.id, nonce, False, NOW) is Reason.VALID
        assert second.accept(key.id, 19, False, NOW) is Reason.NONCE_TOO_LOW
        assert first.accept(key.id, NOW, True, NOW) is Reason.VALID
        assert second.accept(key.id, NOW, True, NOW) is Reason.NONCE_REPLAYED
        with store.reading() as tx:  # every nonce went into the tables, in its transaction
            assert tx.last_nonce(key.id) == 19
            assert tx.conn.exec_driver_sql("SELECT count(*) FROM seen_nonces").scalar_one() == 1
    finally:
        first.close()
        second.close()
        store.close()
