"""The native management API's request and response bodies, as msgspec Structs.

Requests refuse unknown fields and wrong types (msgspec's strict conversion); every time is RFC 3339 in
UTC; UIDs are strings of digits (the same UIDs the Bitget dialect shows); ids are strings. The route table
(``keyplane.native.routes``) names the Struct each route takes and answers, for the OpenAPI document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from keyplane.domain.model import Account, ApiKey, AuditEvent

Uid = Annotated[str, Meta(pattern=r"^[0-9]{1,18}$", description="an account's UID: digits, as a string")]
Dialect = Literal["bitget", "whitebit"]
Status = Literal["normal", "freeze"]
_PRINTABLE = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"  # no control character, no space at the ends
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=_PRINTABLE)]
Label = Annotated[str, Meta(max_length=20)]
IpRule = Annotated[str, Meta(min_length=1, max_length=64, description="an IPv4 or IPv6 address or CIDR range")]


def when(at_ms: int) -> datetime:
    return datetime.fromtimestamp(at_ms / 1000, UTC)


def _when_or_none(at_ms: int | None) -> datetime | None:
    return None if at_ms is None else when(at_ms)


class Request(Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body: no field it does not name."""


# main accounts ------------------------------------------------------------------------------------------


class CreateAccount(Request):
    name: Name


class AccountView(Struct, kw_only=True):
    uid: str
    id: str
    name: str
    status: Status
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, account: Account) -> AccountView:
        return cls(
            uid=str(account.uid), id=account.public_id, name=account.name, status=account.status.value,
            created_at=when(account.created_at), updated_at=when(account.updated_at),
        )


Limit = Annotated[int, Meta(ge=1, le=200, description="items per page (default 50)")]
Cursor = Annotated[str, Meta(description="the previous page's next_cursor")]


class AccountListQuery(Struct, kw_only=True):
    name_contains: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    status: Status | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class AccountPage(Struct, kw_only=True):
    data: list[AccountView]
    next_cursor: str | None


# sub-accounts -------------------------------------------------------------------------------------------


class CreateSubAccount(Request):
    main_uid: Uid
    name: Name
    label: Label = ""
    email: Annotated[str, Meta(max_length=255)] | None = None
    permissions: list[str] = []
    # the dialect whose sub-account limit applies (Bitget 20 a main account, WhiteBIT 100 by default)
    dialect: Dialect = "bitget"


class UpdateSubAccount(Request):
    name: Name | UnsetType = UNSET
    permissions: list[str] | UnsetType = UNSET


class SubAccountView(Struct, kw_only=True):
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

    @classmethod
    def of(cls, account: Account) -> SubAccountView:
        return cls(
            uid=str(account.uid), id=account.public_id, main_uid=str(account.main_uid), name=account.name,
            label=account.label, email=account.email, permissions=list(account.permissions),
            status=account.status.value, created_at=when(account.created_at), updated_at=when(account.updated_at),
        )


class SubAccountListQuery(Struct, kw_only=True):
    main_uid: Uid | None = None
    name_contains: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    status: Status | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class SubAccountPage(Struct, kw_only=True):
    data: list[SubAccountView]
    next_cursor: str | None


# keys ---------------------------------------------------------------------------------------------------


class CreateKey(Request):
    account_uid: Uid  # a main account or a sub-account
    dialect: Dialect
    label: Label = ""
    permissions: list[str] | None = None  # Bitget's names; None: the dialect's default for the account
    ip_list: Annotated[list[IpRule], Meta(max_length=100)] = []
    passphrase: str | None = None  # Bitget: 8-32 letters and digits; generated if not given
    key_type: Literal[1, 2] | None = None  # WhiteBIT: 1 (no withdrawals) or 2
    public_key_pem: Annotated[str, Meta(max_length=16384)] | None = None  # Bitget main keys: RSA instead of a secret
    expires_at: datetime | None = None  # RFC 3339 with an offset, in the future: after it the key verifies nothing


