"""Bitget API v2: the virtual sub-account family and account info, in Bitget's exact wire form.

A thin translation: parse the wire form, call the service, render Bitget's envelope
``{"code": "00000", "msg": "success", "requestTime": <ms>, "data": ...}``. Every error, from the
verifier or the domain, is mapped to Bitget's code and message in the two tables below.

Choices where Bitget's own docs disagree (``reference/exchanges.md`` section 3), and why:
- every error is HTTP 400 as the error-code table says (ccxt reads the body, not the status), except
  rate limiting, which is HTTP 429 with ``{"code":"429","msg":"Too Many Requests"}`` as seen in the wild;
- ``requestTime`` is a number, as in the docs' examples;
- the sub-account list pages with ``limit`` default 100, max 500 (the EN page), at 10/s (EN, and ccxt's
  cost weight), and the key list is a GET (current docs, ccxt's implicit method);
- ``permList`` accepts both ``["spot_trade","read"]`` and the examples' ``["spot_trade,read"]``;
- batch-create answers with ``subAccountApiKey`` (the table), not ``apiKey`` (one example), and with the
  name as given (the examples' masked e-mail form carries no information a client can use);
- batch-create is all or nothing: one entry that cannot be made (bad field, taken name, over the limit)
  refuses the whole batch with its code, so no half-made sub-account or key is ever left behind.
  create-virtual-subaccount keeps its documented per-name ``failureList``;
- modify-virtual-subaccount-apikey checks ``passphrase`` against the key's (Bitget's FAQ: a passphrase
  "cannot be modified"), and answers ``secretKey: ""``: secrets are shown once, at creation;
- an expired timestamp is 40008, an IP outside the allowlist 40018 "Invalid IP" (ccxt: PermissionDenied;
  40038 would surface as a bare ExchangeError), a frozen sub-account's key 40013;
- 40057 fills both placeholders of the table's "Parameter {0} {1} does not meet specification" [BG-ERR]:
  the parameter's name and the refused entry as JSON text (cut to 64 characters), e.g. ``Parameter ipList
  "10.0.0.999" does not meet specification``; the entry is the caller's own input, never a secret;
- every field the docs type String is a JSON string in every answer, never null or a number (an
  independent typed client validates answers against the docs, issue 11): ``endId`` of an empty page is
  ``""`` (falsy, as null was, for a client's "more pages?" test), account info's ``inviterId`` is ``""``;
- an outage (the store or Redis cannot be reached: ``Reason.UNAVAILABLE``, ``errors.Unavailable``) is HTTP
  503 with 40015 "System is abnormal, please try again later" [BG-ERR]: the table's one code that says the
  fault is the server's and to retry (the docs list 5xx statuses without bodies). Not 40010 "Request timed
  out", which ccxt maps to AuthenticationError; ccxt maps 40015 to ExchangeError.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from keyplane import errors
from keyplane.auth import Reason, Requirement, Verifier, VerifyResult
from keyplane.dialects import bitget_wire
from keyplane.dialects.common import BadJson, actor_of, decode_json, run_service
from keyplane.domain.ipnet import normalize_ip_rule
from keyplane.domain.model import Account, AccountStatus, ApiKey, Scheme
from keyplane.domain.policy import DialectLimits
from keyplane.domain.rules import (
    BITGET_DEFAULT_PERMISSIONS,
    BITGET_PERMISSIONS,
    check_bitget_sub_name,
    check_label,
    check_passphrase,
    normalize_bitget_permissions,
)
from keyplane.domain.scopes import bitget_grants
from keyplane.endpoints import BITGET_ACCOUNT_INFO, management_rules
from keyplane.http import Request, Response, json_response
from keyplane.metrics import VIA_MANAGEMENT, Metrics
from keyplane.openapi import BITGET_SECURITY, Body, Operation, requirement_text
from keyplane.services import IssuedKey, KeyplaneService, NewKeySpec, NewSubAccountWithKey

PREFIX = "/api/v2/"
USER = "/api/v2/user/"

# Verifier reasons -> (code, message). Messages are Bitget's, exactly [BG-ERR].
REASON_ERRORS: dict[Reason, tuple[str, str]] = {
    Reason.MISSING_KEY: ("40001", "ACCESS_KEY cannot be empty"),
    Reason.MISSING_SIGNATURE: ("40002", "ACCESS_SIGN cannot be empty"),
    Reason.MISSING_TIMESTAMP: ("40005", "Invalid ACCESS_TIMESTAMP"),
    Reason.INVALID_TIMESTAMP: ("40005", "Invalid ACCESS_TIMESTAMP"),
    Reason.EXPIRED_TIMESTAMP: ("40008", "Request timestamp expired"),
    Reason.MISSING_PASSPHRASE: ("40011", "ACCESS_PASSPHRASE cannot be empty"),
    Reason.UNKNOWN_KEY: ("40037", "Apikey does not exist"),
    # past its expiry (keyplane's own lifecycle; Bitget has no expiry): the answer for a key that is not valid
    Reason.KEY_EXPIRED: ("40037", "Apikey does not exist"),
    Reason.BAD_SIGNATURE: ("40009", "sign signature error"),
    Reason.BAD_PASSPHRASE: ("40012", "apikey/password is incorrect"),
    Reason.ACCOUNT_FROZEN: ("40013", "User status is abnormal"),
    Reason.KEY_DISABLED: ("40013", "User status is abnormal"),
    Reason.IP_NOT_ALLOWED: ("40018", "Invalid IP"),
    Reason.MAIN_KEY_NEEDS_IP: ("40018", "Invalid IP"),
    Reason.NOT_MAIN_ACCOUNT: ("40048", "The user's ApiKey must be the parent account"),
    Reason.PERMISSION_DENIED: ("40014", "Incorrect permissions, need {0} permissions"),
    # never answered: Verifier.verify_async resolves it; were it to leak, the "try again" code
    Reason.WOULD_BLOCK: ("40015", "System is abnormal, please try again later"),
    Reason.UNAVAILABLE: ("40015", "System is abnormal, please try again later"),  # HTTP 503: unavailable()
    # A replayed state-changing request: Bitget documents no "duplicate request" code. 40004 is the table's
    # other "Request timestamp expired" (the timestamp was spent), which ccxt maps to InvalidNonce as it
    # does 40008: a client retries with a new timestamp, never as an authentication failure; a code of
    # its own tells a replay from a late request in logs.
    Reason.REQUEST_REPLAYED: ("40004", "Request timestamp expired"),
    # A path or method an upstream could read another way (dot segments, %-encoding, ';', '//', a
    # lower-case method): Bitget's generic parameter error, HTTP 400 as every row of its table, and
    # BadRequest in ccxt [BG-ERR; clients.md]. Not 40404: the target is malformed, not merely unknown.
    Reason.BAD_TARGET: ("40017", "Parameter verification failed"),
    # No rule of Bitget's names the method and path: Bitget's own answer for a URL it does not serve,
    # with HTTP 404 (verify_error), as this dialect's router answers (not_found())
    Reason.UNKNOWN_ENDPOINT: ("40404", "Request URL NOT FOUND"),
}

# 40057's message, both placeholders as in the error table [BG-ERR]: the parameter and the refused entry
SPEC_MESSAGE = "Parameter {0} {1} does not meet specification"

# Domain errors -> (code, message) [BG-ERR], most specific class first.
DOMAIN_ERRORS: list[tuple[type[errors.KeyplaneError], str, str]] = [
    (errors.InvalidName, "40055", "subName must be an English letter with a length of 8"),
    (errors.InvalidPassphrase, "40070", "passphrase 8-32 characters with letters and numbers"),
    (errors.InvalidLabel, "40056", "remark must be length of 1 ~ 20"),
    (errors.InvalidIp, "40057", SPEC_MESSAGE),
    (errors.InvalidPermission, "40057", SPEC_MESSAGE),
    (errors.InvalidInput, "40020", "Parameter {0} error"),
    (errors.ApiKeyNotFound, "40065", "This subApikey does not exist"),
    (errors.AccountNotFound, "40028", "This subUid does not belong to this account"),
    (errors.NameTaken, "40060", "subNames already exists"),
    (errors.DuplicateInRequest, "40071", "subName exist duplication"),
    (errors.SubAccountLimit, "40032", "The Max of sub-account created has reached the limit"),
    (errors.ApiKeyLimit, "40063", "API exceeds the maximum limit added"),
    (errors.IpLimit, "40058", "Parameter {0} Only a maximum of {1} is allowed"),
    (errors.BatchTooLarge, "40058", "Parameter {0} Only a maximum of {1} is allowed"),
    (errors.WrongPassphrase, "40036", "passphrase is error"),
    (errors.NotMainAccount, "40048", "The user's ApiKey must be the parent account"),
    # a key that would hold more than the caller's: Bitget's permission error, naming what is lacking
    # [BG-ERR] (ccxt: PermissionDenied), as the verifier answers a key without the route's permission
    (errors.GrantExceeded, "40014", "Incorrect permissions, need {0} permissions"),
    (errors.KeyplaneError, "40017", "Parameter verification failed {0}"),
]


class WireError(Exception):
    """A request that breaks Bitget's wire rules before it reaches the service."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _ms() -> int:
    return int(time.time() * 1000)


