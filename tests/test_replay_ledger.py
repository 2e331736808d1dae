"""The SQLite replay ledger (store/replay_ledger.py): each token accepted once across processes, a fork and a
restart; buckets expire by deleting their files; torn and zeroed records refuse nothing; clocks either side
of a bucket edge meet in one file. Real files and real processes throughout."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

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
    for worker in workers:
        worker.start()
    accepted = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    together = [token for part in accepted for token in part]
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
    assert _expiry(now) // BUCKET_MS not in ledger._buckets
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
