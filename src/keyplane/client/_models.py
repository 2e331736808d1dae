"""What the native management API answers, as typed, read-only objects (msgspec Structs).

Fields the server adds later are ignored by older clients; every time is an aware ``datetime`` in UTC;
UIDs are strings of digits, as the API sends them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

import msgspec

Dialect = Literal["bitget", "whitebit"]
Status = Literal["normal", "freeze"]


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """A main account."""

    uid: str
    id: str
    name: str
    status: Status
    created_at: datetime
    updated_at: datetime


class SubAccount(msgspec.Struct, frozen=True, kw_only=True):
    uid: str
    id: str
    main_uid: str
    name: str
    label: str
    email: str | None
    permissions: list[str]
    status: Status
    created_at: datetime
    updated_at: datetime


class Key(msgspec.Struct, frozen=True, kw_only=True):
    """An API key as lists show it: never its secret."""

    id: str
    api_key: str
    account_uid: str
    main_uid: str
    dialect: Dialect
    sign_type: Literal["hmac", "rsa"]
    label: str
    permissions: list[str]
    key_type: int | None
    ip_list: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None  # after it the key verifies nothing
    previous_secret_until: datetime | None = None  # a rotation's grace: the replaced secret verifies until then
    last_used_at: datetime | None = None  # the last verification (recorded in batches: seconds behind)
    last_used_ip: str | None = None


class CreatedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A new key and its secret (and Bitget passphrase), shown in the create's answer only.

    A create repeated with its ``idempotency_key`` answers the same key with ``secret`` and ``passphrase``
    None and ``secret_shown`` False: the secret is never shown twice. Its repr leaves both out.
    """

    key: Key
    secret: str | None
    passphrase: str | None
    secret_shown: bool

    def __repr__(self) -> str:
        return f"CreatedKey(key={self.key!r}, secret_shown={self.secret_shown!r})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("key", self.key), ("secret_shown", self.secret_shown)]


class RotatedKey(msgspec.Struct, frozen=True, kw_only=True):
    """A key's new secret (and Bitget passphrase), shown in the rotation's answer only; the replaced secret
    keeps verifying until ``previous_secret_until`` (None: it stopped at once). A rotation repeated with its
    ``idempotency_key`` answers ``secret`` None and ``secret_shown`` False. Its repr leaves both out."""

    key: Key
    secret: str | None
    passphrase: str | None
    previous_secret_until: datetime | None
    secret_shown: bool = True

    def __repr__(self) -> str:
        return (f"RotatedKey(key={self.key!r}, previous_secret_until={self.previous_secret_until!r}, "
                f"secret_shown={self.secret_shown!r})")

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return [("key", self.key), ("previous_secret_until", self.previous_secret_until),
                ("secret_shown", self.secret_shown)]


class AuditEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    at: datetime
    action: str
    target: str
    account_uid: str | None
    actor_uid: str | None
    actor_key: str | None
    actor_token: str | None
    ip: str | None
    detail: dict[str, Any]


class Deleted(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    deleted: bool = True


T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list; ``next_cursor`` is None on the last."""

    data: list[T]
    next_cursor: str | None
