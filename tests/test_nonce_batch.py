"""Group commit of nonce and replay claims on real PostgreSQL (``store/nonce_batch.py``): what one batch
decides when its claims race one another, when another node got there first, when a key was deleted,
when the statement fails midway; and that ``Verifier.verify_async`` decides claims in batches, exactly."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from keyplane import crypto
from keyplane.auth.nonces import NonceGuard
from keyplane.auth.request import Reason, SignedRequest
from keyplane.auth.verifier import Verifier
from keyplane.domain.model import Scheme
from keyplane.domain.requirements import Requirement
from keyplane.services import KeyplaneService
from keyplane.store import Store
from keyplane.store.nonce_batch import ADVANCE, RECORD, Claim
from keyplane.store.nonces import KeyGone, NonceLedger

pytestmark = [pytest.mark.postgres]

MASTER = crypto.MasterKey(b"k" * 32)
NOW = 1_800_000_000_000
PATH = "/api/v4/trade-account/balance"


def _service(url: str) -> KeyplaneService:
    store = Store(url)
    store.migrate()
    return KeyplaneService(store, MASTER)


def _keys(service: KeyplaneService, n: int, scheme: Scheme = Scheme.WHITEBIT) -> list[Any]:
    main = service.accounts.create_main_account("venue")
    return [service.keys.issue_main_key(main.uid, scheme) for _ in range(n)]


def _last(service: KeyplaneService, key_id: str) -> int | None:
    with service.store.reading() as tx:
        return tx.last_nonce(key_id)


def _seen(service: KeyplaneService, key_id: str) -> set[int]:
    with service.store.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT nonce FROM seen_nonces WHERE api_key_id = :k"), {"k": key_id}).all()
    return {int(row[0]) for row in rows}


def _backend_pids(batcher: Any) -> list[int]:
    """The PostgreSQL backends of ``batcher``'s kept connections (not those of other tests on the server)."""
    return [conn.connection.dbapi_connection.info.backend_pid for conn in list(batcher._conns)]


def _advance(key_id: str, nonce: int) -> Claim:
    return Claim(ADVANCE, key_id, nonce, 0, NOW)


def _record(key_id: str, nonce: int) -> Claim:
    return Claim(RECORD, key_id, nonce, nonce + 10_000, NOW)


@pytest.fixture
def ledger(pg_url: str) -> Any:
    service = _service(pg_url)
    nonce_ledger = NonceLedger(service.store)
    assert nonce_ledger.batcher is not None
    yield service, nonce_ledger, nonce_ledger.batcher
    nonce_ledger.close()
    service.store.engine.dispose()


def test_replays_racing_inside_one_batch_are_accepted_once(ledger: Any) -> None:
    service, _, batcher = ledger
    a, b = (issued.key.id for issued in _keys(service, 2))
    # a key's first request, five times over, beside a windowed nonce five times over, in one batch
    batch = [_advance(a, 7) for _ in range(5)] + [_record(b, NOW) for _ in range(5)]
    batcher.decide(batch)
    assert [c.outcome for c in batch[:5]] == [True, False, False, False, False]
    assert [c.outcome for c in batch[5:]] == [True, False, False, False, False]
    assert all(c.error is None for c in batch)
    assert _last(service, a) == 7 and _seen(service, b) == {NOW}
    # and again in a later batch: every one refused
    again = [_advance(a, 7), _record(b, NOW)]
    batcher.decide(again)
    assert [c.outcome for c in again] == [False, False]
    assert batcher.batches == 2


def test_rising_nonces_of_one_key_in_one_batch_are_accepted_as_if_one_after_another(ledger: Any) -> None:
    service, _, batcher = ledger
    (key,) = (issued.key.id for issued in _keys(service, 1))
    batch = [_advance(key, n) for n in (10, 12, 11, 15, 15)]
    batcher.decide(batch)
    # 11 comes after 12 and the second 15 after the first: refused, as a sequence of single claims would be
    assert [c.outcome for c in batch] == [True, True, False, True, False]
    assert _last(service, key) == 15


