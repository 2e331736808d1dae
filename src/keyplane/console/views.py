"""The console's pages and actions, over the service layer (``keyplane.services``)."""

from __future__ import annotations

import calendar
import datetime
import time
from collections.abc import Callable
from urllib.parse import urlencode

from keyplane import crypto
from keyplane.console import chart
from keyplane.console.app import PREFIX, Console, Context
from keyplane.console.operators import READ_ACCOUNTS, READ_AUDIT, READ_KEYS, WRITE_ACCOUNTS, WRITE_KEYS
from keyplane.domain.durations import format_duration, parse_duration
from keyplane.domain.lifecycle import MAX_GRACE_S, now_ms
from keyplane.domain.model import Account, AccountStatus, ApiKey, Scheme
from keyplane.domain.rules import BITGET_PERMISSIONS, check_label, normalize_bitget_permissions
from keyplane.errors import AccountNotFound, ApiKeyNotFound, InvalidInput
from keyplane.http import Response
from keyplane.services import Actor, KeyplaneService, NewKeySpec
from keyplane.services.tokens import TokenService
from keyplane.services.types import Operator as ServiceOperator

PAGE_SIZE = 25
AUDIT_PAGE = 50
UID = r"(?P<uid>[0-9]{1,18})"
KEY = r"(?P<api_key>[A-Za-z0-9_-]{1,128})"


