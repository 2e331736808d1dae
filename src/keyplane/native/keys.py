"""Keys of either dialect, of main accounts and sub-accounts, over the native management API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from msgspec import UnsetType

from keyplane import crypto
from keyplane.dialects.common import run_service
from keyplane.domain.lifecycle import check_expiry
from keyplane.domain.model import ApiKey, Scheme
from keyplane.domain.rules import normalize_bitget_permissions
from keyplane.domain.scopes import COLLATERAL, SPOT
from keyplane.errors import AccountNotFound, ApiKeyNotFound, InvalidInput, InvalidPermission
from keyplane.native.accounts import operator
from keyplane.native.api import Call
from keyplane.native.errors import ApiError
from keyplane.native.paging import bool_param, choice_param, decode_cursor, encode_cursor, limit_of, uid_param
from keyplane.native.schemas import (
    CreateKey,
    Deleted,
    KeyCreated,
    KeyPage,
    KeyRotated,
    KeyView,
    RotateKey,
    UpdateKey,
    when,
)
from keyplane.services import KeyplaneService
from keyplane.services.lifecycle import RotatedKey
from keyplane.services.types import Actor, IssuedKey, NewKeySpec

DIALECTS = ("bitget", "whitebit")


def permissions_for(scheme: Scheme, given: list[str] | None) -> tuple[str, ...]:
    """Bitget's permission names; for WhiteBIT the trading scopes its accounts carry (as ``keyplane keys create``
    takes them). Nothing given: ``read`` for a Bitget key (the least a key can do), none for WhiteBIT."""
    if given is None:
        return ("read",) if scheme is Scheme.BITGET else ()
    if scheme is Scheme.BITGET:
        return normalize_bitget_permissions(given)
    unknown = [p for p in given if p not in SPOT + COLLATERAL]
    if unknown:
        raise InvalidPermission(
            f"unknown WhiteBIT permission {unknown[0]!r}: use {', '.join(SPOT + COLLATERAL)}", field="permissions"
        )
    return tuple(dict.fromkeys(given))


def _expiry(moment: datetime | None) -> int | None:
    """An ``expires_at`` as Unix ms: in the future, at most ten years ahead (``domain.lifecycle``)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise InvalidInput("expires_at needs its offset (2026-12-31T00:00:00Z)", field="expires_at")
    try:
        return check_expiry(int(moment.timestamp() * 1000))
    except InvalidInput as error:
        raise InvalidInput(error.message, field="expires_at") from None


def _key(svc: KeyplaneService, key_id: str) -> tuple[ApiKey, int]:
    """The key and its main account's UID, or ``ApiKeyNotFound``. Runs in a service thread."""
    found: tuple[ApiKey, int] | None = svc.keys.key_with_main(key_id)
    if found is None:
        raise ApiKeyNotFound(f"no key {key_id}")
    return found


async def create_key(svc: KeyplaneService, call: Call) -> KeyCreated:
    body: CreateKey = call.body
    scheme = Scheme(body.dialect)
    permissions = permissions_for(scheme, body.permissions)
    if body.key_type is not None and scheme is not Scheme.WHITEBIT:
        raise InvalidInput("key_type is for WhiteBIT keys only", field="key_type")
    expires_at = _expiry(body.expires_at)

    def create() -> tuple[IssuedKey, int]:
        account = svc.accounts.account_of(int(body.account_uid))
        if account is None:
            raise AccountNotFound(f"no account {body.account_uid}", field="account_uid")
        if account.is_main:
            issued: IssuedKey = svc.keys.issue_main_key(
                account.uid, scheme, label=body.label, permissions=permissions, ip_list=body.ip_list,
                passphrase=body.passphrase, public_key_pem=body.public_key_pem, key_type=body.key_type,
                expires_at=expires_at, by=operator(call),
            )
            return issued, account.uid
        if body.public_key_pem is not None:
            raise InvalidInput("a sub-account's key is an HMAC key: leave out public_key_pem", field="public_key_pem")
        main = svc.accounts.main_account(account.main_uid)
        passphrase = body.passphrase
        if scheme is Scheme.BITGET and passphrase is None:
            passphrase = crypto.new_passphrase()
        spec = NewKeySpec(
            label=body.label, passphrase=passphrase, permissions=permissions, ip_list=tuple(body.ip_list),
            key_type=(body.key_type or 1) if scheme is Scheme.WHITEBIT else None,
        )
        actor = Actor(account=main, ip=call.ip, token=call.token.id)
        issued = svc.keys.create_sub_key(actor, scheme, spec, uid=account.uid)
        if expires_at is not None:
            # a sub-account key's expiry is set right after it is made (the sub-account use-case takes none)
            key = svc.lifecycle.set_expiry(key_id=issued.key.id, expires_at=expires_at, by=operator(call))
            issued = IssuedKey(key=key, secret=issued.secret, passphrase=issued.passphrase)
        return issued, main.uid

    issued, main_uid = await run_service(create)
    return KeyCreated(
        key=KeyView.of(issued.key, main_uid), secret=issued.secret, passphrase=issued.passphrase, secret_shown=True
    )


