"""The SQLite replay ledger (store/replay_ledger.py): each token accepted once across processes, a fork and a
restart; buckets expire by deleting their files; torn and zeroed records refuse nothing; clocks either side
of a bucket edge meet in one file. Real files and real processes throughout."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from keyplane.store.replay_ledger import (
    BUCKET_MS,
    KEEP_MS,
    RECORD,
    RECORD_SIZE,
    LedgerError,
    ReplayLedger,
    read_ledger,
)

KEY = "k"


def _now() -> int:
    return int(time.time() * 1000)


def _expiry(now: int) -> int:
    return now + 60_000


def _race(directory: str, tokens: list[int], expires_at: int, now: int, start: object, out: object) -> None:
    ledger = ReplayLedger(directory)
    start.wait()  # type: ignore[attr-defined]
    accepted = [token for token in tokens if ledger.record(KEY, token, expires_at, now)]
    out.put(accepted)  # type: ignore[attr-defined]
    ledger.close()


def test_one_token_is_accepted_once_and_a_repeat_writes_nothing(tmp_path: Path) -> None:
    directory = str(tmp_path / "db.replay")
    ledger = ReplayLedger(directory)
    now = _now()
    assert ledger.record(KEY, 7, _expiry(now), now) is True
    assert ledger.record(KEY, 7, _expiry(now), now) is False
    assert ledger.record("other key", 7, _expiry(now), now) is False  # one namespace: 64 bits of a signature
    assert ledger.record(KEY, 8, _expiry(now), now) is True
    bucket = _expiry(now) // BUCKET_MS
    assert read_ledger(directory) == {bucket: [(7, _expiry(now)), (8, _expiry(now))]}
    assert ledger.record(KEY, 9, now - 1, now) is False  # already past: refused, nothing written
    ledger.close()


def _accepted_by(workers: list[Any], out: Any) -> list[int]:
    """Starts the racing processes; every token each of them reported accepted, all together."""
    for worker in workers:
        worker.start()
    accepted = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    return [token for part in accepted for token in part]


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_processes_racing_on_the_same_tokens_accept_each_once_in_total(tmp_path: Path, method: str) -> None:
    directory = str(tmp_path / "db.replay")
    context = multiprocessing.get_context(method)
    now = _now()
    expires_at = _expiry(now)
    tokens = list(range(1, 3001))
    start = context.Barrier(3)  # the three workers
    out = context.Queue()
    workers = [
        context.Process(target=_race, args=(directory, tokens[::step], expires_at, now, start, out))
        for step in (1, -1, 1)  # two in file order, one backwards: every token contended
    ]
    together = _accepted_by(workers, out)
    assert sorted(together) == tokens  # each exactly once in total
    # and a fresh process (a restart) refuses every one of them
    again = ReplayLedger(directory)
    assert not any(again.record(KEY, token, expires_at, now) for token in tokens)
    again.close()


def _child_records(directory: str, token: int, expires_at: int, now: int, out: object) -> None:
    out.put(_FORKED.record(KEY, token, expires_at, now))  # type: ignore[attr-defined]


_FORKED: ReplayLedger


def test_a_forked_child_reopens_its_files_and_sees_what_the_parent_accepted(tmp_path: Path) -> None:
    global _FORKED
    directory = str(tmp_path / "db.replay")
    _FORKED = ReplayLedger(directory)
    now = _now()
    expires_at = _expiry(now)
    assert _FORKED.record(KEY, 1, expires_at, now)  # the bucket is open in the parent before the fork
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    results = []
    for token in (1, 2, 2, 3):
        child = context.Process(target=_child_records, args=(directory, token, expires_at, now, out))
        child.start()
        results.append(out.get(timeout=60))
        child.join(timeout=60)
        assert child.exitcode == 0
    assert results == [False, True, False, True]
    # the parent's offset was not moved by the children: it still reads what they appended
    assert _FORKED.record(KEY, 2, expires_at, now) is False
    assert _FORKED.record(KEY, 3, expires_at, now) is False
    assert _FORKED.record(KEY, 4, expires_at, now) is True
    _FORKED.close()


def test_a_restart_refuses_what_was_accepted_in_every_live_bucket(tmp_path: Path) -> None:
    directory = str(tmp_path / "db.replay")
    now = _now()
    first = ReplayLedger(directory)
    expiries = [now + 1_000 + i * BUCKET_MS for i in range(8)]  # eight buckets
    for i, expires_at in enumerate(expiries):
        assert first.record(KEY, i, expires_at, now)
    first.close()
    assert len(read_ledger(directory)) == 8
    second = ReplayLedger(directory)
    for i, expires_at in enumerate(expiries):
        assert second.record(KEY, i, expires_at, now) is False
        assert second.record(KEY, 100 + i, expires_at, now) is True
    second.close()


def test_buckets_expire_by_deleting_their_files(tmp_path: Path) -> None:
    directory = tmp_path / "db.replay"
    ledger = ReplayLedger(str(directory))
    now = _now()
    for i in range(200):  # many buckets, one record each
        assert ledger.record(KEY, i, now + i * BUCKET_MS, now)
    assert len(read_ledger(str(directory))) >= 200
    (directory / "not-a-bucket").write_text("kept")
    later = now + 50 * BUCKET_MS
    # the first accept in a new bucket deletes every bucket that ended KEEP_MS ago, its own too
    assert ledger.record(KEY, 10_000, later + 500 * BUCKET_MS, later)
    left = read_ledger(str(directory))
    limit = (later - KEEP_MS) // BUCKET_MS
    assert min(left) == limit and all(number >= limit for number in left)
    assert (directory / "not-a-bucket").exists()
    # a bucket still within its window kept its records
    assert ledger.record(KEY, 120, now + 120 * BUCKET_MS, later) is False
    ledger.close()
    again = ReplayLedger(str(directory))
    assert again.record(KEY, 120, now + 120 * BUCKET_MS, later) is False
    again.close()


def test_zeroed_and_torn_records_refuse_nothing_and_a_misaligned_file_fails_closed(tmp_path: Path) -> None:
    directory = tmp_path / "db.replay"
    now = _now()
    expires_at = _expiry(now)
    bucket = expires_at // BUCKET_MS
    directory.mkdir()
    path = directory / str(bucket)
    garbage = RECORD.pack(5, expires_at + 10 * BUCKET_MS)  # an expiry outside its bucket: not a record of it
    path.write_bytes(b"\0" * RECORD_SIZE * 3 + garbage + RECORD.pack(6, expires_at))
    ledger = ReplayLedger(str(directory))
    assert ledger.record(KEY, 0, expires_at, now) is True  # the zeros held token 0 with expiry 0
    assert ledger.record(KEY, 5, expires_at, now) is True
    assert ledger.record(KEY, 6, expires_at, now) is False  # the whole record after them counts
    ledger.close()
    # a process left zeros behind (a power loss) and another wrote after them: read past them
    with open(path, "ab") as file:
        file.write(b"\0" * RECORD_SIZE + RECORD.pack(9, expires_at))
    ledger = ReplayLedger(str(directory))
    assert ledger.record(KEY, 9, expires_at, now) is False
    assert ledger.record(KEY, 6, expires_at, now) is False
    ledger.close()
    # a length that is not whole records: nothing can be decided in order, so nothing is accepted
    with open(path, "ab") as file:
        file.write(b"\x01\x02\x03")
    broken = ReplayLedger(str(directory))
    with pytest.raises(LedgerError):
        broken.record(KEY, 11, expires_at, now)
    with pytest.raises(LedgerError):
        broken.record(KEY, 11, expires_at, now)
    # other buckets are not affected
    assert broken.record(KEY, 11, expires_at + BUCKET_MS, now) is True
    broken.close()


def test_clocks_either_side_of_a_bucket_edge_meet_in_one_file(tmp_path: Path) -> None:
    directory = str(tmp_path / "db.replay")
    edge = (_now() // BUCKET_MS + 3) * BUCKET_MS
    early, late = ReplayLedger(directory), ReplayLedger(directory)
    # one request (one expiry) seen by processes whose clocks read just before and just after an edge
    expires_at = edge + 60_000
    assert early.record(KEY, 1, expires_at, edge - 1) is True
    assert late.record(KEY, 1, expires_at, edge + 1) is False
    # expiries either side of an edge are different requests in different files, each once
    assert late.record(KEY, 2, edge - 1, edge - 2_000) is True
    assert early.record(KEY, 2, edge, edge - 2_000) is True
    assert early.record(KEY, 2, edge - 1, edge - 1_000) is False
    assert late.record(KEY, 2, edge, edge + 1) is False
    # the clock moves on past the edge: the first process to open a later bucket deletes nothing live
    assert late.record(KEY, 3, expires_at + BUCKET_MS, edge + KEEP_MS) is True
    assert early.record(KEY, 1, expires_at, edge + KEEP_MS) is False
    early.close()
    late.close()


def test_in_memory_ledger(tmp_path: Path) -> None:
    ledger = ReplayLedger(None)
    now = _now()
    assert ledger.record(KEY, 1, _expiry(now), now) is True
    assert ledger.record(KEY, 1, _expiry(now), now) is False
    # its buckets are forgotten once ended
    later = _expiry(now) + KEEP_MS + BUCKET_MS
    assert ledger.record(KEY, 2, later + 60_000, later) is True
    assert _expiry(now) // BUCKET_MS not in ledger._ledger._buckets
    ledger.close()
    assert not list(tmp_path.iterdir())


def test_the_store_uses_the_ledger_beside_its_database(tmp_path: Path) -> None:
    from keyplane.auth.nonces import NonceGuard
    from keyplane.auth.request import Reason
    from keyplane.store import Store

    database = tmp_path / "k.db"
    store = Store(f"sqlite:///{database}")
    store.migrate()
    guard = NonceGuard(store)
    now = _now()
    try:
        assert guard.accept_once(KEY, 42, _expiry(now), now) is Reason.VALID
        assert guard.accept_once(KEY, 42, _expiry(now), now) is Reason.REQUEST_REPLAYED
    finally:
        guard.close()
        store.close()
    assert read_ledger(str(database) + ".replay") == {_expiry(now) // BUCKET_MS: [(42, _expiry(now))]}
    assert not os.path.exists(str(database) + ".nonces") or os.path.getsize(str(database) + ".nonces") <= 16


def test_over_http_a_broken_bucket_fails_closed_and_other_buckets_still_work(tmp_path: Path) -> None:
    """``keyplane serve``: a bucket file that is not whole records answers UNAVAILABLE (the dialect's 503
    class) for the requests whose expiry falls in it, never a 500 and never an acceptance; other buckets
    are untouched."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "security"))
    from test_replays import PLACE_ORDER, _env, bitget_call, verify

    import bitget_helpers as h
    from conftest import make_server
    from keyplane.store.replay_ledger import ledger_directory

    server = make_server(tmp_path, _env())
    server.start()
    try:
        key = h.main_key(server)
        database = server.database_url.removeprefix("sqlite:///")
        directory = Path(ledger_directory(database))
        body = json.dumps({"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"})
        first = bitget_call(key, "POST", PLACE_ORDER, body=body)
        assert verify(server.base_url, first)["valid"] is True
        assert verify(server.base_url, first)["code"] == "REQUEST_REPLAYED"
        # a bucket of a request yet to come, cut to an odd length
        ts = int(time.time() * 1000) + 1_000
        while (ts + 60_000) // BUCKET_MS == (int(first["headers"]["ACCESS-TIMESTAMP"]) + 60_000) // BUCKET_MS:
            ts += 1_000  # another bucket than the first request's
        directory.mkdir(exist_ok=True)
        (directory / str((ts + 60_000) // BUCKET_MS)).write_bytes(b"\x01" * (RECORD_SIZE + 3))
        broken = bitget_call(key, "POST", PLACE_ORDER, body=body, timestamp=str(ts))
        for _ in range(2):
            answer = verify(server.base_url, broken)
            assert answer["valid"] is False and answer["code"] == "UNAVAILABLE", answer
        # the first request's bucket is untouched: still refused as a replay, and a new request there passes
        assert verify(server.base_url, first)["code"] == "REQUEST_REPLAYED"
        fresh = bitget_call(key, "POST", PLACE_ORDER, body=body.replace('"1"', '"2"'),
                            timestamp=first["headers"]["ACCESS-TIMESTAMP"])
        assert verify(server.base_url, fresh)["valid"] is True
        assert "Traceback" not in server.log_path.read_text()
    finally:
        server.stop()


# --- one owner, the hand-over, and the C table -------------------------------------------------------------
# A process that records alone owns the ledger: its records are stores into the mapped bucket file (no
# system call). A second process joins through the owner file's lock: the owner hands over to the shared
# append protocol, and takes the ledger back once alone. Real processes, real files throughout.


@pytest.fixture(params=["c", "python"])
def table(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a test on the C token table and on the pure-Python one (what an install without a compiler uses)."""
    from keyplane.store import replay_ledger

    if request.param == "c":
        if replay_ledger.Tokens is replay_ledger._PyTokens:
            pytest.fail("the C token table (keyplane.store._tokens) was not built")
    else:
        monkeypatch.setattr(replay_ledger, "Tokens", replay_ledger._PyTokens)
    return str(request.param)


def _record_all(directory: str, tokens: list[int], expires_at: int) -> tuple[list[bool], str]:
    ledger = ReplayLedger(directory)
    try:
        answers = [ledger.record(KEY, token, expires_at, _now()) for token in tokens]
        return answers, ledger.mode
    finally:
        ledger.close()


def _wait_for(condition: Any, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_process_alone_owns_the_ledger_and_records_with_no_system_call(
    tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyplane.store import replay_ledger

    directory = str(tmp_path / "db.replay")
    ledger = ReplayLedger(directory)
    assert ledger.mode == "undecided"  # nothing recorded yet: no lock taken (a CLI command never takes one)
    now = _now()
    assert ledger.record(KEY, 1, _expiry(now), now) is True
    assert ledger.mode == "owner"

    def no_system_call(*args: object) -> int:
        raise AssertionError("an owner's record made a system call")

    monkeypatch.setattr(replay_ledger, "_write", no_system_call)
    monkeypatch.setattr(replay_ledger, "_lseek", no_system_call)
    for token in range(2, 70_000):  # past one mapped chunk (65,536 records): the mapping grows on the way
        assert ledger.record(KEY, token, _expiry(now), now) is True
    assert ledger.record(KEY, 69_999, _expiry(now), now) is False
    monkeypatch.undo()
    ledger.close()
    # closed, the file ends at its last record, and a restart refuses every one
    assert read_ledger(directory) == {_expiry(now) // BUCKET_MS: [(t, _expiry(now)) for t in range(1, 70_000)]}
    again = ReplayLedger(directory)
    assert not any(again.record(KEY, t, _expiry(now), now) for t in (1, 65_536, 65_537, 69_999))
    again.close()


def test_a_second_process_takes_over_from_an_idle_owner_which_takes_it_back_when_alone(
    tmp_path: Path, table: str
) -> None:
    directory = str(tmp_path / "db.replay")
    owner = ReplayLedger(directory)
    now = _now()
    expires_at = _expiry(now)
    assert all(owner.record(KEY, token, expires_at, now) for token in range(1, 101))
    assert owner.mode == "owner"
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:  # the owner records nothing meanwhile: its watcher hands over
        answers, mode = pool.apply(_record_all, (directory, list(range(50, 151)), expires_at))
        assert answers == [False] * 51 + [True] * 50  # the owner's 50..100 refused, 101..150 new
        assert mode == "shared"
        assert owner.mode == "shared"
        assert owner.record(KEY, 120, expires_at, now) is False  # the other process's record
        assert owner.record(KEY, 200, expires_at, now) is True
        answers, _ = pool.apply(_record_all, (directory, [200, 201], expires_at))
        assert answers == [False, True]
    # the other process has gone: the first takes the ledger back, reading what was appended meanwhile
    _wait_for(lambda: owner.mode == "owner")
    assert owner.record(KEY, 201, expires_at, now) is False
    assert owner.record(KEY, 130, expires_at, now) is False
    assert owner.record(KEY, 202, expires_at, now) is True
    owner.close()
    answers, _ = _record_all(directory, [*range(1, 151), 200, 201, 202, 203], expires_at)
    assert answers == [False] * 153 + [True]


def _own_and_wait(directory: str, tokens: list[int], expires_at: int, ready: Any) -> None:
    ledger = ReplayLedger(directory)
    for token in tokens:
        assert ledger.record(KEY, token, expires_at, _now())
    assert ledger.mode == "owner"
    ready.set()
    time.sleep(120)  # killed here, its mapping still open


def test_an_owner_killed_mid_mapping_loses_no_record(tmp_path: Path) -> None:
    """The owner's records are stores into a shared mapping of the file: in the page cache, so a process
    killed with SIGKILL (no close, no cut) loses none; the zeros of its unused mapping refuse nothing."""
    directory = str(tmp_path / "db.replay")
    now = _now()
    expires_at = _expiry(now)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    owner = context.Process(target=_own_and_wait, args=(directory, list(range(1, 3001)), expires_at, ready))
    owner.start()
    try:
        assert ready.wait(60)
    finally:
        owner.kill()
        owner.join(30)
    assert owner.exitcode == -9
    path = Path(directory) / str(expires_at // BUCKET_MS)
    assert path.stat().st_size > 3000 * RECORD_SIZE  # the uncut mapping: zeros after the last record
    answers, mode = _record_all(directory, [*range(1, 3001), 3001], expires_at)
    assert answers == [False] * 3000 + [True]
    assert mode == "owner"  # the dead owner's lock died with it


def _hold_the_owner_lock(directory: str, ready: Any, release: Any) -> None:
    import fcntl

    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "owner"), os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
    ready.set()
    release.wait(60)


@contextlib.contextmanager
def _owned_elsewhere(directory: str) -> Iterator[None]:
    """Another process holds the ledger's owner lock meanwhile, and never hands it over."""
    context = multiprocessing.get_context("spawn")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold_the_owner_lock, args=(directory, ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        yield
    finally:
        release.set()
        holder.join(30)


def test_an_owner_that_does_not_hand_over_fails_the_joiner_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from keyplane.store import replay_ledger

    monkeypatch.setattr(replay_ledger, "JOIN_TIMEOUT_S", 0.3)
    monkeypatch.setattr(replay_ledger, "JOIN_BACKOFF_S", 0.5)
    directory = str(tmp_path / "db.replay")
    with _owned_elsewhere(directory):
        ledger = ReplayLedger(directory)
        now = _now()
        for attempt in range(2):  # every attempt fails closed, and none decides anything
            started = time.monotonic()
            with pytest.raises(LedgerError, match="did not hand it over"):
                ledger.record(KEY, 1, _expiry(now), now)
            waited = time.monotonic() - started
            # the first waits for the hand-over; the next, within the back-off, fails at once
            assert waited >= 0.3 if attempt == 0 else waited < 0.1, (attempt, waited)
        assert ledger.mode == "undecided"
        assert ledger.decide_nowait() is False  # an event loop's check: owned elsewhere, the record would wait
        assert read_ledger(directory) == {}
    time.sleep(0.5)  # the back-off
    assert ledger.record(KEY, 1, _expiry(now), now) is True  # the holder has gone
    assert ledger.mode == "owner"
    ledger.close()


def _record_on_a_full_disk(directory: str, expires_at: int) -> str:
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit: EFBIG, as ENOSPC on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
    ledger = ReplayLedger(directory)
    try:
        ledger.record(KEY, 1, expires_at, _now())
    except OSError as error:
        return type(error).__name__
    return "accepted"


def test_an_owner_that_cannot_allocate_its_mapping_refuses_instead_of_crashing(tmp_path: Path) -> None:
    """The mapping's blocks are allocated before any store into it: a full disk is an error (an outage
    answer), never a SIGBUS that kills the server."""
    directory = str(tmp_path / "db.replay")
    expires_at = _expiry(_now())
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        assert pool.apply(_record_on_a_full_disk, (directory, expires_at)) == "OSError"
    answers, _ = _record_all(directory, [1], expires_at)
    assert answers == [True]  # nothing was accepted there


def _race_threads(directory: str, tokens: list[int], expires_at: int, start: Any, out: Any) -> None:
    import threading

    ledger = ReplayLedger(directory)
    accepted: list[int] = []
    start.wait()

    def run(order: list[int]) -> None:
        for token in order:
            if ledger.record(KEY, token, expires_at, _now()):
                accepted.append(token)

    threads = [threading.Thread(target=run, args=(tokens[::step],)) for step in (1, -1, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    out.put(accepted)


def test_threads_of_two_processes_racing_through_the_hand_over_accept_each_token_once(tmp_path: Path) -> None:
    """Three threads of a process that owns the ledger and three of one that joins mid-way record the same
    tokens: the hand-over happens while they race, and each token is accepted exactly once in all."""
    directory = str(tmp_path / "db.replay")
    expires_at = _expiry(_now())
    tokens = list(range(1, 20_001))
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_race_threads, args=(directory, tokens, expires_at, start, out)) for _ in range(2)
    ]
    assert sorted(_accepted_by(workers, out)) == tokens


def test_the_c_table_and_the_python_table_answer_alike() -> None:
    """Random operations on both tables: the same answers, and the same records in their mappings."""
    import mmap
    import random

    from keyplane.store import replay_ledger

    if replay_ledger.Tokens is replay_ledger._PyTokens:
        pytest.fail("the C token table (keyplane.store._tokens) was not built")
    rng = random.Random(7)
    low, high = 1_000 * BUCKET_MS, 1_001 * BUCKET_MS
    tables = [replay_ledger.Tokens(low, high), replay_ledger._PyTokens(low, high)]
    mappings = [mmap.mmap(-1, 4096), mmap.mmap(-1, 4096)]
    pool = [0, -1, 2**63 - 1, -(2**63), *(rng.getrandbits(64) - 2**63 for _ in range(3000))]
    for step in range(20_000):
        token = rng.choice(pool)
        kind = rng.random()
        if kind < 0.35:
            answers = [t.add(token) for t in tables]
        elif kind < 0.5:
            answers = [token in t for t in tables]
        elif kind < 0.95:
            expires_at = rng.choice([low, high - 1, rng.randrange(low, high), low - 1, high])
            answers = [t.record(token, expires_at) for t in tables]
        elif kind < 0.98:
            at = rng.randrange(0, 4096 // RECORD_SIZE + 1) * RECORD_SIZE
            answers = [t.attach(m, at) for t, m in zip(tables, mappings, strict=True)]
        else:
            answers = [t.detach() for t in tables]
        assert answers[0] == answers[1], (step, token, answers)
        assert len(tables[0]) == len(tables[1])
        assert mappings[0][:] == mappings[1][:]
    for t in tables:
        t.detach()
    with pytest.raises(OverflowError):
        tables[0].add(2**64)


def test_handles_close_once_each_and_a_closed_handle_records_nothing(tmp_path: Path) -> None:
    """Two users of one directory in one process share one ledger (the lock is the process's). A user that
    closes twice (a runtime and its verifier both closing the nonce ledger) closes only its own handle: the
    other still owns the ledger, no second owner appears in this process or another, and nothing is lost."""
    directory = str(tmp_path / "db.replay")
    now = _now()
    expires_at = _expiry(now)
    first, second = ReplayLedger(directory), ReplayLedger(directory)
    assert first.record(KEY, 1, expires_at, now) is True
    first.close()
    first.close()
    with pytest.raises(LedgerError, match="closed"):
        first.record(KEY, 2, expires_at, now)
    assert second.record(KEY, 1, expires_at, now) is False
    assert second.record(KEY, 2, expires_at, now) is True
    assert second.mode == "owner"
    third = ReplayLedger(directory)  # the same ledger again, not a second owner
    assert third.record(KEY, 2, expires_at, now) is False
    third.close()
    assert second.record(KEY, 3, expires_at, now) is True and second.mode == "owner"
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        answers, mode = pool.apply(_record_all, (directory, [1, 2, 3, 4], expires_at))
    assert (answers, mode) == ([False, False, False, True], "shared")
    assert second.record(KEY, 4, expires_at, now) is False
    second.close()
    with pytest.raises(LedgerError, match="closed"):
        second.record(KEY, 5, expires_at, now)
    # the last close released the ledger: a new one owns it, and every record survived
    answers, mode = _record_all(directory, [1, 2, 3, 4, 5], expires_at)
    assert (answers, mode) == ([False, False, False, False, True], "owner")


def test_a_fork_while_another_thread_records_never_hangs_the_child(tmp_path: Path, table: str) -> None:
    """The child of a fork taken while a thread was inside a bucket's table (its lock held, on the Python
    table) drops its copies without calling into them: it never waits on a lock no thread of it will free."""
    import threading

    directory = str(tmp_path / "db.replay")
    ledger = ReplayLedger(directory)
    now = _now()
    expires_at = _expiry(now)
    stop = threading.Event()

    def hammer() -> None:
        token = 1
        while not stop.is_set() and token < 2_000_000:
            ledger.record(KEY, token, expires_at, now)
            token += 1

    thread = threading.Thread(target=hammer)
    thread.start()
    stuck = 0
    try:
        time.sleep(0.1)
        for _ in range(20):
            pid = os.fork()
            if pid == 0:  # the child: record once (decides its own mode) and leave
                child = ReplayLedger(directory)
                os._exit(0 if child.record(KEY, 10**12, expires_at, _now()) in (True, False) else 1)
            deadline = time.monotonic() + 15
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    assert os.waitstatus_to_exitcode(status) == 0
                    break
                if time.monotonic() > deadline:
                    stuck += 1
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                    break
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
        ledger.close()
    assert stuck == 0


def test_a_ledger_closed_but_still_registered_is_never_handed_out(tmp_path: Path) -> None:
    """A fork in the middle of a ledger's last close copies it closed but still registered: the child's
    next handle gets a new ledger, not the dead one (which would refuse every record)."""
    from keyplane.store import replay_ledger

    directory = str(tmp_path / "db.replay")
    handle = ReplayLedger(directory)
    dead = handle._ledger
    dead._closed = True  # as the child of such a fork finds it
    try:
        fresh = ReplayLedger(directory)
        assert fresh._ledger is not dead
        now = _now()
        assert fresh.record(KEY, 1, _expiry(now), now) is True
        fresh.close()
    finally:
        dead._closed = False
        handle.close()
    assert os.path.realpath(directory) not in replay_ledger._registry


def test_one_database_reached_through_a_symlink_has_one_ledger(tmp_path: Path) -> None:
    from keyplane.store.replay_ledger import ledger_directory

    real = tmp_path / "data" / "keyplane.db"
    real.parent.mkdir()
    real.touch()
    (tmp_path / "current.db").symlink_to(real)
    (tmp_path / "link").symlink_to(real.parent)
    paths = [str(real), str(tmp_path / "current.db"), str(tmp_path / "link" / "keyplane.db")]
    assert len({ledger_directory(path) for path in paths}) == 1
    now = _now()
    expires_at = _expiry(now)
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # another process, through a symlink
        assert pool.apply(_record_all, (ledger_directory(paths[1]), [7], expires_at))[0] == [True]
    answers, _ = _record_all(ledger_directory(paths[2]), [7, 8], expires_at)
    assert answers == [False, True]


def test_a_stuck_owner_ties_up_one_waiting_thread_and_the_others_fail_closed_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One thread of a joining process waits for the hand-over; the others wait on it only briefly: a
    stuck owner must not take every thread of a verifier's pool."""
    import threading

    from keyplane.store import replay_ledger

    monkeypatch.setattr(replay_ledger, "JOIN_TIMEOUT_S", 1.5)
    directory = str(tmp_path / "db.replay")
    ledger = ReplayLedger(directory)
    waited: list[float] = []
    with _owned_elsewhere(directory):
        start = threading.Barrier(4)

        def record(token: int) -> None:
            start.wait()
            began = time.monotonic()
            with pytest.raises(LedgerError):
                ledger.record(KEY, token, _expiry(_now()), _now())
            waited.append(time.monotonic() - began)

        threads = [threading.Thread(target=record, args=(token,)) for token in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    ledger.close()
    waited.sort()
    assert waited[-1] >= 1.4, waited  # the one that waited for the hand-over
    assert all(seconds < 0.6 for seconds in waited[:-1]), waited  # the others followed it briefly
