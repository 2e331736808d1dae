"""Operator tokens: issued by the ``keyplane tokens`` command, presented to the native management API.

A token is ``kpt_`` and 43 base62 characters (256 random bits). Only its SHA-256 is stored: a slow or
keyed hash protects guessable secrets such as passwords, and nothing guesses 256 random bits, so a plain
digest lets a token be found by one indexed read; the found digest is compared again in constant time.
The token is shown once, when made, and never logged.

Revocation is seen by every node at once: each management call looks its token up in the store (one
indexed read, no cache). Management calls are rare next to verifications and each runs a transaction of
its own anyway, so a cache (and the change feed to keep it honest) would save little and leave a window
in which a revoked token still works.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from keyplane.domain.tokens import ID_PREFIX, TOKEN_PREFIX, OperatorToken, parse_scopes
from keyplane.errors import AlreadyInState, InvalidInput, TokenNotFound
from keyplane.store import Store
from keyplane.store import tokens as rows
from keyplane.store.store import now_ms

_ALPHABET = string.ascii_letters + string.digits
_RANDOM_CHARS = 43  # 43 base62 characters: 256.1 bits
_SHAPE = re.compile(rf"{TOKEN_PREFIX}[A-Za-z0-9]{{{_RANDOM_CHARS}}}")
_HINT_CHARS = 4
NAME_MAX = 64


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just made: the only time the token itself exists outside its holder."""

    token: OperatorToken
    secret: str = field(repr=False)


def new_token_text() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_CHARS))


def token_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def check_token_name(name: str) -> str:
    name = name.strip()
    if len(name) > NAME_MAX or any(ch < " " or ch == "\x7f" for ch in name):
        raise InvalidInput(f"a token's name is at most {NAME_MAX} printable characters", field="name")
    return name


class TokenService:
    """Issue, list, revoke and authenticate operator tokens; each change is one transaction and one audit
    event (the command line acts as the operator: no actor)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, scopes: Iterable[object], *, name: str = "") -> IssuedToken:
        parsed = parse_scopes(scopes)
        name = check_token_name(name)
        text = new_token_text()
        at = now_ms()
        with self.store.transaction() as tx:
            token = rows.insert_token(
                tx, token_id=ID_PREFIX + secrets.token_hex(8), name=name, scopes=parsed,
                token_hash=token_digest(text), hint=text[: len(TOKEN_PREFIX) + _HINT_CHARS], at=at,
            )
            tx.add_audit(
                action="token.create", target=token.id, account_uid=None, actor_uid=None, actor_key=None, ip=None,
                detail={"name": name, "scopes": [s.value for s in parsed]},
            )
        return IssuedToken(token=token, secret=text)

    def list(self, *, include_revoked: bool = True) -> list[OperatorToken]:
        with self.store.reading() as tx:
            return rows.list_tokens(tx, include_revoked=include_revoked)

    def revoke(self, token_id: str) -> OperatorToken:
        at = now_ms()
        with self.store.transaction() as tx:
            token = rows.get_token(tx, token_id, lock=True)
            if token is None:
                raise TokenNotFound(f"no operator token {token_id}", field="id")
            if token.revoked:
                raise AlreadyInState(f"operator token {token_id} is already revoked")
            rows.revoke_token(tx, token_id, at)
            tx.add_audit(
                action="token.revoke", target=token_id, account_uid=None, actor_uid=None, actor_key=None, ip=None,
                detail={"name": token.name},
            )
        return OperatorToken(
            id=token.id, name=token.name, scopes=token.scopes, hint=token.hint, created_at=token.created_at,
            revoked_at=at,
        )

    def authenticate(self, presented: str) -> OperatorToken | None:
        """The live token ``presented`` is, or None (unknown, malformed or revoked). A text that cannot be a
        token costs no store read."""
        if not _SHAPE.fullmatch(presented):
            return None
        digest = token_digest(presented)
        with self.store.reading() as tx:
            found = rows.token_by_hash(tx, digest)
        if found is None:
            return None
        token, stored = found
        if not hmac.compare_digest(stored, digest) or token.revoked:
            return None
        return token


__all__ = ["IssuedToken", "TokenService", "new_token_text", "token_digest"]
