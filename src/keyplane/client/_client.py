"""``Client`` and ``AsyncClient``: keyplane's native management API (``/v1/``) over httpx, with an operator
token (``keyplane tokens create``). Resources hang off the client as in httpx-era SDKs::

    with Client("http://127.0.0.1:8080", token="kpt_...") as keyplane:
        account = keyplane.accounts.create("acme")
        for key in keyplane.keys.list(account_uid=account.uid):
            ...

Lists are iterators that fetch page after page (``page_size`` items a request) as they are consumed;
every refusal raises an ``ApiError`` subclass carrying the API's machine code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx
import msgspec

from keyplane.client import _calls as calls
from keyplane.client._calls import Call
from keyplane.client._errors import ApiError, error_from
from keyplane.client._models import (
    Account,
    AuditEvent,
    CreatedKey,
    Dialect,
    Key,
    Page,
    RotatedKey,
    Status,
    SubAccount,
)

T = TypeVar("T")
_USER_AGENT = "keyplane-python"
_OK = (200, 201)


class _OperatorToken(httpx.Auth):
    """``Authorization: Bearer <token>``; its repr never shows the token."""

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("token must not be empty")
        self._header = "Bearer " + token

    def __repr__(self) -> str:
        return "_OperatorToken(***)"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def _build(call: Call[Any]) -> dict[str, Any]:
    headers = {"Idempotency-Key": call.idempotency_key} if call.idempotency_key else {}
    return {"method": call.method, "url": call.path, "params": dict(call.params), "json": call.body,
            "headers": headers}


def _answer(call: Call[T], response: httpx.Response) -> T:
    if response.status_code not in _OK:
        raise error_from(response)
    try:
        return msgspec.json.decode(response.content, type=call.answer)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise ApiError(response.status_code, "unexpected_response", f"the answer does not fit: {error}", None,
                       response) from None


def _http_options(base_url: str, token: str, timeout: float) -> dict[str, Any]:
    return {"base_url": base_url, "auth": _OperatorToken(token), "timeout": timeout,
            "headers": {"User-Agent": _USER_AGENT}, "follow_redirects": False}


# sync ---------------------------------------------------------------------------------------------------------


class Client:
    """The native management API, synchronously. ``transport`` is httpx's (a proxy, retries, a test app)."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(transport=transport, **_http_options(base_url, token, timeout))
        self.accounts = Accounts(self)
        self.sub_accounts = SubAccounts(self)
        self.keys = Keys(self)
        self.audit = Audit(self)

    def __repr__(self) -> str:
        return f"Client(base_url={str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _send(self, call: Call[T]) -> T:
        return _answer(call, self._http.request(**_build(call)))

    def _iterate(self, call: Call[Page[T]]) -> Iterator[T]:
        page = self._send(call)
        yield from page.data
        while page.next_cursor is not None:
            page = self._send(call.at(page.next_cursor))
            yield from page.data