def install(console: Console, service: KeyplaneService, history: Callable[[], chart.Series]) -> None:
    """Adds every page and action to ``console``."""
    route = console.route
    tokens = TokenService(service.store)

    # accounts --------------------------------------------------------------------------------------

    @route("GET", "/accounts", READ_ACCOUNTS, READ_KEYS)
    def accounts(console: Console, ctx: Context) -> Response:
        search = ctx.request.arg("q")[:64]
        page = _page_number(ctx.request.arg("page"))
        found = service.accounts.list_main_accounts(name_contains=search or None, limit=PAGE_SIZE + 1,
                                           offset=(page - 1) * PAGE_SIZE)
        return console.render(ctx, "accounts.html", section="accounts", accounts=found[:PAGE_SIZE], search=search,
                              page=page, more=len(found) > PAGE_SIZE)

    @route("GET", f"/accounts/{UID}", READ_ACCOUNTS, READ_KEYS)
    def account(console: Console, ctx: Context, uid: str) -> Response:
        shown = _account(service, int(uid))
        main = shown if shown.is_main else _account(service, shown.main_uid)
        page = _page_number(ctx.request.arg("page"))
        subs: list[Account] = []
        more = False
        if shown.is_main:
            found = service.subaccounts.list_sub_accounts(
                Actor(main), limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE
            )
            subs, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
        keys = service.keys.list_account_keys(shown.uid) if ctx.operator.may(READ_KEYS) else None
        return console.render(ctx, "account.html", section="accounts", account=shown, main=main, subs=subs,
                              keys=keys, page=page, more=more, bitget_permissions=BITGET_PERMISSIONS,
                              now=now_ms(), when=_when)

    @route("POST", f"/accounts/{UID}/(?P<state>freeze|unfreeze)", WRITE_ACCOUNTS)
    def set_status(console: Console, ctx: Context, uid: str, state: str) -> Response:
        status = AccountStatus.FREEZE if state == "freeze" else AccountStatus.NORMAL
        account = _account(service, int(uid))
        if account.is_main:
            service.accounts.set_main_account_status(account.uid, status, by=_by(ctx))
        else:
            main = _account(service, account.main_uid)
            service.subaccounts.set_sub_account_status(_actor(ctx, main), status, uid=account.uid)
        done = "frozen: its keys stop verifying" if state == "freeze" else "unfrozen"
        return ctx.done(f"{PREFIX}/accounts/{account.uid}", f"{account.name} {done}.")

    @route("POST", f"/accounts/{UID}/subaccounts", WRITE_ACCOUNTS)
    def create_sub_account(console: Console, ctx: Context, uid: str) -> Response:
        main = _account(service, int(uid))
        if not main.is_main:
            raise AccountNotFound("sub-accounts belong to a main account")
        name = ctx.request.field("name")
        scheme = _scheme(ctx.request.field("dialect"))
        if not name or len(name) > 64 or not name.isprintable():
            raise InvalidInput("a sub-account's name is 1 to 64 printable characters", field="name")
        sub = service.subaccounts.create_sub_account(
            _actor(ctx, main), scheme, name=name, label=ctx.request.field("label")[:64]
        )
        return ctx.done(f"{PREFIX}/accounts/{sub.uid}", f"Sub-account {sub.name} created (UID {sub.uid}).")

    @route("GET", f"/accounts/{UID}/delete", WRITE_ACCOUNTS)
    def confirm_delete_account(console: Console, ctx: Context, uid: str) -> Response:
        account = _account(service, int(uid))
        return console.render(ctx, "confirm.html", section="accounts", title=f"Delete {account.name}?",
                              action=f"{PREFIX}/accounts/{account.uid}/delete", back=f"{PREFIX}/accounts/{uid}",
                              what=f"the {'main' if account.is_main else 'sub'}-account {account.name} "
                                   f"(UID {account.uid})",
                              consequence="Its keys stop verifying at once. This cannot be undone.")

    @route("POST", f"/accounts/{UID}/delete", WRITE_ACCOUNTS)
    def delete_account(console: Console, ctx: Context, uid: str) -> Response:
        account = _account(service, int(uid))
        if account.is_main:
            service.accounts.delete_main_account(account.uid, by=_by(ctx))
            return ctx.done(f"{PREFIX}/accounts", f"Main account {account.name} deleted.")
        service.subaccounts.delete_sub_account(_actor(ctx, _account(service, account.main_uid)), uid=account.uid)
        return ctx.done(f"{PREFIX}/accounts/{account.main_uid}", f"Sub-account {account.name} deleted.")

    # keys ------------------------------------------------------------------------------------------

    @route("POST", f"/accounts/{UID}/keys", WRITE_KEYS)
    def create_key(console: Console, ctx: Context, uid: str) -> Response:
        account = _account(service, int(uid))
        form = ctx.request
        scheme = _scheme(form.field("dialect"))
        label = check_label(form.field("label")) if form.field("label") else ""
        ips = [ip for line in form.fields("ips") for ip in line.replace(",", " ").split()]
        key_type = _key_type(form.field("key_type")) if scheme is Scheme.WHITEBIT else None
        # a WhiteBIT key's reach is its type (and its account's flags), not a permission list
        permissions = _bitget_permissions(form.fields("permission")) if scheme is Scheme.BITGET else ()
        expires_in = form.field("expires_in")
        expires_at = now_ms() + int(_duration(expires_in, "expires_in") * 1000) if expires_in else None
        if account.is_main:
            issued = service.keys.issue_main_key(account.uid, scheme, label=label, permissions=permissions, ip_list=ips,
                                                 key_type=key_type, expires_at=expires_at, by=_by(ctx))
        else:
            main = _account(service, account.main_uid)
            passphrase = crypto.new_passphrase() if scheme is Scheme.BITGET else None
            spec = NewKeySpec(label=label, passphrase=passphrase, permissions=permissions, ip_list=tuple(ips),
                              key_type=key_type, expires_at=expires_at)
            issued = service.keys.create_sub_key(_actor(ctx, main), scheme, spec, uid=account.uid)
        # the secret is in this answer only: not in a redirect, the session, a log line or the audit event
        return console.render(ctx, "secret.html", section="accounts", account=account, heading="Key created",
                              api_key=issued.key.api_key, secret=issued.secret, passphrase=issued.passphrase,
                              previous_until=None, when=_when)

    @route("GET", f"/keys/{KEY}/rotate", WRITE_KEYS)
    def rotate_form(console: Console, ctx: Context, api_key: str) -> Response:
        key = _key(service, api_key)
        return console.render(ctx, "rotate.html", section="accounts", key=key, max_grace=format_duration(MAX_GRACE_S))

    @route("POST", f"/keys/{KEY}/rotate", WRITE_KEYS)
    def rotate(console: Console, ctx: Context, api_key: str) -> Response:
        key = _key(service, api_key)
        grace = _duration(ctx.request.field("grace") or "0", "grace")
        rotated = service.lifecycle.rotate(api_key=key.api_key, grace_s=grace, by=_by(ctx))
        account = _account(service, key.account_uid)
        # like a new key's, the new secret is in this answer only
        return console.render(ctx, "secret.html", section="accounts", account=account, heading="Key rotated",
                              api_key=rotated.key.api_key, secret=rotated.secret, passphrase=rotated.passphrase,
                              previous_until=rotated.previous_until, when=_when)

    @route("POST", f"/keys/{KEY}/expiry", WRITE_KEYS)
    def set_expiry(console: Console, ctx: Context, api_key: str) -> Response:
        key = _key(service, api_key)
        text = ctx.request.field("expires_in")
        expires_at = now_ms() + int(_duration(text, "expires_in") * 1000) if text else None
        service.lifecycle.set_expiry(api_key=key.api_key, expires_at=expires_at, by=_by(ctx))
        done = f"expires at {_when(expires_at)} UTC" if expires_at else "no longer expires"
        return ctx.done(f"{PREFIX}/accounts/{key.account_uid}", f"Key {key.api_key} {done}.")

    @route("POST", f"/keys/{KEY}/(?P<state>enable|disable)", WRITE_KEYS)
    def set_enabled(console: Console, ctx: Context, api_key: str, state: str) -> Response:
        key = _key(service, api_key)
        service.keys.set_key_enabled(key.api_key, state == "enable", by=_by(ctx))
        return ctx.done(f"{PREFIX}/accounts/{key.account_uid}", f"Key {key.api_key} {state}d.")

    @route("GET", f"/keys/{KEY}/delete", WRITE_KEYS)
    def confirm_delete_key(console: Console, ctx: Context, api_key: str) -> Response:
        key = _key(service, api_key)
        return console.render(ctx, "confirm.html", section="accounts", title="Delete this key?",
                              action=f"{PREFIX}/keys/{key.api_key}/delete",
                              back=f"{PREFIX}/accounts/{key.account_uid}",
                              what=f"the {key.scheme.value} key {key.api_key}"
                                   + (f" ({key.label})" if key.label else ""),
                              consequence="Requests signed with it are refused at once. This cannot be undone.")

    @route("POST", f"/keys/{KEY}/delete", WRITE_KEYS)
    def delete_key(console: Console, ctx: Context, api_key: str) -> Response:
        key = service.keys.revoke_key(api_key, by=_by(ctx))
        return ctx.done(f"{PREFIX}/accounts/{key.account_uid}", f"Key {key.api_key} deleted.")

    # audit and verification ------------------------------------------------------------------------

    @route("GET", "/audit", READ_AUDIT)
    def audit(console: Console, ctx: Context) -> Response:
        args = ctx.request
        filters = {name: args.arg(name)[:128] for name in ("action", "target", "account", "token", "since", "until")}
        actions = [a.strip() for a in filters["action"].split(",") if a.strip()][:20]
        account_uid = _uid(filters["account"], "account")
        since, until = _day(filters["since"], "since"), _day(filters["until"], "until")
        before = _uid(args.arg("before"), "before")
        events = service.audit.page_events(
            account_uid=account_uid, api_key=filters["target"] or None, actions=actions,
            actor_token=filters["token"] or None, since=since,
            until=until + 86_400_000 if until is not None else None,  # the whole of the last day
            before_id=before, limit=AUDIT_PAGE + 1,
        )
        older = urlencode({**{k: v for k, v in filters.items() if v}, "before": events[AUDIT_PAGE - 1].id}) \
            if len(events) > AUDIT_PAGE else None
        newest = urlencode({k: v for k, v in filters.items() if v}) if before is not None else None
        names = {token.id: token.name for token in tokens.list()}  # a few operator tokens, not thousands
        return console.render(ctx, "audit.html", section="audit", events=events[:AUDIT_PAGE], filters=filters,
                              older=older, newest=newest, when=_when, token_names=names)

    @route("GET", "/verification", READ_AUDIT)
    def verification(console: Console, ctx: Context) -> Response:
        series = history()
        return console.render(ctx, "verification.html", section="verification", chart=chart.render(series),
                              series=series, colours=chart.colours(series))


