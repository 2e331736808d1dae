"""Main accounts and sub-accounts over the native management API."""

from __future__ import annotations

from typing import Any

from msgspec import UnsetType

from keyplane.dialects.common import run_service
from keyplane.dialects.whitebit import EMAIL
from keyplane.domain.model import Account, AccountStatus, Scheme
from keyplane.domain.rules import normalize_bitget_permissions
from keyplane.errors import AccountNotFound, InvalidInput
from keyplane.native.api import Call
from keyplane.native.errors import ApiError
from keyplane.native.paging import (
    choice_param,
    decode_cursor,
    encode_cursor,
    limit_of,
    parse_uid,
    text_param,
    uid_param,
)
from keyplane.native.schemas import (
    AccountPage,
    AccountView,
    CreateAccount,
    CreateSubAccount,
    Deleted,
    SubAccountPage,
    SubAccountView,
    UpdateSubAccount,
)
from keyplane.services import KeyplaneService
from keyplane.services.types import Actor, Operator

STATUSES = ("normal", "freeze")


def operator(call: Call) -> Operator:
    return Operator(token=call.token.id, ip=call.ip)


def uid_of(call: Call, what: str = "account") -> int:
    text = call.params["uid"]
    uid = parse_uid(text)
    if uid is None:
        raise AccountNotFound(f"no {what} {text[:32]}")
    return uid


def _after(call: Call, kind: str) -> int | None:
    cursor = call.query.get("cursor")
    return None if cursor is None else int(decode_cursor(cursor, kind, (int,))[0])


def _next(kind: str, found: list[Account], limit: int) -> str | None:
    return encode_cursor(kind, [found[limit - 1].uid]) if len(found) > limit else None


# main accounts ------------------------------------------------------------------------------------------


async def create_account(svc: KeyplaneService, call: Call) -> AccountView:
    body: CreateAccount = call.body
    account = await run_service(svc.accounts.create_main_account, body.name, by=operator(call))
    return AccountView.of(account)


async def list_accounts(svc: KeyplaneService, call: Call) -> AccountPage:
    limit = limit_of(call.query)
    found: list[Account] = await run_service(
        svc.accounts.page_main_accounts, name_contains=text_param(call.query, "name_contains"),
        status=choice_param(call.query, "status", STATUSES), after_uid=_after(call, "accounts"), limit=limit + 1,
    )
    return AccountPage(data=[AccountView.of(a) for a in found[:limit]], next_cursor=_next("accounts", found, limit))


async def get_account(svc: KeyplaneService, call: Call) -> AccountView:
    return AccountView.of(await run_service(svc.accounts.main_account, uid_of(call, "main account")))


async def _set_account_status(svc: KeyplaneService, call: Call, status: AccountStatus) -> AccountView:
    uid = uid_of(call, "main account")
    return AccountView.of(await run_service(svc.accounts.set_main_account_status, uid, status, by=operator(call)))


async def freeze_account(svc: KeyplaneService, call: Call) -> AccountView:
    return await _set_account_status(svc, call, AccountStatus.FREEZE)


async def unfreeze_account(svc: KeyplaneService, call: Call) -> AccountView:
    return await _set_account_status(svc, call, AccountStatus.NORMAL)


async def delete_account(svc: KeyplaneService, call: Call) -> Deleted:
    deleted = await run_service(svc.accounts.delete_main_account, uid_of(call, "main account"), by=operator(call))
    return Deleted(id=str(deleted.uid))


# sub-accounts -------------------------------------------------------------------------------------------


def permissions_of(given: list[str]) -> tuple[str, ...]:
    return normalize_bitget_permissions(given)


def sub_actor(svc: KeyplaneService, call: Call, uid: int) -> tuple[Actor, Account]:
    """The operator acting on sub-account ``uid``'s main account (the services' ``Actor``), and the sub-account.
    Runs in a service thread."""
    sub = svc.accounts.account_of(uid)
    if sub is None or sub.is_main:
        raise AccountNotFound(f"no sub-account {uid}")
    main = svc.accounts.main_account(sub.main_uid)
    return Actor(account=main, ip=call.ip, token=call.token.id), sub


async def create_sub_account(svc: KeyplaneService, call: Call) -> SubAccountView:
    body: CreateSubAccount = call.body
    if body.email is not None and not EMAIL.fullmatch(body.email):
        raise InvalidInput("email is not an address", field="email")
    permissions = permissions_of(body.permissions)

    def create() -> Account:
        try:
            main = svc.accounts.main_account(int(body.main_uid))
        except AccountNotFound:
            raise AccountNotFound(f"no main account {body.main_uid}", field="main_uid") from None
        actor = Actor(account=main, ip=call.ip, token=call.token.id)
        return svc.subaccounts.create_sub_account(
            actor, Scheme(body.dialect), name=body.name, email=body.email, permissions=permissions,
            label=body.label,
        )

    return SubAccountView.of(await run_service(create))


async def list_sub_accounts(svc: KeyplaneService, call: Call) -> SubAccountPage:
    limit = limit_of(call.query)
    found: list[Account] = await run_service(
        svc.subaccounts.page_sub_accounts, main_uid=uid_param(call.query, "main_uid"),
        name_contains=text_param(call.query, "name_contains"), status=choice_param(call.query, "status", STATUSES),
        after_uid=_after(call, "sub-accounts"), limit=limit + 1,
    )
    return SubAccountPage(
        data=[SubAccountView.of(a) for a in found[:limit]], next_cursor=_next("sub-accounts", found, limit)
    )


async def get_sub_account(svc: KeyplaneService, call: Call) -> SubAccountView:
    uid = uid_of(call, "sub-account")
    _actor, sub = await run_service(sub_actor, svc, call, uid)
    return SubAccountView.of(sub)


async def update_sub_account(svc: KeyplaneService, call: Call) -> SubAccountView:
    body: UpdateSubAccount = call.body
    uid = uid_of(call, "sub-account")
    changes: dict[str, Any] = {}
    if not isinstance(body.name, UnsetType):
        changes["name"] = body.name
    if not isinstance(body.permissions, UnsetType):
        changes["permissions"] = permissions_of(body.permissions)
    if not changes:
        raise ApiError(400, "invalid_request", "give name, permissions or both")

    def update() -> Account:
        actor, _sub = sub_actor(svc, call, uid)
        return svc.subaccounts.modify_sub_account(actor, uid=uid, **changes)

    return SubAccountView.of(await run_service(update))


async def _set_sub_status(svc: KeyplaneService, call: Call, status: AccountStatus) -> SubAccountView:
    uid = uid_of(call, "sub-account")

    def change() -> Account:
        actor, _sub = sub_actor(svc, call, uid)
        return svc.subaccounts.set_sub_account_status(actor, status, uid=uid)

    return SubAccountView.of(await run_service(change))


async def freeze_sub_account(svc: KeyplaneService, call: Call) -> SubAccountView:
    return await _set_sub_status(svc, call, AccountStatus.FREEZE)


async def unfreeze_sub_account(svc: KeyplaneService, call: Call) -> SubAccountView:
    return await _set_sub_status(svc, call, AccountStatus.NORMAL)


async def delete_sub_account(svc: KeyplaneService, call: Call) -> Deleted:
    uid = uid_of(call, "sub-account")

    def delete() -> None:
        actor, _sub = sub_actor(svc, call, uid)
        svc.subaccounts.delete_sub_account(actor, uid=uid)

    await run_service(delete)
    return Deleted(id=str(uid))
