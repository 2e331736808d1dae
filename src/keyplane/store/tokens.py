"""The store's reads and writes of operator tokens and idempotency claims (the native management API)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from keyplane.domain.tokens import OperatorToken, Scope
from keyplane.store.store import Transaction
from keyplane.store.tables import idempotency_keys, operator_tokens

_PUBLIC = [c for c in operator_tokens.c if c.name != "token_hash"]


def _token(row: Row[Any]) -> OperatorToken:
    return OperatorToken(
        id=row.id, name=row.name, scopes=tuple(Scope(s) for s in row.scopes), hint=row.hint,
        created_at=row.created_at, revoked_at=row.revoked_at,
    )


def insert_token(
    tx: Transaction, *, token_id: str, name: str, scopes: tuple[Scope, ...], token_hash: str, hint: str, at: int
) -> OperatorToken:
    tx.conn.execute(sa.insert(operator_tokens).values(
        id=token_id, name=name, scopes=[s.value for s in scopes], token_hash=token_hash, hint=hint, created_at=at,
    ))
    return OperatorToken(id=token_id, name=name, scopes=scopes, hint=hint, created_at=at)


def token_by_hash(tx: Transaction, token_hash: str) -> tuple[OperatorToken, str] | None:
    """The token whose hash is ``token_hash`` (one indexed read), and the hash as stored."""
    row = tx.conn.execute(sa.select(operator_tokens).where(operator_tokens.c.token_hash == token_hash)).first()
    return (_token(row), str(row.token_hash)) if row else None


def get_token(tx: Transaction, token_id: str, *, lock: bool = False) -> OperatorToken | None:
    query = sa.select(*_PUBLIC).where(operator_tokens.c.id == token_id)
    row = tx.conn.execute(query.with_for_update() if lock else query).first()
    return _token(row) if row else None


def list_tokens(tx: Transaction, *, include_revoked: bool = True) -> list[OperatorToken]:
    query = sa.select(*_PUBLIC).order_by(operator_tokens.c.created_at, operator_tokens.c.id)
    if not include_revoked:
        query = query.where(operator_tokens.c.revoked_at.is_(None))
    return [_token(row) for row in tx.conn.execute(query)]


def revoke_token(tx: Transaction, token_id: str, at: int) -> None:
    tx.conn.execute(sa.update(operator_tokens).where(operator_tokens.c.id == token_id).values(revoked_at=at))


# idempotency claims --------------------------------------------------------------------------------------


def claim(
    tx: Transaction, *, token_id: str, key: str, request_hash: str, owner: str, at: int
) -> bool:
    """Takes the claim on ``(token_id, key)``; False when a row is already there (a savepoint keeps ``tx``
    usable after the unique violation)."""
    try:
        with tx.conn.begin_nested():
            tx.conn.execute(sa.insert(idempotency_keys).values(
                token_id=token_id, key=key, request_hash=request_hash, owner=owner, created_at=at, claimed_at=at,
            ))
    except sa.exc.IntegrityError:
        return False
    return True


def read_claim(tx: Transaction, token_id: str, key: str, *, lock: bool = False) -> Row[Any] | None:
    query = sa.select(idempotency_keys).where(idempotency_keys.c.token_id == token_id, idempotency_keys.c.key == key)
    return tx.conn.execute(query.with_for_update() if lock else query).first()


def take_over(
    tx: Transaction, *, token_id: str, key: str, request_hash: str, owner: str, at: int, was_owner: str
) -> bool:
    """Hands a stale claim to ``owner`` (a fresh one: new hash, no answer), if ``was_owner`` still holds it."""
    taken = tx.conn.execute(
        sa.update(idempotency_keys)
        .where(
            idempotency_keys.c.token_id == token_id, idempotency_keys.c.key == key,
            idempotency_keys.c.owner == was_owner,
        )
        .values(request_hash=request_hash, owner=owner, status=None, body=None, created_at=at, claimed_at=at)
    ).rowcount
    return bool(taken)


def finish(tx: Transaction, *, token_id: str, key: str, owner: str, status: int, body: bytes) -> bool:
    done = tx.conn.execute(
        sa.update(idempotency_keys)
        .where(
            idempotency_keys.c.token_id == token_id, idempotency_keys.c.key == key, idempotency_keys.c.owner == owner
        )
        .values(status=status, body=body)
    ).rowcount
    return bool(done)


def release(tx: Transaction, *, token_id: str, key: str, owner: str) -> None:
    tx.conn.execute(sa.delete(idempotency_keys).where(
        idempotency_keys.c.token_id == token_id, idempotency_keys.c.key == key, idempotency_keys.c.owner == owner,
        idempotency_keys.c.status.is_(None),
    ))


def purge_claims(tx: Transaction, before: int, limit: int = 500) -> int:
    """Deletes up to ``limit`` claims made before ``before`` (the oldest first)."""
    old = (
        sa.select(idempotency_keys.c.token_id, idempotency_keys.c.key)
        .where(idempotency_keys.c.created_at < before)
        .order_by(idempotency_keys.c.created_at)
        .limit(limit)
    )
    rows = tx.conn.execute(old).all()
    for row in rows:
        tx.conn.execute(sa.delete(idempotency_keys).where(
            idempotency_keys.c.token_id == row.token_id, idempotency_keys.c.key == row.key,
            idempotency_keys.c.created_at < before,
        ))
    return len(rows)