class Accounts:
    """Main accounts."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, *, idempotency_key: str | None = None) -> Account:
        return self._client._send(calls.create_account(name, idempotency_key))

    def list(self, *, name_contains: str | None = None, status: Status | None = None,
             page_size: int | None = None) -> Iterator[Account]:
        return self._client._iterate(calls.list_accounts(name_contains, status, page_size))

    def get(self, uid: str | int) -> Account:
        return self._client._send(calls.get_account(uid))

    def freeze(self, uid: str | int) -> Account:
        return self._client._send(calls.set_account_state(uid, "freeze"))

    def unfreeze(self, uid: str | int) -> Account:
        return self._client._send(calls.set_account_state(uid, "unfreeze"))

    def delete(self, uid: str | int) -> None:
        self._client._send(calls.delete_account(uid))


class SubAccounts:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, main_uid: str | int, name: str, *, label: str | None = None, email: str | None = None,
               permissions: Iterable[str] | None = None, dialect: Dialect | None = None,
               idempotency_key: str | None = None) -> SubAccount:
        return self._client._send(
            calls.create_sub_account(main_uid, name, label, email, permissions, dialect, idempotency_key))

    def list(self, *, main_uid: str | int | None = None, name_contains: str | None = None,
             status: Status | None = None, page_size: int | None = None) -> Iterator[SubAccount]:
        return self._client._iterate(calls.list_sub_accounts(main_uid, name_contains, status, page_size))

    def get(self, uid: str | int) -> SubAccount:
        return self._client._send(calls.get_sub_account(uid))

    def update(self, uid: str | int, *, name: str | None = None,
               permissions: Iterable[str] | None = None) -> SubAccount:
        return self._client._send(calls.update_sub_account(uid, name, permissions))

    def freeze(self, uid: str | int) -> SubAccount:
        return self._client._send(calls.set_sub_account_state(uid, "freeze"))

    def unfreeze(self, uid: str | int) -> SubAccount:
        return self._client._send(calls.set_sub_account_state(uid, "unfreeze"))

    def delete(self, uid: str | int) -> None:
        self._client._send(calls.delete_sub_account(uid))


class Keys:
    """API keys of main accounts and sub-accounts, in either dialect."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, account_uid: str | int, dialect: Dialect, *, label: str | None = None,
               permissions: Iterable[str] | None = None, ip_list: Iterable[str] | None = None,
               passphrase: str | None = None, key_type: int | None = None, public_key_pem: str | None = None,
               expires_at: datetime | None = None, idempotency_key: str | None = None) -> CreatedKey:
        return self._client._send(calls.create_key(account_uid, dialect, label, permissions, ip_list, passphrase,
                                                   key_type, public_key_pem, expires_at, idempotency_key))

    def list(self, *, account_uid: str | int | None = None, main_uid: str | int | None = None,
             dialect: Dialect | None = None, enabled: bool | None = None,
             page_size: int | None = None) -> Iterator[Key]:
        return self._client._iterate(calls.list_keys(account_uid, main_uid, dialect, enabled, page_size))

    def get(self, key_id: str) -> Key:
        return self._client._send(calls.get_key(key_id))

    def update(self, key_id: str, *, label: str | None = None, permissions: Iterable[str] | None = None,
               ip_list: Iterable[str] | None = None) -> Key:
        return self._client._send(calls.update_key(key_id, label, permissions, ip_list))

    def set_expiry(self, key_id: str, expires_at: datetime | None) -> Key:
        """After ``expires_at`` (an aware datetime) the key verifies nothing; None clears the expiry."""
        return self._client._send(calls.set_key_expiry(key_id, expires_at))

    def rotate(self, key_id: str, *, grace_seconds: int, passphrase: str | None = None,
               idempotency_key: str | None = None) -> RotatedKey:
        """A new secret; the replaced one keeps verifying for ``grace_seconds`` (0 to 7 days). A Bitget key keeps
        its passphrase unless given a new one."""
        return self._client._send(calls.rotate_key(key_id, grace_seconds, passphrase, idempotency_key))

    def disable(self, key_id: str) -> Key:
        return self._client._send(calls.set_key_state(key_id, "disable"))

    def enable(self, key_id: str) -> Key:
        return self._client._send(calls.set_key_state(key_id, "enable"))

    def delete(self, key_id: str) -> None:
        self._client._send(calls.delete_key(key_id))


class Audit:
    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, account_uid: str | int | None = None, api_key: str | None = None, action: str | None = None,
             actor_token: str | None = None, since: datetime | None = None, until: datetime | None = None,
             page_size: int | None = None) -> Iterator[AuditEvent]:
        """Audit events, newest first."""
        return self._client._iterate(
            calls.list_audit_events(account_uid, api_key, action, actor_token, since, until, page_size))


# async --------------------------------------------------------------------------------------------------------


