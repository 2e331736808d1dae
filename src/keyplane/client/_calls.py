"""Each operation of the native management API as a plain description (method, path, query, body, answer
type), shared by ``Client`` and ``AsyncClient``: the two differ only in how they send one."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from keyplane.client._models import Account, AuditEvent, CreatedKey, Deleted, Key, Page, RotatedKey, SubAccount

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    method: str
    path: str
    answer: type[T]
    params: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None

    def at(self, cursor: str) -> Call[T]:
        return replace(self, params={**self.params, "cursor": cursor})


def _segment(value: str | int) -> str:
    # one path segment whatever the value holds ('/', '..', '?'): the server refuses what it does not know.
    # quote leaves dots alone and httpx resolves a "." or ".." segment (DELETE /v1/keys/.. would be DELETE /v1)
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


def _time(name: str, value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be an aware datetime (with a time zone)")
    return value.isoformat()


def _query(**values: str | int | bool | datetime | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, datetime):
            out[name] = _time(name, value)
        else:
            out[name] = str(value)
    return out


def _body(**values: Any) -> dict[str, Any]:
    """The fields given (None: left out, so the server's default or the current value stands)."""
    return {name: _time(name, value) if isinstance(value, datetime) else value
            for name, value in values.items() if value is not None}


def _list(values: Iterable[str] | None) -> list[str] | None:
    if isinstance(values, str):  # a lone string is not a list of one: refuse rather than split it
        raise TypeError("pass a list of strings, not a string")
    return None if values is None else list(values)


# main accounts ------------------------------------------------------------------------------------------


def create_account(name: str, idempotency_key: str | None) -> Call[Account]:
    return Call("POST", "/v1/accounts", Account, body={"name": name}, idempotency_key=idempotency_key)


def list_accounts(name_contains: str | None, status: str | None, page_size: int | None) -> Call[Page[Account]]:
    return Call("GET", "/v1/accounts", Page[Account],
                params=_query(name_contains=name_contains, status=status, limit=page_size))


def get_account(uid: str | int) -> Call[Account]:
    return Call("GET", f"/v1/accounts/{_segment(uid)}", Account)


def set_account_state(uid: str | int, action: str) -> Call[Account]:
    return Call("POST", f"/v1/accounts/{_segment(uid)}/{action}", Account)


def delete_account(uid: str | int) -> Call[Deleted]:
    return Call("DELETE", f"/v1/accounts/{_segment(uid)}", Deleted)


# sub-accounts -------------------------------------------------------------------------------------------


def create_sub_account(
    main_uid: str | int, name: str, label: str | None, email: str | None, permissions: Iterable[str] | None,
    dialect: str | None, idempotency_key: str | None,
) -> Call[SubAccount]:
    body = _body(main_uid=str(main_uid), name=name, label=label, email=email, permissions=_list(permissions),
                 dialect=dialect)
    return Call("POST", "/v1/sub-accounts", SubAccount, body=body, idempotency_key=idempotency_key)


def list_sub_accounts(
    main_uid: str | int | None, name_contains: str | None, status: str | None, page_size: int | None
) -> Call[Page[SubAccount]]:
    params = _query(main_uid=main_uid, name_contains=name_contains, status=status, limit=page_size)
    return Call("GET", "/v1/sub-accounts", Page[SubAccount], params=params)


def get_sub_account(uid: str | int) -> Call[SubAccount]:
    return Call("GET", f"/v1/sub-accounts/{_segment(uid)}", SubAccount)


def update_sub_account(uid: str | int, name: str | None, permissions: Iterable[str] | None) -> Call[SubAccount]:
    return Call("PATCH", f"/v1/sub-accounts/{_segment(uid)}", SubAccount,
                body=_body(name=name, permissions=_list(permissions)))


def set_sub_account_state(uid: str | int, action: str) -> Call[SubAccount]:
    return Call("POST", f"/v1/sub-accounts/{_segment(uid)}/{action}", SubAccount)


def delete_sub_account(uid: str | int) -> Call[Deleted]:
    return Call("DELETE", f"/v1/sub-accounts/{_segment(uid)}", Deleted)


# keys ---------------------------------------------------------------------------------------------------


def create_key(
    account_uid: str | int, dialect: str, label: str | None, permissions: Iterable[str] | None,
    ip_list: Iterable[str] | None, passphrase: str | None, key_type: int | None, public_key_pem: str | None,
    expires_at: datetime | None, idempotency_key: str | None,
) -> Call[CreatedKey]:
    body = _body(account_uid=str(account_uid), dialect=dialect, label=label, permissions=_list(permissions),
                 ip_list=_list(ip_list), passphrase=passphrase, key_type=key_type, public_key_pem=public_key_pem,
                 expires_at=expires_at)
    return Call("POST", "/v1/keys", CreatedKey, body=body, idempotency_key=idempotency_key)


def list_keys(
    account_uid: str | int | None, main_uid: str | int | None, dialect: str | None, enabled: bool | None,
    page_size: int | None,
) -> Call[Page[Key]]:
    params = _query(account_uid=account_uid, main_uid=main_uid, dialect=dialect, enabled=enabled, limit=page_size)
    return Call("GET", "/v1/keys", Page[Key], params=params)


def get_key(key_id: str) -> Call[Key]:
    return Call("GET", f"/v1/keys/{_segment(key_id)}", Key)


def update_key(key_id: str, label: str | None, permissions: Iterable[str] | None,
               ip_list: Iterable[str] | None) -> Call[Key]:
    return Call("PATCH", f"/v1/keys/{_segment(key_id)}", Key,
                body=_body(label=label, permissions=_list(permissions), ip_list=_list(ip_list)))


def set_key_expiry(key_id: str, expires_at: datetime | None) -> Call[Key]:
    # null clears the expiry: the one field sent even when None
    value = None if expires_at is None else _time("expires_at", expires_at)
    return Call("PATCH", f"/v1/keys/{_segment(key_id)}", Key, body={"expires_at": value})


def rotate_key(key_id: str, grace_seconds: int, passphrase: str | None,
               idempotency_key: str | None) -> Call[RotatedKey]:
    return Call("POST", f"/v1/keys/{_segment(key_id)}/rotate", RotatedKey,
                body=_body(grace_seconds=grace_seconds, passphrase=passphrase), idempotency_key=idempotency_key)


def set_key_state(key_id: str, action: str) -> Call[Key]:
    return Call("POST", f"/v1/keys/{_segment(key_id)}/{action}", Key)


def delete_key(key_id: str) -> Call[Deleted]:
    return Call("DELETE", f"/v1/keys/{_segment(key_id)}", Deleted)


# audit --------------------------------------------------------------------------------------------------


def list_audit_events(
    account_uid: str | int | None, api_key: str | None, action: str | None, actor_token: str | None,
    since: datetime | None, until: datetime | None, page_size: int | None,
) -> Call[Page[AuditEvent]]:
    params = _query(account_uid=account_uid, api_key=api_key, action=action, actor_token=actor_token,
                    since=since, until=until, limit=page_size)
    return Call("GET", "/v1/audit-events", Page[AuditEvent], params=params)