def _fill(template: str, *args: object) -> str:
    """Bitget's message with its ``{n}`` placeholders filled; a placeholder with nothing to say goes, with
    the space before it."""
    text = template
    for index in range(2):
        arg = str(args[index]) if index < len(args) else ""
        mark = "{" + str(index) + "}"
        text = text.replace(" " + mark, " " + arg if arg else "").replace(mark, arg)
    return text


def _shown(value: object) -> str:
    """A refused entry as 40057's ``{1}`` shows it: JSON text, ASCII only, at most 64 characters."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 64 else text[:61] + "..."


def _spec_error(name: str, value: object) -> WireError:
    return WireError("40057", _fill(SPEC_MESSAGE, name, _shown(value)))


def ok(data: object) -> Response:
    return json_response(200, {"code": "00000", "msg": "success", "requestTime": _ms(), "data": data})


def fail(code: str, message: str, status: int = 400) -> Response:
    return json_response(status, {"code": code, "msg": message, "requestTime": _ms(), "data": None})


def rate_limited() -> Response:
    return fail("429", "Too Many Requests", status=429)


def unavailable() -> Response:
    """An outage of the store or Redis (module doc): HTTP 503, 40015."""
    return fail(*REASON_ERRORS[Reason.UNAVAILABLE], status=503)


def not_found() -> Response:
    return fail("40404", "Request URL NOT FOUND", status=404)


def internal_error() -> Response:
    """A bug (never client input): HTTP 500 with 40015, the table's one code that says the fault is the
    server's [BG-ERR]; the docs list HTTP 500 without a body."""
    return fail("40015", "System is abnormal, please try again later", status=500)