class AsyncClient:
    """The native management API on asyncio; the same resources as ``Client``, their calls awaited and their
    lists iterated with ``async for``."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(transport=transport, **_http_options(base_url, token, timeout))
        self.accounts = AsyncAccounts(self)
        self.sub_accounts = AsyncSubAccounts(self)
        self.keys = AsyncKeys(self)
        self.audit = AsyncAudit(self)

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={str(self._http.base_url)!r})"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def _send(self, call: Call[T]) -> T:
        return _answer(call, await self._http.request(**_build(call)))

    async def _iterate(self, call: Call[Page[T]]) -> AsyncIterator[T]:
        page = await self._send(call)
        for item in page.data:
            yield item
        while page.next_cursor is not None:
            page = await self._send(call.at(page.next_cursor))
            for item in page.data:
                yield item


class AsyncAccounts:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, name: str, *, idempotency_key: str | None = None) -> Account:
        return await self._client._send(calls.create_account(name, idempotency_key))

    def list(self, *, name_contains: str | None = None, status: Status | None = None,
             page_size: int | None = None) -> AsyncIterator[Account]:
        return self._client._iterate(calls.list_accounts(name_contains, status, page_size))

    async def get(self, uid: str | int) -> Account:
        return await self._client._send(calls.get_account(uid))

    async def freeze(self, uid: str | int) -> Account:
        return await self._client._send(calls.set_account_state(uid, "freeze"))

    async def unfreeze(self, uid: str | int) -> Account:
        return await self._client._send(calls.set_account_state(uid, "unfreeze"))

    async def delete(self, uid: str | int) -> None:
        await self._client._send(calls.delete_account(uid))


class AsyncSubAccounts:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, main_uid: str | int, name: str, *, label: str | None = None, email: str | None = None,
                     permissions: Iterable[str] | None = None, dialect: Dialect | None = None,
                     idempotency_key: str | None = None) -> SubAccount:
        return await self._client._send(
            calls.create_sub_account(main_uid, name, label, email, permissions, dialect, idempotency_key))

    def list(self, *, main_uid: str | int | None = None, name_contains: str | None = None,
             status: Status | None = None, page_size: int | None = None) -> AsyncIterator[SubAccount]:
        return self._client._iterate(calls.list_sub_accounts(main_uid, name_contains, status, page_size))

    async def get(self, uid: str | int) -> SubAccount:
        return await self._client._send(calls.get_sub_account(uid))

    async def update(self, uid: str | int, *, name: str | None = None,
                     permissions: Iterable[str] | None = None) -> SubAccount:
        return await self._client._send(calls.update_sub_account(uid, name, permissions))

    async def freeze(self, uid: str | int) -> SubAccount:
        return await self._client._send(calls.set_sub_account_state(uid, "freeze"))

    async def unfreeze(self, uid: str | int) -> SubAccount:
        return await self._client._send(calls.set_sub_account_state(uid, "unfreeze"))

    async def delete(self, uid: str | int) -> None:
        await self._client._send(calls.delete_sub_account(uid))


class AsyncKeys:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, account_uid: str | int, dialect: Dialect, *, label: str | None = None,
                     permissions: Iterable[str] | None = None, ip_list: Iterable[str] | None = None,
                     passphrase: str | None = None, key_type: int | None = None, public_key_pem: str | None = None,
                     expires_at: datetime | None = None, idempotency_key: str | None = None) -> CreatedKey:
        return await self._client._send(calls.create_key(account_uid, dialect, label, permissions, ip_list,
                                                         passphrase, key_type, public_key_pem, expires_at,
                                                         idempotency_key))

    def list(self, *, account_uid: str | int | None = None, main_uid: str | int | None = None,
             dialect: Dialect | None = None, enabled: bool | None = None,
             page_size: int | None = None) -> AsyncIterator[Key]:
        return self._client._iterate(calls.list_keys(account_uid, main_uid, dialect, enabled, page_size))

    async def get(self, key_id: str) -> Key:
        return await self._client._send(calls.get_key(key_id))

    async def update(self, key_id: str, *, label: str | None = None, permissions: Iterable[str] | None = None,
                     ip_list: Iterable[str] | None = None) -> Key:
        return await self._client._send(calls.update_key(key_id, label, permissions, ip_list))

    async def set_expiry(self, key_id: str, expires_at: datetime | None) -> Key:
        return await self._client._send(calls.set_key_expiry(key_id, expires_at))

    async def rotate(self, key_id: str, *, grace_seconds: int, passphrase: str | None = None,
                     idempotency_key: str | None = None) -> RotatedKey:
        return await self._client._send(calls.rotate_key(key_id, grace_seconds, passphrase, idempotency_key))

    async def disable(self, key_id: str) -> Key:
        return await self._client._send(calls.set_key_state(key_id, "disable"))

    async def enable(self, key_id: str) -> Key:
        return await self._client._send(calls.set_key_state(key_id, "enable"))

    async def delete(self, key_id: str) -> None:
        await self._client._send(calls.delete_key(key_id))


class AsyncAudit:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def list(self, *, account_uid: str | int | None = None, api_key: str | None = None, action: str | None = None,
             actor_token: str | None = None, since: datetime | None = None, until: datetime | None = None,
             page_size: int | None = None) -> AsyncIterator[AuditEvent]:
        return self._client._iterate(
            calls.list_audit_events(account_uid, api_key, action, actor_token, since, until, page_size))
