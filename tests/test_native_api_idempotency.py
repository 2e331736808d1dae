"""The Idempotency-Key claims themselves (keyplane.services.idempotency), on a real SQLite store: a claim
left unanswered past STALE_MS is taken over by the same request only, an answer is kept 24 hours, and the
recorded answer is what ``finish`` was given (the HTTP layer records it without the one-time secret)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from keyplane.errors import IdempotencyInProgress, IdempotencyKeyReused, InvalidInput
from keyplane.services.idempotency import STALE_MS, TTL_MS, Claim, IdempotencyService, Replay, check_key
from keyplane.services.tokens import TokenService
from keyplane.store import Store
from keyplane.store.tables import idempotency_keys


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(f"sqlite:///{tmp_path / 'keyplane.db'}")
    store.migrate()
    return store


def _age(store: Store, key: str, ms: int, *, claimed_only: bool = False) -> None:
    values = {"claimed_at": idempotency_keys.c.claimed_at - ms}
    if not claimed_only:
        values["created_at"] = idempotency_keys.c.created_at - ms
    with store.transaction() as tx:
        tx.conn.execute(sa.update(idempotency_keys).where(idempotency_keys.c.key == key).values(**values))


def test_claims_answers_stale_takeover_and_expiry(store: Store) -> None:
    token = TokenService(store).create(["all"]).token.id
    service = IdempotencyService(store)
    first = service.begin(token, "k", "hash-a")
    assert isinstance(first, Claim)
    with pytest.raises(IdempotencyInProgress):
        service.begin(token, "k", "hash-a")
    with pytest.raises(IdempotencyKeyReused):
        service.begin(token, "k", "hash-b")

    _age(store, "k", STALE_MS + 1000, claimed_only=True)  # its holder died or lost the store
    with pytest.raises(IdempotencyKeyReused):
        service.begin(token, "k", "hash-b")  # another request never takes it over
    second = service.begin(token, "k", "hash-a")
    assert isinstance(second, Claim) and second.owner != first.owner
    service.finish(first, 201, b"late")  # the old holder's answer no longer counts
    with pytest.raises(IdempotencyInProgress):
        service.begin(token, "k", "hash-a")
    service.finish(second, 201, b'{"id":"x"}')
    assert service.begin(token, "k", "hash-a") == Replay(201, b'{"id":"x"}')

    _age(store, "k", TTL_MS + 1000)  # a day later the key is free again, for any request
    assert isinstance(service.begin(token, "k", "hash-b"), Claim)


def test_abandon_frees_the_key_and_old_claims_are_purged(store: Store) -> None:
    token = TokenService(store).create(["all"]).token.id
    service = IdempotencyService(store)
    claim = service.begin(token, "gone", "h")
    assert isinstance(claim, Claim)
    service.abandon(claim)
    assert isinstance(service.begin(token, "gone", "other"), Claim)
    service.begin(token, "old", "h")
    _age(store, "old", TTL_MS + 1)
    service.begin(token, "fresh", "h")  # any claim purges those past a day
    with store.reading() as tx:
        keys = {row.key for row in tx.conn.execute(sa.select(idempotency_keys.c.key))}
    assert keys == {"gone", "fresh"}


def test_keys_are_visible_ascii_up_to_255() -> None:
    assert check_key("a" * 255) == "a" * 255
    for bad in ("", "a" * 256, "a b", "é", "a\tb", "a\x00"):
        with pytest.raises(InvalidInput):
            check_key(bad)


def test_a_create_whose_answer_was_lost_with_its_process_is_not_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The create commits, then its process dies before it records the answer (here: the answer's write
    fails). Past STALE_MS a retry with the same key must not take the claim over and create a second account:
    the create's own commit marked the claim, and the retry is told its object exists."""
    import asyncio

    import httpx

    from keyplane import errors
    from keyplane.app import create_app
    from keyplane.config import Settings
    from keyplane.runtime import build_runtime

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'keyplane.db'}", master_key="56" * 32)
    runtime = build_runtime(settings)
    try:
        token = TokenService(runtime.service.store).create(["all"]).secret
        app = create_app(settings, runtime)

        def died(*args: object, **kwargs: object) -> None:
            raise errors.Unavailable("the process died before recording the answer")

        async def create() -> httpx.Response:
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://keyplane") as client:
                return await client.post(
                    "/v1/accounts", json={"name": "once-only"},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "lost-answer"},
                )

        with monkeypatch.context() as patch:
            patch.setattr(IdempotencyService, "finish", died)
            assert asyncio.run(create()).status_code == 201
        _age(runtime.service.store, "lost-answer", STALE_MS + 1000, claimed_only=True)
        retry = asyncio.run(create())
        assert retry.status_code == 409, retry.text
        assert retry.json()["error"]["code"] == "idempotent_answer_lost"
        named = [a for a in runtime.service.accounts.list_main_accounts() if a.name == "once-only"]
        assert len(named) == 1
    finally:
        runtime.close()


def test_a_provisional_answer_waits_while_fresh_and_answers_once_stale(store: Store) -> None:
    """Racing duplicates poll the claim while its holder runs: between the create's commit (which writes the
    provisional 'answer lost') and the real answer, a poller must keep waiting, not take the 409."""
    from keyplane.services.idempotency import ANSWER_LOST_BODY, ANSWER_LOST_STATUS
    from keyplane.store.store import in_the_same_commit

    token = TokenService(store).create(["all"]).token.id
    service = IdempotencyService(store)
    claim = service.begin(token, "p", "h")
    assert isinstance(claim, Claim)
    with in_the_same_commit(service.provisional(claim)), store.transaction():
        pass  # the create's commit
    with pytest.raises(IdempotencyInProgress):
        service.begin(token, "p", "h")
    _age(store, "p", STALE_MS + 1000, claimed_only=True)  # its holder died before the real answer
    assert service.begin(token, "p", "h") == Replay(ANSWER_LOST_STATUS, ANSWER_LOST_BODY)