def verify_error(result: VerifyResult) -> Response:
    if result.reason is Reason.RATE_LIMITED:
        return rate_limited()
    if result.reason is Reason.UNAVAILABLE:
        return unavailable()
    if result.reason is Reason.UNKNOWN_ENDPOINT:
        return not_found()
    code, message = REASON_ERRORS.get(result.reason, ("40009", "sign signature error"))
    return fail(code, _fill(message, result.detail))


def domain_error(error: errors.KeyplaneError, field: str | None = None) -> Response:
    if isinstance(error, errors.Unavailable):
        return unavailable()
    for error_type, code, message in DOMAIN_ERRORS:
        if isinstance(error, error_type):
            limit = getattr(error, "limit", "")
            return fail(code, _fill(message, field or error.field or "", limit))
    raise AssertionError("unreachable: KeyplaneError is the last row")


# wire parsing ---------------------------------------------------------------------------------


def _json_body(request: Request) -> Any:
    """The one place a Bitget body is read: anything ``decode_json`` refuses (malformed, deep, huge
    numbers, bad encoding, NUL) is 40017, the code Bitget answers a body it cannot parse."""
    try:
        return decode_json(request.body) if request.body else {}
    except BadJson:
        raise WireError("40017", "Parameter verification failed") from None


def _object_body(request: Request) -> dict[str, Any]:
    body = _json_body(request)
    if not isinstance(body, dict):
        raise WireError("40017", "Parameter verification failed")
    return body


