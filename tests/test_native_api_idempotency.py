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