def test_a_chain_another_node_overtook_is_decided_claim_by_claim(ledger: Any) -> None:
    service, nonce_ledger, batcher = ledger
    (key,) = (issued.key.id for issued in _keys(service, 1))
    other = NonceLedger(service.store)  # another node
    try:
        assert other.advance(key, 12, NOW) == (True, None)
        batch = [_advance(key, n) for n in (11, 13, 12, 14)]  # 12 is below 13 in this batch: refused here
        batcher.decide(batch)
        assert [c.outcome for c in batch] == [False, True, False, True]
        assert _last(service, key) == 14
    finally:
        other.close()
    assert nonce_ledger.advance(key, 14, NOW) == (False, None)


def test_a_deleted_key_in_a_batch_is_gone_for_its_claims_only(ledger: Any) -> None:
    service, _, batcher = ledger
    kept, deleted = _keys(service, 2)
    with service.store.engine.begin() as conn:  # deleted by another node after this node cached it
        conn.execute(sa.text("DELETE FROM api_keys WHERE id = :id"), {"id": deleted.key.id})
    batch = [_advance(kept.key.id, 5), _advance(deleted.key.id, 5), _record(deleted.key.id, NOW),
             _record(kept.key.id, NOW)]  # fmt: skip
    batcher.decide(batch)
    assert batch[0].outcome is True and batch[0].error is None
    assert isinstance(batch[1].error, KeyGone) and isinstance(batch[2].error, KeyGone)
    assert batch[3].outcome is True and batch[3].error is None
    assert _last(service, kept.key.id) == 5 and _seen(service, kept.key.id) == {NOW}


def test_a_batch_whose_statement_fails_midway_accepts_none_of_its_claims(ledger: Any) -> None:
    """The batch writes key ``first``'s row, then waits for ``second``'s row (locked by another transaction)
    and is cancelled there, as a server that goes away mid-statement would leave it: every claim of the
    batch gets the error, and nothing it wrote stays (``first`` is still unclaimed)."""
    service, _, batcher = ledger
    ids = sorted(issued.key.id for issued in _keys(service, 2))
    first, second = ids  # the batch writes rows in key order
    batcher.decide([_advance(second, 1)])
    locker = service.store.engine.connect()
    try:
        locker.begin()
        locker.execute(sa.text("SELECT 1 FROM key_nonces WHERE api_key_id = :k FOR UPDATE"), {"k": second})
        batch = [_advance(first, 5), _record(first, NOW), _advance(second, 5)]
        worker = threading.Thread(target=batcher.decide, args=(batch,))
        worker.start()
        # autocommit: within one transaction PostgreSQL shows the same pg_stat_activity snapshot every time
        with service.store.engine.execution_options(isolation_level="AUTOCOMMIT").connect() as admin:
            deadline = time.monotonic() + 20
            pid = None
            while pid is None and time.monotonic() < deadline:  # this batcher's backends only (others run tests)
                pid = admin.execute(
                    sa.text("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = ANY(:pids)"),
                    {"pids": _backend_pids(batcher)},
                ).scalar()
            assert pid is not None, "the batch never waited for the locked row"
            assert admin.execute(sa.text("SELECT pg_cancel_backend(:p)"), {"p": pid}).scalar()
        worker.join(timeout=20)
    finally:
        locker.rollback()  # else dropping the test's schema would wait for this lock for ever
        locker.close()
    assert all(isinstance(c.error, sqlalchemy.exc.OperationalError) for c in batch), [c.error for c in batch]
    assert not any(c.outcome for c in batch)
    assert _last(service, first) is None and _seen(service, first) == set() and _last(service, second) == 1
    # the batcher goes on: the same claims now decide, and are accepted (nothing was spent)
    retry = [_advance(first, 5), _record(first, NOW), _advance(second, 5)]
    batcher.decide(retry)
    assert [c.outcome for c in retry] == [True, True, True] and all(c.error is None for c in retry)


def test_a_kept_connection_that_died_is_replaced_without_failing_the_batch(ledger: Any) -> None:
    service, _, batcher = ledger
    (key,) = (issued.key.id for issued in _keys(service, 1))
    assert batcher.advance(key, 1, NOW) is True
    pids = _backend_pids(batcher)
    assert len(pids) == 1
    with service.store.engine.connect() as admin:  # as a PostgreSQL restart would: the backend is gone
        assert admin.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pids[0]}).scalar()
    assert batcher.advance(key, 2, NOW) is True
    assert batcher.advance(key, 2, NOW) is False


# --- through the verifier, on the event loop ------------------------------------------------------------