def _required(body: dict[str, Any], name: str) -> Any:
    value = body.get(name)
    if value is None or value == "" or value == []:
        raise WireError("40019", f"Parameter {name} cannot be empty")
    return value


def _number(value: object, name: str, low: int, high: int) -> int:
    """The one place a Bitget number (JSON or query, int or digit string) is read: anything but
    ``low..high`` is 40020. The length is checked before ``int()``, which refuses (ValueError) strings past
    4300 digits, and before ``str()`` of a huge JSON integer."""
    if isinstance(value, bool):
        raise WireError("40020", f"Parameter {name} error")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and 0 < len(value) <= 19 and value.isascii() and value.isdigit():
        # str.isdigit() alone accepts '²' and other digits that int() refuses
        number = int(value)
    else:
        raise WireError("40020", f"Parameter {name} error")
    if not low <= number <= high:
        raise WireError("40020", f"Parameter {name} error")
    return number


def _uid(value: object, name: str = "subAccountUid") -> int:
    return _number(value, name, 0, 2**62)


def _str_list(value: object, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise WireError("40020", f"Parameter {name} error")
    return value


def _permissions(value: object, default: tuple[str, ...] | None = None) -> tuple[str, ...] | None:
    if value is None:
        return default
    entries = _str_list(value, "permList")
    try:
        return normalize_bitget_permissions(entries)
    except errors.InvalidPermission:
        raise _spec_error("permList", _refused_permission(entries)) from None


def _refused_permission(entries: list[Any]) -> object:
    """The first entry, or name within a comma-joined entry, that is not one of Bitget's permissions."""
    for entry in entries:
        if not isinstance(entry, str):
            return entry
        for name in (part.strip() for part in entry.split(",")):
            if name and name not in BITGET_PERMISSIONS:
                return name
    return entries


def _ip_list(value: object, limits: DialectLimits) -> tuple[str, ...]:
    if value is None:
        return ()
    entries = _str_list(value, "ipList")
    if len(entries) > limits.ips_per_key:
        raise WireError("40058", f"Parameter ipList Only a maximum of {limits.ips_per_key} is allowed")
    for entry in entries:
        try:
            normalize_ip_rule(entry)
        except errors.InvalidIp:
            raise _spec_error("ipList", entry) from None
    return tuple(entries)


def _key_spec(entry: dict[str, Any], limits: DialectLimits) -> NewKeySpec:
    passphrase = check_passphrase(_required(entry, "passphrase"))
    label = check_label(_required(entry, "label"))
    return NewKeySpec(
        label=label,
        passphrase=passphrase,
        permissions=_permissions(entry.get("permList"), BITGET_DEFAULT_PERMISSIONS) or (),
        ip_list=_ip_list(entry.get("ipList"), limits),
    )


# wire rendering -------------------------------------------------------------------------------


def _sub_account(account: Account) -> dict[str, Any]:
    # ``accountType`` and ``bindingTime`` are in the docs' example, not their table (exchanges.md 1.1 #4,
    # bitget.fit and bitget.media copies of Get Virtual Subaccounts): "hosting", the one value shown, and
    # the time the sub-account was bound to its main account, which for keyplane is when it was made (the
    # example's bindingTime equals its cTime), a string of Unix ms like cTime
    return {
        "subAccountUid": str(account.uid),
        "subAccountName": account.name,
        "label": account.label,
        "status": account.status.value,
        "permList": list(account.permissions),
        "accountType": "hosting",
        "bindingTime": str(account.created_at),
        "cTime": str(account.created_at),
        "uTime": str(account.updated_at),
    }


# Get Account Information's ``authorities`` are Bitget's own codes, "Read only": stor spot, smor margin,
# coor/cpor futures orders/holdings, wtor wallet transfer; "Read and Write": stow, smow, coow/cpow, wtow, and
# wwow wallet withdrawal (the page's table on bitget.fit, bitgetapp.com, bitget.live). Per keyplane
# permission: its read-write codes when the key holds it, else the read-only ones when the key may read.
# ``transfer`` guards withdrawals too (endpoints.BITGET_DEFAULTS), hence wwow. keyplane has no copy trading,
# tax, P2P or sub-account-management permission: ttor/ttow, taxr, p2pr, chor/chow never appear.
AUTHORITY_CODES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("spot_trade", ("stow",), ("stor",)),
    ("margin_trade", ("smow",), ("smor",)),
    ("contract_trade", ("coow", "cpow"), ("coor", "cpor")),
    ("transfer", ("wtow", "wwow"), ("wtor",)),
)


