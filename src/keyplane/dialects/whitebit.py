"""WhiteBIT API v4: the sub-account family and the sub-account API-key family, in WhiteBIT's wire form.

A thin translation: parse the wire form, call the service, render WhiteBIT's answer. Every route is a
``POST`` under ``/api/v4/`` signed with X-TXC-APIKEY / X-TXC-PAYLOAD / X-TXC-SIGNATURE, checked by the
one verifier (``auth/verifier.py``). Success bodies are the documented objects and never carry a numeric
``code`` (ccxt takes any body with one for an error). Errors leave in WhiteBIT's private envelope
``{"code": <int>, "message": "...", "errors": {"<field>": ["..."]}}``, from the two tables below, except
the 404 bodies, which are ``{"message": "..."}`` as documented.

Choices where WhiteBIT's own docs disagree or say nothing (``reference/exchanges.md`` sections 2-3):
- statuses: validation failures are HTTP 400 with code 0 "Validation failed" (the sub-account pages),
  not 422 (the global table); business-rule failures are 400 with code 5 (the sub-account pages; the
  global table's "5 = Not enough balance" is about orders); an unknown API key id is 404
  ``{"message": "API key not found"}``;
- field messages: the sub-account family answers Laravel's English messages ("The email field is
  required.", "Alias already exists."), the API-key family the raw keys its pages show
  ("validation.required", "validation.integer"), each as documented for that family;
- authentication: a bad signature, an unknown key and a missing key or signature header are HTTP 401
  ``{"code":10,"message":"Unauthorized request."}`` (the observed body; 401 per WhiteBIT's status table:
  "missing or invalid authentication"), so ccxt raises AuthenticationError; a missing X-TXC-PAYLOAD is
  401 "Payload not provided.";
- "Invalid payload." keeps its final period (the real response; error-codes.yaml drops it), HTTP 400 code
  9. It also answers spaced JSON, a body that is not a JSON object, and a ``request`` that is not the path
  (undocumented; the payload is then not what the endpoint expects);
- "Request not provided.", "Nonce not provided." and "Invalid nonceWindow." are HTTP 400 with code 0 (their
  codes and statuses are undocumented);
- a nonce not above the last one and a replayed windowed nonce are HTTP 429 code 0 "Too many requests.", as
  WhiteBIT answers (ccxt PR #25353; data/error-codes.yaml gives that text for a nonce not above the last);
- a windowed nonce more than 5 s from the server's clock is HTTP 401 code 0 "Your nonce is more than 5
  seconds lesser than the current nonce." (the documented message, with the period of the real response
  quoted in whitebit-exchange/api-quickstart #14). Not 429: ccxt's handleErrors turns every 418/429 into
  DDoSProtection, a back-off and retry that cannot help a client whose clock is off; error-codes.yaml lists
  the message among the authentication errors ("retry: false"), WhiteBIT's status table gives 401 for
  "missing or invalid authentication", and /api/v4/jwt documents a bad nonce as 401 code 0 [WB-OAS]. ccxt
  has no entry for the message: ExchangeError;
- a disabled key, a blocked sub-account's key and a request from outside the key's IP allowlist are HTTP
  403 ``{"code":2,"message":"This action is unauthorized. Enable your key in API settings"}`` (the
  documented text for "disabled key (or IP restriction)"; ccxt: PermissionDenied);
- a sub-account's key on a main-account endpoint is HTTP 403 ``{"code":0,"message":"This action is
  unauthorized."}``, a body WhiteBIT answers as ccxt records it (whitebit.py's exact exceptions), which ccxt
  maps to PermissionDenied; 403 is the status table's "insufficient permissions". Not code 4's "This API Key
  is not authorized to perform this action.": ccxt's entry for that one reads "...perform self action." (its
  transpiler rewrote "this"), so the real text falls through to ExchangeError;
- a type 1 key where type 2 is needed is HTTP 401 ``{"code":4,"message":"This API Key is not authorized to
  perform this action."}`` (documented on withdraw/confirm); a key whose endpoint allowlist lacks the path
  is HTTP 403 code 0 "You don't have permission to use this endpoint.";
- ``api-key/ip-address/create`` takes exactly one IP address, IPv4 or IPv6, as documented ("IP address to
  add to allowed list", example "192.168.1.100"); a CIDR range is 400 code 0 ``ip: ["Invalid IP
  address."]``. Ranges stay a keyplane extension of the native API and the CLI; ``ip-address/delete``
  removes any entry the list shows, a range an operator added included;
- the key-create ``title`` is required (since the 2026-07-14 docs); ``type`` is the integer 1 or 2 (the
  spec), and the key list renders ``type`` as the string "1"/"2" (the list schema), never "trade" (old
  docs). Both types may be made on every sub-account: keyplane moves no funds, so "Type isn't allowed"
  and the 404 for a type the account lacks never arise;
- ``sub-account/api-key/reset`` answers the key object with its new ``apiSecret``, a superset of the
  documented ``{}`` (no version of the docs says how a client would learn the regenerated secret);
- the lists are ``{offset, limit, data}`` (the schema), not the "plain array" of one note; the key list
  pages at ``limit`` default 100 (the spec; the old docs said 30), the sub-account list at default 30;
- edit's ``urls`` must be present but may be empty (that lifts every endpoint restriction); an entry with
  ``enable: false`` is kept but restricts nothing, one without ``enable`` is enabled. The sub-account
  family (``/api/v4/sub-account/...``) and ``/api/v4/main-account/address`` cannot be allowed to a
  sub-account key (code 5 "The following URLs are restricted for sub-account API keys: ...", the
  documented example names the latter);
- balances, transfers, transfer history, the KYC URL and sub-account withdrawals are outside keyplane (it
  holds no funds): once the request is verified they answer HTTP 404 ``{"message": "This endpoint is not
  available for this account."}`` - WhiteBIT's answer when an endpoint is not enabled for the account
  (documented on withdraw/confirm) - and never made-up balances;
- ``SubAccount`` fields keyplane does not keep: ``status`` is "active" or "blocked" (only "active" is
  documented), ``color`` is derived from the id, ``kyc.kycStatus`` is "shared" with ``shareKyc`` and null
  otherwise (keyplane does no KYC), ``email`` is masked like "e***@g***m" and null when none was given (a
  sub-account made through Bitget has none). ``lastActivity`` is the key's last valid use in Unix seconds
  (written in batches, so up to ``KEYPLANE_LAST_USED_FLUSH`` late), or its last change if never used;
- WhiteBIT documents no cap on sub-accounts; over the operator's policy cap (``WHITEBIT_DEFAULTS``) the
  create answers code 5 "Limit of sub-accounts is reached. Maximum allowed: N", worded like the key one;
- rate limits (1000 requests/10 s per endpoint, the policy's default) are counted per main account and
  endpoint; WhiteBIT counts them per IP address, which behind a gateway would be the gateway's. Over the
  limit is HTTP 429 "Too many requests.", the nonce failure's answer too;
- a sub-account's permissions outside spot/collateral (e.g. Bitget's ``transfer``) survive a WhiteBIT
  edit, which only sets the two flags it knows;
- an outage (the store or Redis cannot be reached: ``Reason.UNAVAILABLE``, ``errors.Unavailable``) is HTTP
  503 with the body WhiteBIT answers when it is unavailable, as ccxt records it (whitebit.py's exact
  exceptions, ``'503': ExchangeNotAvailable``): ``{"response":null,"status":503,"errors":{"message":[""]},
  "notification":null,"warning":null,"_token":null}``; ccxt raises ExchangeNotAvailable, a retryable
  NetworkError.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable
from typing import Any

from keyplane import errors
from keyplane.auth import Reason, Requirement, Verifier, VerifyResult
from keyplane.dialects import whitebit_wire
from keyplane.dialects.common import BadJson, actor_of, check_json, run_service
from keyplane.domain.ipnet import normalize_ip_rule
from keyplane.domain.model import Account, AccountStatus, ApiKey, EndpointRule, Scheme
from keyplane.domain.scopes import COLLATERAL, SPOT, permissions_from_whitebit, whitebit_flags
from keyplane.endpoints import management_rules
from keyplane.http import Request, Response, json_response
from keyplane.metrics import VIA_MANAGEMENT, Metrics
from keyplane.openapi import WHITEBIT_SECURITY, Body, Operation, requirement_text
from keyplane.services import IssuedKey, KeyplaneService, NewKeySpec

WHITEBIT = Scheme.WHITEBIT  # the scheme of every key this dialect may see or change

PREFIX = "/api/v4/"
SUB = "/api/v4/sub-account/"
KEYS = "/api/v4/sub-account/api-key/"

ALIAS_MAX = 64
TITLE_MAX = 64
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

# Endpoints a sub-account key may never be allowed (edit's ``urls``).
RESTRICTED_PREFIXES = (SUB,)
RESTRICTED_URLS = frozenset({"/api/v4/main-account/address"})

UNAUTHORIZED = (401, 10, "Unauthorized request.")
KEY_DISABLED = (403, 2, "This action is unauthorized. Enable your key in API settings")
NOT_AUTHORIZED = (401, 4, "This API Key is not authorized to perform this action.")
MAIN_ONLY = (403, 0, "This action is unauthorized.")  # ccxt: PermissionDenied (module doc)
TOO_MANY = (429, 0, "Too many requests.")
INVALID_PAYLOAD = (400, 9, "Invalid payload.")

# Verifier reasons -> (HTTP status, code, message). Messages are WhiteBIT's, exactly [WB-DOCS].
REASON_ERRORS: dict[Reason, tuple[int, int, str]] = {
    Reason.MISSING_PAYLOAD: (401, 0, "Payload not provided."),
    Reason.MISSING_KEY: UNAUTHORIZED,
    Reason.MISSING_SIGNATURE: UNAUTHORIZED,
    Reason.UNKNOWN_KEY: UNAUTHORIZED,
    Reason.KEY_EXPIRED: UNAUTHORIZED,  # past its expiry (keyplane's lifecycle): WhiteBIT's answer for a bad key
    Reason.BAD_SIGNATURE: UNAUTHORIZED,
    Reason.PAYLOAD_MISMATCH: INVALID_PAYLOAD,
    Reason.MALFORMED: INVALID_PAYLOAD,
    Reason.REQUEST_MISMATCH: INVALID_PAYLOAD,
    Reason.MISSING_REQUEST: (400, 0, "Request not provided."),
    Reason.MISSING_NONCE: (400, 0, "Nonce not provided."),
    Reason.INVALID_NONCE_WINDOW: (400, 0, "Invalid nonceWindow."),
    Reason.NONCE_TOO_LOW: TOO_MANY,
    Reason.NONCE_REPLAYED: TOO_MANY,
    # Bitget's replay record; a WhiteBIT request's nonce already makes it once-only, so the verifier never
    # gives this for WhiteBIT: mapped as a replayed nonce, should a caller ask.
    Reason.REQUEST_REPLAYED: TOO_MANY,
    Reason.NONCE_OUT_OF_WINDOW: (401, 0, "Your nonce is more than 5 seconds lesser than the current nonce."),
    Reason.RATE_LIMITED: TOO_MANY,
    Reason.ACCOUNT_FROZEN: KEY_DISABLED,
    Reason.KEY_DISABLED: KEY_DISABLED,
    Reason.IP_NOT_ALLOWED: KEY_DISABLED,
    Reason.MAIN_KEY_NEEDS_IP: KEY_DISABLED,
    Reason.NOT_MAIN_ACCOUNT: MAIN_ONLY,
    Reason.PERMISSION_DENIED: (403, 0, "You don't have permission to use this endpoint."),
    # never answered: Verifier.verify_async resolves it; were it to leak, a retryable 503
    Reason.WOULD_BLOCK: (503, 0, "Service Unavailable"),
    Reason.UNAVAILABLE: (503, 0, ""),  # answered by unavailable(): WhiteBIT's 503 body has its own shape
    # A path or method an upstream could read another way: WhiteBIT signs the path inside the payload
    # (``request``), and a target that is not one plain path is a payload that does not name its
    # endpoint, answered as REQUEST_MISMATCH is: HTTP 400 code 9 (ccxt: BadRequest) [WB-DOCS].
    Reason.BAD_TARGET: INVALID_PAYLOAD,
    # UNKNOWN_ENDPOINT (no rule of WhiteBIT's names the method and path) is the 404 this dialect's
    # router answers, ``{"message": "Not found"}`` (ccxt: "endpoint not found"); see verify_error
}

# WhiteBIT's answer when it is unavailable, as ccxt records it (module doc)
UNAVAILABLE_BODY = {
    "response": None, "status": 503, "errors": {"message": [""]}, "notification": None, "warning": None,
    "_token": None,
}


class WireError(Exception):
    """An answer decided at the edge: a field that breaks WhiteBIT's rules, or a business-rule failure."""

    def __init__(self, status: int, code: int | None, message: str, field_errors: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field_errors = field_errors

    def response(self) -> Response:
        if self.code is None:  # the documented 404 bodies carry only a message
            return json_response(self.status, {"message": self.message})
        return fail(self.status, self.code, self.message, self.field_errors)


def fail(status: int, code: int, message: str, field_errors: dict[str, list[str]] | None = None) -> Response:
    return json_response(status, {"code": code, "message": message, "errors": field_errors or {}})


def invalid(field: str, message: str) -> WireError:
    return WireError(400, 0, "Validation failed", {field: [message]})


def business(message: str) -> WireError:
    return WireError(400, 5, message, {})


def not_found(message: str) -> WireError:
    return WireError(404, None, message, {})


def unavailable() -> Response:
    """An outage of the store or Redis (module doc): HTTP 503 in WhiteBIT's shape."""
    return json_response(503, UNAVAILABLE_BODY)


def not_found_response() -> Response:
    """No such endpoint: WhiteBIT's 404 body carries only a message."""
    return json_response(404, {"message": "Not found"})


def bad_target() -> Response:
    return fail(*REASON_ERRORS[Reason.BAD_TARGET])


def too_large() -> Response:
    return fail(*INVALID_PAYLOAD)


def internal_error() -> Response:
    """A bug (never client input): HTTP 500, the status WhiteBIT's table lists, in its private envelope."""
    return fail(500, 0, "Internal Server Error")


def verify_error(result: VerifyResult, requirement: Requirement) -> Response:
    if result.reason is Reason.UNKNOWN_ENDPOINT:
        return not_found_response()
    # a type 1 key where type 2 is needed is "not authorized"; an allowlist miss is "no permission"
    if result.reason is Reason.UNAVAILABLE:
        return unavailable()
    key = result.key
    if result.reason is Reason.PERMISSION_DENIED and key is not None and (key.key_type or 1) < requirement.key_type:
        return fail(*NOT_AUTHORIZED)
    return fail(*REASON_ERRORS.get(result.reason, UNAUTHORIZED))


def domain_error(error: errors.KeyplaneError) -> WireError:
    """The one table from keyplane's error tree to WhiteBIT's answers, most specific class first."""
    if isinstance(error, errors.NameTaken):
        return invalid("alias", "Alias already exists.")
    if isinstance(error, errors.InvalidIp):
        return invalid("ip", "Invalid IP address.")
    if isinstance(error, errors.InvalidInput):
        return invalid(error.field or "request", error.message)
    if isinstance(error, errors.ApiKeyNotFound):
        return not_found("API key not found")
    if isinstance(error, errors.AccountNotFound):
        return invalid(error.field or "id", "Sub-account do not exists")
    if isinstance(error, errors.IpAlreadyListed):
        return business("This IP address is already in allowlist")
    if isinstance(error, errors.IpNotListed):
        return business(error.message)
    if isinstance(error, errors.AlreadyInState):
        return invalid("account", error.message)
    if isinstance(error, errors.ApiKeyLimit):
        return business(f"Limit of API keys is reached. Maximum allowed: {error.limit}")
    if isinstance(error, errors.IpLimit):
        return business(f"You have reached the maximum number of allowed IPs: {error.limit}")
    if isinstance(error, errors.SubAccountLimit):
        return business(f"Limit of sub-accounts is reached. Maximum allowed: {error.limit}")
    if isinstance(error, errors.NotMainAccount):
        return WireError(*MAIN_ONLY, {})
    if isinstance(error, errors.GrantExceeded):
        # a key type above the caller's: the answer to a type 1 key where type 2 is needed (module doc)
        return WireError(*NOT_AUTHORIZED, {})
    return invalid(error.field or "request", error.message)


# wire parsing ---------------------------------------------------------------------------------


class Form:
    """The verified body of one request; collects every field error, then raises them together."""

    def __init__(self, body: dict[str, Any], *, laravel: bool) -> None:
        self.body = body
        self.laravel = laravel  # English messages (sub-account family) or raw keys (API-key family)
        self.errors: dict[str, list[str]] = {}

    def _message(self, field: str, rule: str, english: str) -> str:
        return english.replace(":field", field) if self.laravel else f"validation.{rule}"

    def error(self, field: str, rule: str, english: str) -> None:
        self.errors.setdefault(field, []).append(self._message(field, rule, english))

    def has(self, name: str) -> bool:
        value = self.body.get(name)
        return value is not None and value != "" and value != []

    def string(self, name: str, *, required: bool = True, max_length: int | None = None) -> str | None:
        if not self.has(name):
            if required:
                self.error(name, "required", "The :field field is required.")
            return None
        value = self.body[name]
        if not isinstance(value, str):
            self.error(name, "string", "The :field must be a string.")
            return None
        if max_length is not None and len(value) > max_length:
            self.error(name, "max.string", f"The :field must not be greater than {max_length} characters.")
            return None
        return value

    def boolean(self, name: str, value: object, *, required: bool = True) -> bool | None:
        if value is None:
            if required:
                self.error(name, "required", "The :field field is required.")
            return None
        if not isinstance(value, bool):
            self.error(name, "boolean", "The :field field must be true or false.")
            return None
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.body.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 12:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(name, "integer", "The :field must be an integer.")
            return default
        if value < low:
            self.error(name, "min.numeric", f"The :field must be at least {low}.")
            return default
        if value > high:
            self.error(name, "max.numeric", f"The :field must not be greater than {high}.")
            return default
        return value

    def permissions(self) -> tuple[bool, bool] | None:
        value = self.body.get("permissions")
        if not isinstance(value, dict):
            if value is None:
                self.error("permissions", "required", "The :field field is required.")
            else:
                self.error("permissions", "array", "The :field must be an array.")
            return None
        spot = self.boolean("permissions.spotEnabled", value.get("spotEnabled"))
        collateral = self.boolean("permissions.collateralEnabled", value.get("collateralEnabled"))
        if spot is None or collateral is None:
            return None
        return spot, collateral

    def check(self) -> None:
        if self.errors:
            raise WireError(400, 0, "Validation failed", self.errors)


def _form(result: VerifyResult, *, laravel: bool) -> Form:
    """The one place a WhiteBIT body reaches a route. The verifier has already decoded it (msgspec refuses
    malformed JSON, bad encodings, NaN and integers past 4300 digits; deep nesting is its RecursionError,
    also "Invalid payload.") and checked it is a JSON object equal to the payload; ``check_json`` adds the
    depth limit and refuses NUL characters, both "Invalid payload." too."""
    assert result.payload is not None
    try:
        check_json(result.payload)
    except BadJson:
        raise WireError(*INVALID_PAYLOAD, {}) from None
    return Form(result.payload, laravel=laravel)


# wire rendering -------------------------------------------------------------------------------


def mask_email(email: str | None) -> str | None:
    """``example@gmail.com`` -> ``e***@g***m``, the documented mask."""
    if not email or "@" not in email:
        return None
    local, domain = email.rsplit("@", 1)
    return f"{local[:1]}***@{domain[:1]}***{domain[-1:]}"


def sub_account(account: Account) -> dict[str, Any]:
    spot, collateral = whitebit_flags(account.permissions)
    return {
        "id": account.public_id,
        "alias": account.name,
        "userId": str(account.uid),
        "email": mask_email(account.email),
        "status": "blocked" if account.status is AccountStatus.FREEZE else "active",
        "color": "#" + account.public_id.replace("-", "")[:6].upper(),
        "kyc": {"shareKyc": account.share_kyc, "kycStatus": "shared" if account.share_kyc else None},
        "permissions": {"spotEnabled": spot, "collateralEnabled": collateral},
    }


ENDPOINT_TITLES = {
    "/api/v4/main-account/balance": "Get Balance",
    "/api/v4/main-account/withdraw": "Create Withdraw",
    "/api/v4/trade-account/balance": "Trading Balance",
    "/api/v4/order/new": "Create Limit Order",
}


def api_key(key: ApiKey, account: Account, secret: str = "", *, listed: bool = False) -> dict[str, Any]:
    key_type = key.key_type or 1
    return {
        "subAccountId": account.public_id,
        "id": key.id,
        "title": key.label,
        "isEnabled": key.enabled and account.status is AccountStatus.NORMAL,
        "apiKey": key.api_key,
        "apiSecret": secret,
        "type": str(key_type) if listed else key_type,
        # the key's last valid verification (recorded in batches, auth/usage.py); never used: its last change
        "lastActivity": (key.last_used_at if key.last_used_at is not None else key.updated_at) // 1000,
        "restrictAccess": key.restricts_endpoints,
        "accessEndpoints": [
            {"name": rule.url, "title": ENDPOINT_TITLES.get(rule.url, rule.url)}
            for rule in key.endpoints
            if rule.enabled
        ],
    }


def ok(data: object, status: int = 200) -> Response:
    return json_response(status, data)


# routes ---------------------------------------------------------------------------------------

Route = Callable[[Request, VerifyResult], Awaitable[Response]]


class WhitebitDialect:
    """Routes under ``/api/v4/``: each declares what the signing key needs, then translates."""

    def __init__(self, service: KeyplaneService, verifier: Verifier, metrics: Metrics | None = None) -> None:
        self.service = service
        self.verifier = verifier
        self.metrics = metrics or Metrics(counting=False)  # counters for /metrics, and the refusal log
        self.limits = service.policy.whitebit
        self.routes: dict[str, tuple[Requirement, Route]] = {}
        managed: dict[str, Route] = {
            "sub-account/create": self.create_sub_account,
            "sub-account/delete": self.delete_sub_account,
            "sub-account/edit": self.edit_sub_account,
            "sub-account/list": self.list_sub_accounts,
            "sub-account/block": self.block_sub_account,
            "sub-account/unblock": self.unblock_sub_account,
            "sub-account/api-key/create": self.create_key,
            "sub-account/api-key/edit": self.edit_key,
            "sub-account/api-key/delete": self.delete_key,
            "sub-account/api-key/list": self.list_keys,
            "sub-account/api-key/reset": self.reset_key,
            "sub-account/api-key/ip-address/list": self.list_ips,
            "sub-account/api-key/ip-address/create": self.add_ip,
            "sub-account/api-key/ip-address/delete": self.remove_ip,
            # outside keyplane: it holds no funds (see the module docstring)
            "sub-account/transfer": self.not_available,
            "sub-account/balances": self.not_available,
            "sub-account/transfer/history": self.not_available,
            "sub-account/kyc-url": self.not_available,
            "sub-account/withdraw/unconfirmed-list": self.not_available,
            "sub-account/withdraw/confirm": self.not_available,
        }
        # the requirements are the endpoint table's rows for these routes (endpoints.management_rules),
        # so /v1/verify and the gateway judge them exactly as this dialect does; every route is a POST
        for rule in management_rules(service.policy):
            if rule.dialect is Scheme.WHITEBIT:
                self.routes[rule.path] = (rule.requirement, managed[rule.path.removeprefix(PREFIX)])

    def operations(self) -> list[Operation]:
        """This dialect's routes for the OpenAPI document: the table above, with each route's bodies from
        ``whitebit_wire.DOCS`` (a route without one raises ``KeyError``: it cannot be served undocumented)."""
        out = []
        for path, (requirement, _route) in self.routes.items():
            name = path.removeprefix(PREFIX)
            doc = whitebit_wire.DOCS[name]
            responses = {**whitebit_wire.ERRORS, 404: whitebit_wire.NOT_FOUND}
            if doc.answer is not None:
                responses[doc.status] = Body("Done", doc.answer)
            out.append(Operation(
                "POST", path, "whitebit-" + name.replace("/", "-"), doc.summary, "WhiteBIT v4", responses,
                security=WHITEBIT_SECURITY,
                request=whitebit_wire.signed(path, doc.request),
                request_example=whitebit_wire.example(path, doc.example),
                description=requirement_text(requirement, "whitebit"),
            ))
        return out

    async def handle(self, request: Request) -> Response:
        entry = self.routes.get(request.path) if request.method == "POST" else None
        if entry is None:
            self.metrics.refused_request("NOT_FOUND", "whitebit", request, 404)
            return not_found_response()
        requirement, route = entry
        result = await self.verifier.verify_async(request, requirement, Scheme.WHITEBIT)
        self.metrics.verified(request, result, VIA_MANAGEMENT)
        if not result.valid:
            return verify_error(result, requirement)
        error: Exception | None = None
        try:
            response = await route(request, result)
        except WireError as wire_error:
            error, response = wire_error, wire_error.response()
        except errors.Unavailable as outage:
            error, response = outage, unavailable()
        except errors.KeyplaneError as domain:
            error, response = domain, domain_error(domain).response()
        self.metrics.managed("whitebit", request, result, response.status, error)
        return response

    # sub-accounts -----------------------------------------------------------------------------

    async def create_sub_account(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=True)
        alias = form.string("alias", max_length=ALIAS_MAX)
        share_kyc = form.boolean("shareKyc", form.body.get("shareKyc"), required=False) or False
        email = form.string("email", required=not share_kyc)
        if email is not None and not EMAIL.fullmatch(email):
            form.errors.setdefault("email", []).append("Email is invalid.")
        flags = form.permissions()
        form.check()
        assert alias is not None and flags is not None
        account: Account = await run_service(
            self.service.subaccounts.create_sub_account,
            actor_of(request, result),
            Scheme.WHITEBIT,
            name=alias,
            email=email,
            share_kyc=share_kyc,
            permissions=permissions_from_whitebit(*flags),
        )
        return ok(sub_account(account), 201)

    def _sub_id(self, form: Form) -> str:
        public_id = form.string("id", max_length=64)
        form.check()
        assert public_id is not None
        return public_id

    async def delete_sub_account(self, request: Request, result: VerifyResult) -> Response:
        public_id = self._sub_id(_form(result, laravel=True))
        await run_service(self.service.subaccounts.delete_sub_account, actor_of(request, result), public_id=public_id)
        return ok({})

    async def edit_sub_account(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=True)
        public_id = form.string("id", max_length=64)
        alias = form.string("alias", max_length=ALIAS_MAX)
        flags = form.permissions()
        form.check()
        assert public_id is not None and alias is not None and flags is not None
        actor = actor_of(request, result)
        current: Account = await run_service(self.service.subaccounts.get_sub_account, actor, public_id=public_id)
        # keep what WhiteBIT's two flags cannot express (a Bitget "transfer" or "read")
        others = tuple(p for p in current.permissions if p not in SPOT + COLLATERAL)
        await run_service(
            self.service.subaccounts.modify_sub_account,
            actor,
            public_id=public_id,
            name=alias,
            permissions=others + permissions_from_whitebit(*flags),
        )
        return ok({})

    async def list_sub_accounts(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=True)
        search = form.string("search", required=False, max_length=ALIAS_MAX)
        limit = form.integer("limit", 30, 1, 100)
        offset = form.integer("offset", 0, 0, 10_000)
        form.check()
        accounts: list[Account] = await run_service(
            self.service.subaccounts.list_sub_accounts,
            actor_of(request, result),
            search=search,
            limit=limit,
            offset=offset,
        )
        return ok({"offset": offset, "limit": limit, "data": [sub_account(a) for a in accounts]})

    async def _set_status(self, request: Request, result: VerifyResult, status: AccountStatus) -> Response:
        public_id = self._sub_id(_form(result, laravel=True))
        try:
            await run_service(
                self.service.subaccounts.set_sub_account_status, actor_of(request, result), status, public_id=public_id
            )
        except errors.AlreadyInState:
            word = "blocked" if status is AccountStatus.FREEZE else "unblocked"
            raise invalid("account", f"Sub-account already {word}") from None
        return ok({})

    async def block_sub_account(self, request: Request, result: VerifyResult) -> Response:
        return await self._set_status(request, result, AccountStatus.FREEZE)

    async def unblock_sub_account(self, request: Request, result: VerifyResult) -> Response:
        return await self._set_status(request, result, AccountStatus.NORMAL)

    async def not_available(self, request: Request, result: VerifyResult) -> Response:
        return not_found("This endpoint is not available for this account.").response()

    # sub-account API keys ---------------------------------------------------------------------

    async def create_key(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        key_type: Any = form.body.get("type")
        if key_type is None or key_type == "":
            form.error("type", "required", "")
        elif isinstance(key_type, str) and key_type in ("1", "2"):
            key_type = int(key_type)
        elif isinstance(key_type, bool) or key_type not in (1, 2):
            form.error("type", "in", "")
        sub_id = form.string("subAccountId", max_length=64)
        title = form.string("title", max_length=TITLE_MAX)
        form.check()
        assert sub_id is not None and title is not None
        actor = actor_of(request, result)
        try:
            # the account is read first: once the key is committed, nothing may fail the answer (an outage
            # would turn a made key into a 503)
            account: Account = await run_service(self.service.subaccounts.get_sub_account, actor, public_id=sub_id)
            issued: IssuedKey = await run_service(
                self.service.keys.create_sub_key,
                actor,
                Scheme.WHITEBIT,
                NewKeySpec(label=title, key_type=int(key_type)),
                public_id=sub_id,
            )
        except errors.AccountNotFound:
            raise invalid("subAccountId", "validation.exists") from None
        return ok(api_key(issued.key, account, issued.secret or ""), 201)

    def _key_id(self, form: Form) -> str:
        key_id = form.string("apiKeyId", max_length=64)
        return key_id or ""

    async def edit_key(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        key_id = self._key_id(form)
        title = form.string("title", max_length=TITLE_MAX)
        urls = form.body.get("urls")
        rules: list[EndpointRule] = []
        if urls is None:
            form.error("urls", "required", "")
        elif not isinstance(urls, list):
            form.error("urls", "array", "")
        else:
            for index, entry in enumerate(urls):
                url = entry.get("url") if isinstance(entry, dict) else None
                enable = entry.get("enable", True) if isinstance(entry, dict) else None
                if not isinstance(url, str) or not url.startswith(PREFIX) or len(url) > 200:
                    form.error(f"urls.{index}.url", "required" if url is None else "regex", "")
                elif not isinstance(enable, bool):
                    form.error(f"urls.{index}.enable", "boolean", "")
                else:
                    rules.append(EndpointRule(url=url, enabled=enable))
        form.check()
        assert title is not None
        restricted = [r.url for r in rules if r.enabled and _restricted(r.url)]
        if restricted:
            raise business("The following URLs are restricted for sub-account API keys: " + ", ".join(restricted))
        actor = actor_of(request, result)
        await run_service(
            self.service.keys.modify_sub_key, actor, key_id=key_id, label=title, endpoints=rules, scheme=WHITEBIT
        )
        return ok({})

    async def delete_key(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        key_id = self._key_id(form)
        form.check()
        actor = actor_of(request, result)
        await run_service(self.service.keys.delete_sub_key, actor, key_id=key_id, scheme=WHITEBIT)
        return ok({})

    async def list_keys(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        sub_id = form.string("subAccountId", required=False, max_length=64)
        limit = form.integer("limit", 100, 1, 100)
        offset = form.integer("offset", 0, 0, 10_000)
        form.check()
        try:
            keys: list[tuple[ApiKey, Account]] = await run_service(
                self.service.keys.list_sub_keys,
                actor_of(request, result),
                public_id=sub_id,
                limit=limit,
                offset=offset,
                scheme=WHITEBIT,
            )
        except errors.AccountNotFound:
            raise invalid("subAccountId", "validation.exists") from None
        return ok({"limit": limit, "offset": offset, "data": [api_key(k, a, listed=True) for k, a in keys]})

    async def reset_key(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        key_id = self._key_id(form)
        form.check()
        actor = actor_of(request, result)
        # read first, as in create_key: after the commit nothing may fail the answer
        key: ApiKey = await run_service(self.service.keys.find_sub_key, actor, key_id=key_id, scheme=WHITEBIT)
        account: Account = await run_service(self.service.subaccounts.get_sub_account, actor, uid=key.account_uid)
        issued: IssuedKey = await run_service(self.service.keys.reset_sub_key, actor, key_id=key_id, scheme=WHITEBIT)
        return ok(api_key(issued.key, account, issued.secret or ""))

    async def list_ips(self, request: Request, result: VerifyResult) -> Response:
        form = _form(result, laravel=False)
        key_id = self._key_id(form)
        form.check()
        key: ApiKey = await run_service(
            self.service.keys.find_sub_key, actor_of(request, result), key_id=key_id, scheme=WHITEBIT
        )
        return ok({"data": list(key.ip_list)})

    def _ip(self, form: Form) -> tuple[str, object]:
        key_id = self._key_id(form)
        if not form.has("ip"):
            form.error("ip", "required", "")
        form.check()
        return key_id, form.body["ip"]

    async def add_ip(self, request: Request, result: VerifyResult) -> Response:
        key_id, ip = self._ip(_form(result, laravel=False))
        if not _one_address(ip):  # exactly one IP address, as documented (module doc)
            raise invalid("ip", "Invalid IP address.")
        actor = actor_of(request, result)
        key: ApiKey = await run_service(self.service.keys.add_key_ip, actor, key_id=key_id, ip=ip, scheme=WHITEBIT)
        return ok({"data": list(key.ip_list)}, 201)

    async def remove_ip(self, request: Request, result: VerifyResult) -> Response:
        key_id, ip = self._ip(_form(result, laravel=False))
        try:
            # refuse what is not an address before the "not in the allowlist" message could echo it
            normalize_ip_rule(ip)
        except errors.InvalidIp:
            raise invalid("ip", "Invalid IP address.") from None
        assert isinstance(ip, str)
        actor = actor_of(request, result)
        key: ApiKey = await run_service(self.service.keys.remove_key_ip, actor, key_id=key_id, ip=ip, scheme=WHITEBIT)
        return ok({"data": list(key.ip_list)})


def _one_address(ip: object) -> bool:
    if not isinstance(ip, str) or not 0 < len(ip) <= 64 or "%" in ip:  # a zoned address never matches
        return False
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return False
    return True


def _restricted(url: str) -> bool:
    return url in RESTRICTED_URLS or url.startswith(RESTRICTED_PREFIXES)