def _actor(ctx: Context, main: Account) -> Actor:
    """The operator acting for a main account, as the audit records it: the token's id and the address."""
    return Actor(account=main, api_key=None, ip=ctx.request.client_ip, token=ctx.operator.token_id)


def _by(ctx: Context) -> ServiceOperator:
    return ServiceOperator(token=ctx.operator.token_id, ip=ctx.request.client_ip)


def _account(service: KeyplaneService, uid: int) -> Account:
    account = service.accounts.account_of(uid)
    if account is None:
        raise AccountNotFound(f"no account {uid}")
    return account


def _key(service: KeyplaneService, api_key: str) -> ApiKey:
    try:
        return service.keys.find_key(api_key)
    except ApiKeyNotFound:
        raise ApiKeyNotFound(f"no key {api_key}") from None


def _scheme(text: str) -> Scheme:
    try:
        return Scheme(text)
    except ValueError:
        raise InvalidInput("choose Bitget or WhiteBIT", field="dialect") from None


def _key_type(text: str) -> int:
    if text not in ("1", "2"):
        raise InvalidInput("a WhiteBIT key is type 1 or 2", field="key_type")
    return int(text)


def _bitget_permissions(given: list[str]) -> tuple[str, ...]:
    if not given:
        raise InvalidInput("a Bitget key needs at least one permission", field="permission")
    return normalize_bitget_permissions(given)


def _uid(text: str, field: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 18):
        raise InvalidInput(f"{field} must be a number", field=field)
    return int(text)


def _day(text: str, field: str) -> int | None:
    """A date (``YYYY-MM-DD``, UTC) as the Unix ms its day begins."""
    if not text:
        return None
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{field} must be a date (YYYY-MM-DD)", field=field) from None
    return int(calendar.timegm(day.timetuple())) * 1000


def _duration(text: str, field: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise InvalidInput(str(error), field=field) from None


def _page_number(text: str) -> int:
    # isascii: "²" is a digit to str.isdigit and not a number to int
    return int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 6 and int(text) > 0 else 1


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))