def _whitebit(issued: Any, nonce: int, windowed: bool = False) -> SignedRequest:
    body = json.dumps({"request": PATH, "nonce": str(nonce), "nonceWindow": windowed}, separators=(",", ":"))
    payload = base64.b64encode(body.encode()).decode()
    signature = hmac.new(issued.secret.encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = {"x-txc-apikey": issued.key.api_key, "x-txc-payload": payload, "x-txc-signature": signature}
    return SignedRequest("POST", PATH, "", headers, body.encode(), "127.0.0.1")


def test_verify_async_decides_concurrent_claims_in_batches_and_exactly(pg_url: str) -> None:
    """Two verifiers on one PostgreSQL schema (two nodes): 60 requests with new nonces, each sent to both
    at once, and 20 windowed ones likewise; every request is accepted by exactly one node, and the nodes
    decided them in fewer statements than requests."""
    service = _service(pg_url)
    issued = _keys(service, 3)
    nodes = [Verifier(Store(pg_url), MASTER), Verifier(Store(pg_url), MASTER)]
    need = Requirement()
    base = int(time.time() * 1000)
    requests = [_whitebit(issued[i % 3], base + i) for i in range(60)]
    requests += [_whitebit(issued[i % 3], base + i, windowed=True) for i in range(20)]

    try:
        async def both() -> list[list[Any]]:
            a, b = await asyncio.gather(
                asyncio.gather(*(nodes[0].verify_async(r, need, Scheme.WHITEBIT) for r in requests)),
                asyncio.gather(*(nodes[1].verify_async(r, need, Scheme.WHITEBIT) for r in requests)),
            )
            return [list(a), list(b)]

        for node in nodes:
            for i in issued:
                node.cache.get(i.key.api_key)
        first, second = asyncio.run(both())
        for one, two in zip(first, second, strict=True):
            assert {one.reason, two.reason} <= {Reason.VALID, Reason.NONCE_TOO_LOW, Reason.NONCE_REPLAYED}
            assert (one.reason is Reason.VALID) + (two.reason is Reason.VALID) <= 1
        # monotonic nonces sent concurrently may arrive out of order (refused then); windowed ones may not
        for one, two in zip(first[60:], second[60:], strict=True):
            assert (one.reason is Reason.VALID) + (two.reason is Reason.VALID) == 1, (one.reason, two.reason)
        valid = [r for r in first + second if r.reason is Reason.VALID]
        assert len(valid) >= 20 + 3  # at least the windowed ones and each key's highest nonce
        assert all(r.payload is not None and r.key is not None for r in valid)
        for node in nodes:
            batcher = node.nonces._ledger.batcher
            assert batcher is not None and batcher.claims >= 1 and batcher.batches < batcher.claims
        # the highest nonce of each key is stored, and accepted by nobody again
        for i in issued:
            last = _last(service, i.key.id)
            assert last is not None and last >= base + 57
            again = asyncio.run(nodes[0].verify_async(_whitebit(i, last), need, Scheme.WHITEBIT))
            assert again.reason is Reason.NONCE_TOO_LOW
    finally:
        for node in nodes:
            node.close()
            node.store.engine.dispose()


def test_a_thread_and_the_loop_share_batches_and_a_guard_refuses_what_its_store_refused(pg_url: str) -> None:
    """``accept`` (a worker thread) and ``accept_async`` (the loop) go through one batcher; the in-memory
    last nonce only ever rises, whatever order concurrent accepts finish in."""
    service = _service(pg_url)
    (issued,) = _keys(service, 1)
    key = issued.key.id
    guard = NonceGuard(service.store)
    try:
        async def run() -> list[Reason]:
            loop = asyncio.get_running_loop()
            threaded = [loop.run_in_executor(None, guard.accept, key, n, False, NOW) for n in range(100, 110)]
            awaited = [guard.accept_async(key, n, False, NOW) for n in range(110, 120)]
            return list(await asyncio.gather(*threaded, *awaited))

        reasons = asyncio.run(run())
        assert reasons.count(Reason.VALID) >= 1
        assert guard._last[key] == _last(service, key) == max(
            n for n, r in zip(range(100, 120), reasons, strict=True) if r is Reason.VALID
        )
        assert guard.accept(key, 119, False, NOW) is Reason.NONCE_TOO_LOW
    finally:
        guard.close()
        service.store.engine.dispose()