class UpdateKey(Request):
    label: Label | UnsetType = UNSET
    permissions: list[str] | UnsetType = UNSET
    ip_list: Annotated[list[IpRule], Meta(max_length=100)] | UnsetType = UNSET
    expires_at: datetime | UnsetType | None = UNSET  # null clears it


class RotateKey(Request):
    # how long the replaced secret keeps verifying beside the new one: 0 (it stops now) to 7 days
    grace_seconds: Annotated[int, Meta(ge=0, le=604_800)]
    passphrase: str | None = None  # Bitget: a new passphrase for the new secret; otherwise it keeps its own


class KeyView(Struct, kw_only=True):
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
    expires_at: datetime | None  # after it the key verifies nothing
    # a rotation's grace period: until then the secret it replaced still verifies too
    previous_secret_until: datetime | None
    # the last verification (recorded in batches: up to a few seconds behind)
    last_used_at: datetime | None
    last_used_ip: str | None

    @classmethod
    def of(cls, key: ApiKey, main_uid: int) -> KeyView:
        return cls(
            id=key.id, api_key=key.api_key, account_uid=str(key.account_uid), main_uid=str(main_uid),
            dialect=key.scheme.value, sign_type=key.sign_type.value, label=key.label,
            permissions=list(key.permissions), key_type=key.key_type, ip_list=list(key.ip_list),
            enabled=key.enabled, created_at=when(key.created_at), updated_at=when(key.updated_at),
            expires_at=_when_or_none(key.expires_at), previous_secret_until=_when_or_none(key.previous_until),
            last_used_at=_when_or_none(key.last_used_at), last_used_ip=key.last_used_ip,
        )


class KeyCreated(Struct, kw_only=True):
    """A new key, with its secret: shown in this answer only. An ``Idempotency-Key`` replay of the create
    answers the same object with ``secret`` and ``passphrase`` null and ``secret_shown`` false."""

    key: KeyView
    secret: str | None
    passphrase: str | None
    secret_shown: bool

    def without_secret(self) -> KeyCreated:
        return msgspec.structs.replace(self, secret=None, passphrase=None, secret_shown=False)


class KeyListQuery(Struct, kw_only=True):
    account_uid: Uid | None = None
    main_uid: Uid | None = None
    dialect: Dialect | None = None
    enabled: bool | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class KeyRotated(Struct, kw_only=True):
    """A key's new secret: shown in this answer only (an ``Idempotency-Key`` replay answers ``secret`` null and
    ``secret_shown`` false). ``previous_secret_until``: until when the replaced secret still verifies."""

    key: KeyView
    secret: str | None
    passphrase: str | None
    previous_secret_until: datetime | None
    secret_shown: bool

    def without_secret(self) -> KeyRotated:
        return msgspec.structs.replace(self, secret=None, passphrase=None, secret_shown=False)


class KeyPage(Struct, kw_only=True):
    data: list[KeyView]
    next_cursor: str | None


# audit --------------------------------------------------------------------------------------------------


class AuditEventView(Struct, kw_only=True):
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

    @classmethod
    def of(cls, event: AuditEvent) -> AuditEventView:
        return cls(
            id=str(event.id), at=when(event.at), action=event.action, target=event.target,
            account_uid=None if event.account_uid is None else str(event.account_uid),
            actor_uid=None if event.actor_uid is None else str(event.actor_uid), actor_key=event.actor_key,
            actor_token=event.actor_token, ip=event.ip, detail=dict(event.detail),
        )


Actions = Annotated[str, Meta(min_length=1, max_length=640, description="one action, or several comma-separated")]


class AuditListQuery(Struct, kw_only=True):
    account_uid: Uid | None = None
    api_key: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    action: Actions | None = None
    actor_token: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    since: Annotated[datetime, Meta(description="inclusive, RFC 3339 with an offset")] | None = None
    until: Annotated[datetime, Meta(description="exclusive, RFC 3339 with an offset")] | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


class AuditPage(Struct, kw_only=True):
    data: list[AuditEventView]
    next_cursor: str | None


class Deleted(Struct, kw_only=True):
    id: str
    deleted: bool = True