def _authorities(key: ApiKey, account: Account) -> list[str]:
    """What the key may do as the verifier judges it (``bitget_grants``: a sub-account's permissions cap
    its keys'), in Bitget's codes."""
    readable = bitget_grants(key, account, "read")
    codes: list[str] = []
    for permission, write, read in AUTHORITY_CODES:
        if bitget_grants(key, account, permission):
            codes += write
        elif readable:
            codes += read
    return codes


def _key(key: ApiKey, secret: str | None = None, *, with_secret: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {
        "subAccountUid": str(key.account_uid),
        "label": key.label,
        "subAccountApiKey": key.api_key,
    }
    if with_secret:
        data["secretKey"] = secret or ""
    data["permList"] = list(key.permissions)
    data["ipList"] = list(key.ip_list)
    return data


# routes ---------------------------------------------------------------------------------------

Route = Callable[[Request, VerifyResult], Awaitable[Response]]


class BitgetDialect:
    """Routes under ``/api/v2/``: each declares what the signing key needs, then translates."""

    def __init__(self, service: KeyplaneService, verifier: Verifier, metrics: Metrics | None = None) -> None:
        self.service = service
        self.verifier = verifier
        self.metrics = metrics or Metrics(counting=False)  # counters for /metrics, and the refusal log
        self.limits = service.policy.bitget
        self.routes: dict[tuple[str, str], tuple[Requirement, Route]] = {}
        user_routes: dict[str, Route] = {
            "create-virtual-subaccount": self.create_virtual_subaccount,
            "modify-virtual-subaccount": self.modify_virtual_subaccount,
            "batch-create-subaccount-and-apikey": self.batch_create,
            "virtual-subaccount-list": self.virtual_subaccount_list,
            "create-virtual-subaccount-apikey": self.create_apikey,
            "modify-virtual-subaccount-apikey": self.modify_apikey,
            "virtual-subaccount-apikey-list": self.apikey_list,
        }
        # the requirements are the endpoint table's rows for these routes (endpoints.management_rules),
        # so /v1/verify and the gateway judge them exactly as this dialect does
        for rule in management_rules(service.policy):
            if rule.dialect is Scheme.BITGET:
                name = rule.path.removeprefix(USER)
                route = self.account_info if rule.path == BITGET_ACCOUNT_INFO else user_routes[name]
                self.routes[(rule.method, rule.path)] = (rule.requirement, route)

    def operations(self) -> list[Operation]:
        """This dialect's routes for the OpenAPI document: the table above, with each route's bodies from
        ``bitget_wire.DOCS`` (a route without one raises ``KeyError``: it cannot be served undocumented)."""
        out = []
        for (method, path), (requirement, _route) in self.routes.items():
            doc = bitget_wire.DOCS[path.removeprefix(USER) if path.startswith(USER) else path]
            name = path.removeprefix(PREFIX).replace("/", "-")
            out.append(Operation(
                method, path, f"bitget-{name}", doc.summary, "Bitget v2",
                {200: Body("Done: Bitget's envelope with the answer in `data`", bitget_wire.ok(doc.data)),
                 **bitget_wire.ERRORS},
                security=BITGET_SECURITY,
                request=doc.request,
                query=doc.query,
                request_example=doc.example,
                description=" ".join(filter(None, [doc.description, requirement_text(requirement, "bitget")])),
            ))
        return out

    async def handle(self, request: Request) -> Response:
        entry = self.routes.get((request.method, request.path))
        if entry is None:
            self.metrics.refused_request("NOT_FOUND", "bitget", request, 404)
            return not_found()
        requirement, route = entry
        result = await self.verifier.verify_async(request, requirement, Scheme.BITGET)
        self.metrics.verified(request, result, VIA_MANAGEMENT)
        if not result.valid:
            return verify_error(result)
        error: Exception | None = None
        try:
            response = await route(request, result)
        except WireError as wire_error:
            error, response = wire_error, fail(wire_error.code, wire_error.message)
        except errors.KeyplaneError as domain:
            error, response = domain, domain_error(domain)
        self.metrics.managed("bitget", request, result, response.status, error)
        return response

    async def create_virtual_subaccount(self, request: Request, result: VerifyResult) -> Response:
        body = _object_body(request)
        names = _str_list(_required(body, "subAccountList"), "subAccountList")
        for name in names:
            check_bitget_sub_name(name)
        outcome = await run_service(
            self.service.subaccounts.create_sub_accounts,
            actor_of(request, result),
            names,
            Scheme.BITGET,
            BITGET_DEFAULT_PERMISSIONS,
        )
        # "subaAccount*" (with the doubled a) is how Bitget's docs spell these fields.
        return ok(
            {
                "failureList": [{"subaAccountName": name} for name in outcome.failed],
                "successList": [
                    {
                        "subaAccountUid": str(account.uid),
                        "subaAccountName": account.name,
                        "status": account.status.value,
                        "label": account.label,
                        "permList": list(account.permissions),
                        "cTime": str(account.created_at),
                        "uTime": str(account.updated_at),
                    }
                    for account in outcome.created
                ],
            }
        )

    async def modify_virtual_subaccount(self, request: Request, result: VerifyResult) -> Response:
        body = _object_body(request)
        uid = _uid(_required(body, "subAccountUid"))
        if "permList" not in body or body["permList"] is None:
            raise WireError("40019", "Parameter permList cannot be empty")
        permissions = _permissions(body["permList"])
        status = _required(body, "status")
        if status not in (AccountStatus.NORMAL.value, AccountStatus.FREEZE.value):
            raise WireError("40020", "Parameter status error")
        await run_service(
            self.service.subaccounts.modify_sub_account,
            actor_of(request, result),
            uid=uid,
            permissions=permissions,
            status=AccountStatus(status),
        )
        return ok({"result": "success"})

    async def batch_create(self, request: Request, result: VerifyResult) -> Response:
        body = _json_body(request)
        # The seed doc's request is a bare JSON array of entries; the current page's table reads as one
        # object of the entry's fields (issue 11: a typed client sent that and got 40017). Both are taken,
        # one object as a batch of one, and the answer is a list either way.
        if isinstance(body, dict):
            body = [body]
        if not isinstance(body, list) or not body:
            raise WireError("40017", "Parameter verification failed")
        if len(body) > self.limits.batch_size:
            raise errors.BatchTooLarge("batch too large", limit=self.limits.batch_size, field="subAccountList")
        entries: list[NewSubAccountWithKey] = []
        for entry in body:
            if not isinstance(entry, dict):
                raise WireError("40017", "Parameter verification failed")
            name = check_bitget_sub_name(_required(entry, "subAccountName"))
            spec = _key_spec(entry, self.limits)
            entries.append(
                NewSubAccountWithKey(name=name, key=spec, label=spec.label, permissions=spec.permissions)
            )
        issued: list[IssuedKey] = await run_service(
            self.service.subaccounts.batch_create_sub_accounts_with_keys,
            actor_of(request, result),
            entries,
            Scheme.BITGET,
        )
        return ok(
            [
                {"subAccountName": entry.name, **_key(item.key, item.secret)}
                for item, entry in zip(issued, entries, strict=True)
            ]
        )

    async def virtual_subaccount_list(self, request: Request, result: VerifyResult) -> Response:
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        limit = 100
        if query.get("limit"):
            limit = _number(query["limit"], "limit", 1, 500)
        id_less_than = _uid(query["idLessThan"], "idLessThan") if query.get("idLessThan") else None
        status = query.get("status") or None
        if status is not None and status not in (AccountStatus.NORMAL.value, AccountStatus.FREEZE.value):
            raise WireError("40020", "Parameter status error")
        accounts = await run_service(
            self.service.subaccounts.list_sub_accounts,
            actor_of(request, result),
            status=status,
            uid_less_than=id_less_than,
            limit=limit,
        )
        return ok(
            {
                "endId": str(accounts[-1].uid) if accounts else "",
                "subAccountList": [_sub_account(account) for account in accounts],
            }
        )

    async def create_apikey(self, request: Request, result: VerifyResult) -> Response:
        body = _object_body(request)
        uid = _uid(_required(body, "subAccountUid"))
        spec = _key_spec(body, self.limits)
        issued: IssuedKey = await run_service(
            self.service.keys.create_sub_key, actor_of(request, result), Scheme.BITGET, spec, uid=uid
        )
        return ok(_key(issued.key, issued.secret))

    async def modify_apikey(self, request: Request, result: VerifyResult) -> Response:
        body = _object_body(request)
        uid = _uid(_required(body, "subAccountUid"))
        api_key = _required(body, "subAccountApiKey")
        if not isinstance(api_key, str):
            raise WireError("40020", "Parameter subAccountApiKey error")
        passphrase = check_passphrase(_required(body, "passphrase"))
        label = check_label(_required(body, "label"))
        # Omitting ipList empties the allowlist; omitting permList keeps the permissions, and an
        # empty permList removes them (the documented, asymmetric rules).
        permissions = _permissions(body.get("permList"))
        ip_list = _ip_list(body.get("ipList"), self.limits)
        key: ApiKey = await run_service(
            self.service.keys.modify_sub_key,
            actor_of(request, result),
            api_key=api_key,
            sub_uid=uid,
            passphrase=passphrase,
            label=label,
            permissions=permissions,
            ip_list=ip_list,
            scheme=Scheme.BITGET,
        )
        return ok(_key(key))

    async def apikey_list(self, request: Request, result: VerifyResult) -> Response:
        query = dict(parse_qsl(request.query, keep_blank_values=True))
        uid = _uid(_required(query, "subAccountUid"))
        keys = await run_service(
            self.service.keys.list_sub_keys, actor_of(request, result), uid=uid, scheme=Scheme.BITGET
        )
        return ok([_key(key, with_secret=False) for key, _account in keys])

    async def account_info(self, request: Request, result: VerifyResult) -> Response:
        """Get Account Information, in the shape of its page (bitget.fit, bitgetapp.com; www.bitget.com)."""
        assert result.account is not None and result.key is not None
        account, key = result.account, result.key
        return ok(
            {
                "userId": str(account.uid),
                # String "Inviter's user ID": keyplane records no inviter, so "" (never null)
                "inviterId": "",
                # the newer copies type it Int and every example is a number; a main account is its own
                # parent (Account.main_uid)
                "parentId": account.main_uid,
                # "ips" String "IP whitelist" (example "127.0.0.1"): the key's entries joined by commas
                "ips": ",".join(key.ip_list),
                "authorities": _authorities(key, account),
                # "trader: Is trader, not_trader: not trader": keyplane has no copy trading
                "traderType": "not_trader",
                "channelCode": "",
                "channel": "",
                "regisTime": str(account.created_at),
            }
        )