async def list_keys(svc: KeyplaneService, call: Call) -> KeyPage:
    query = call.query
    limit = limit_of(query)
    dialect = choice_param(query, "dialect", DIALECTS)
    after: tuple[int, str] | None = None
    if "cursor" in query:
        created, key_id = decode_cursor(query["cursor"], "keys", (int, str))
        after = (int(created), str(key_id))
    found: list[tuple[ApiKey, int]] = await run_service(
        svc.keys.page_keys, account_uid=uid_param(query, "account_uid"), main_uid=uid_param(query, "main_uid"),
        scheme=Scheme(dialect) if dialect else None, enabled=bool_param(query, "enabled"), after=after,
        limit=limit + 1,
    )
    next_cursor = None
    if len(found) > limit:
        last = found[limit - 1][0]
        next_cursor = encode_cursor("keys", [last.created_at, last.id])
    return KeyPage(data=[KeyView.of(key, main) for key, main in found[:limit]], next_cursor=next_cursor)


async def get_key(svc: KeyplaneService, call: Call) -> KeyView:
    key, main_uid = await run_service(_key, svc, call.params["id"])
    return KeyView.of(key, main_uid)


async def update_key(svc: KeyplaneService, call: Call) -> KeyView:
    body: UpdateKey = call.body
    if all(isinstance(value, UnsetType) for value in (body.label, body.permissions, body.ip_list, body.expires_at)):
        raise ApiError(400, "invalid_request", "give label, permissions, ip_list, expires_at or several")
    expires_at = None if isinstance(body.expires_at, UnsetType) else _expiry(body.expires_at)

    def update() -> tuple[ApiKey, int]:
        key, main_uid = _key(svc, call.params["id"])
        changes: dict[str, Any] = {}
        if not isinstance(body.label, UnsetType):
            changes["label"] = body.label
        if not isinstance(body.permissions, UnsetType):
            changes["permissions"] = permissions_for(key.scheme, body.permissions)
        if not isinstance(body.ip_list, UnsetType):
            changes["ip_list"] = body.ip_list
        if changes:
            key = svc.keys.modify_key(key.id, by=operator(call), **changes)
        if not isinstance(body.expires_at, UnsetType):
            key = svc.lifecycle.set_expiry(key_id=key.id, expires_at=expires_at, by=operator(call))
        return key, main_uid

    key, main_uid = await run_service(update)
    return KeyView.of(key, main_uid)


async def rotate_key(svc: KeyplaneService, call: Call) -> KeyRotated:
    body: RotateKey = call.body

    def rotate() -> tuple[RotatedKey, int]:
        key, main_uid = _key(svc, call.params["id"])
        rotated = svc.lifecycle.rotate(
            key_id=key.id, grace_s=body.grace_seconds, passphrase=body.passphrase, by=operator(call)
        )
        return rotated, main_uid

    rotated, main_uid = await run_service(rotate)
    return KeyRotated(
        key=KeyView.of(rotated.key, main_uid), secret=rotated.secret, passphrase=rotated.passphrase,
        previous_secret_until=None if rotated.previous_until is None else when(rotated.previous_until),
        secret_shown=True,
    )


async def _set_enabled(svc: KeyplaneService, call: Call, enabled: bool) -> KeyView:
    def change() -> tuple[ApiKey, int]:
        key, main_uid = _key(svc, call.params["id"])
        return svc.keys.set_key_enabled(key.api_key, enabled, by=operator(call)), main_uid

    key, main_uid = await run_service(change)
    return KeyView.of(key, main_uid)


async def disable_key(svc: KeyplaneService, call: Call) -> KeyView:
    return await _set_enabled(svc, call, False)


async def enable_key(svc: KeyplaneService, call: Call) -> KeyView:
    return await _set_enabled(svc, call, True)


async def delete_key(svc: KeyplaneService, call: Call) -> Deleted:
    def delete() -> ApiKey:
        key, _main = _key(svc, call.params["id"])
        return svc.keys.revoke_key(key.api_key, by=operator(call))

    return Deleted(id=(await run_service(delete)).id)
