"""The bodies of the WhiteBIT routes (``dialects/whitebit.py``) for the OpenAPI document: what each route
reads and answers, as ``whitebit.py`` parses and renders it (choices and sources are in its docstring).

``WhitebitDialect.operations()`` pairs these with its route table; a route without an entry in ``DOCS``
fails the document's build (``keyplane.openapi``). Every body also carries the signed ``request`` (the
path) and ``nonce``: ``signed()`` adds them to each route's own fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from keyplane.openapi import Body, Ref

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Alias = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Limit = Annotated[int, msgspec.Meta(ge=1, le=100)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=10_000)]


class WhitebitPermissions(msgspec.Struct):
    spotEnabled: bool
    collateralEnabled: bool


# requests ---------------------------------------------------------------------------------------


class WhitebitCreateSubAccount(msgspec.Struct):
    alias: Alias
    permissions: WhitebitPermissions
    email: Annotated[str, msgspec.Meta(description="required unless shareKyc is true")] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    shareKyc: bool = False


class WhitebitSubAccountId(msgspec.Struct):
    id: Id


class WhitebitEditSubAccount(msgspec.Struct):
    id: Id
    alias: Alias
    permissions: WhitebitPermissions


class WhitebitListSubAccounts(msgspec.Struct):
    search: Alias | msgspec.UnsetType = msgspec.UNSET
    limit: Limit = 30
    offset: Offset = 0


class WhitebitCreateApiKey(msgspec.Struct):
    subAccountId: Id
    title: Title
    type: Annotated[Literal[1, 2], msgspec.Meta(description="1: info and trading; 2: adds deposits and withdrawals")]


class WhitebitUrl(msgspec.Struct):
    url: Annotated[str, msgspec.Meta(pattern="^/api/v4/", max_length=200)]
    enable: bool = True


class WhitebitEditApiKey(msgspec.Struct):
    apiKeyId: Id
    title: Title
    urls: Annotated[list[WhitebitUrl], msgspec.Meta(description="the endpoints the key may call; empty: any")]


class WhitebitApiKeyId(msgspec.Struct):
    apiKeyId: Id


class WhitebitListApiKeys(msgspec.Struct):
    subAccountId: Id | msgspec.UnsetType = msgspec.UNSET
    limit: Limit = 100
    offset: Offset = 0


class WhitebitApiKeyIp(msgspec.Struct):
    apiKeyId: Id
    ip: Annotated[str, msgspec.Meta(description="one IPv4 or IPv6 address", examples=["192.168.1.100"])]


class WhitebitEmpty(msgspec.Struct):
    """A route that reads nothing but the signed ``request`` and ``nonce``."""


# answers ----------------------------------------------------------------------------------------


class WhitebitKyc(msgspec.Struct):
    shareKyc: bool
    kycStatus: Literal["shared"] | None


class WhitebitSubAccount(msgspec.Struct):
    id: str
    alias: str
    userId: str
    email: Annotated[str | None, msgspec.Meta(description='masked ("e***@g***m"); null when none was given')]
    status: Literal["active", "blocked"]
    color: str
    kyc: WhitebitKyc
    permissions: WhitebitPermissions


class WhitebitSubAccountPage(msgspec.Struct):
    offset: int
    limit: int
    data: list[WhitebitSubAccount]


class WhitebitEndpoint(msgspec.Struct):
    name: str
    title: str


class WhitebitApiKey(msgspec.Struct):
    subAccountId: str
    id: str
    title: str
    isEnabled: bool
    apiKey: str
    apiSecret: Annotated[str, msgspec.Meta(description="shown once, when the key is made or reset; \"\" otherwise")]
    type: Literal[1, 2]
    lastActivity: int
    restrictAccess: bool
    accessEndpoints: list[WhitebitEndpoint]


class WhitebitListedApiKey(msgspec.Struct):
    subAccountId: str
    id: str
    title: str
    isEnabled: bool
    apiKey: str
    apiSecret: Literal[""]
    type: Literal["1", "2"]
    lastActivity: int
    restrictAccess: bool
    accessEndpoints: list[WhitebitEndpoint]


class WhitebitApiKeyPage(msgspec.Struct):
    limit: int
    offset: int
    data: list[WhitebitListedApiKey]


class WhitebitIpList(msgspec.Struct):
    data: list[str]


class WhitebitNothing(msgspec.Struct):
    """``{}``"""


# errors -----------------------------------------------------------------------------------------


class WhitebitError(msgspec.Struct):
    """WhiteBIT's private error envelope (the tables in ``dialects/whitebit.py``)."""

    code: int
    message: str
    errors: Annotated[dict[str, list[str]], msgspec.Meta(description="field -> messages (validation failures)")]


class WhitebitMessage(msgspec.Struct):
    message: str


class WhitebitUnavailable(msgspec.Struct):
    """WhiteBIT's 503 body, as ccxt records it."""

    response: None
    status: Literal[503]
    errors: dict[str, list[str]]
    notification: None
    warning: None
    token: None = msgspec.field(default=None, name="_token")


ERRORS: dict[int, Body] = {
    400: Body("Validation failed (code 0), a business rule (code 5), or an invalid payload (code 9)", WhitebitError),
    401: Body("Not authenticated: code 10 (bad key or signature), 0 (payload, nonce), 4 (key type)", WhitebitError),
    403: Body("Refused: a disabled key or sub-account, an IP outside the allowlist, a main-only route", WhitebitError),
    429: Body("Over the rate limit, or a nonce not above the last one (code 0)", WhitebitError),
    500: Body("A bug (never client input)", WhitebitError),
    503: Body("The store or Redis is unreachable", WhitebitUnavailable),
}
NOT_FOUND = Body("Not found: an unknown key id, or an endpoint not served for this account", WhitebitMessage)


def signed(path: str, fields: Any) -> dict[str, Any]:
    """A route's body: its own fields and the signed ``request`` (exactly ``path``) and ``nonce``."""
    return {
        "allOf": [
            {
                "type": "object",
                "required": ["request", "nonce"],
                "properties": {
                    "request": {"const": path, "description": "the path, as signed"},
                    "nonce": {
                        "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]{1,19}$"}],
                        "description": "above the key's last nonce; with nonceWindow: Unix ms within 5 s",
                    },
                    "nonceWindow": {"type": "boolean"},
                },
            },
            Ref(fields),
        ]
    }


def example(path: str, fields: dict[str, Any] | None) -> dict[str, Any] | None:
    """A route's example body as a client sends it: ``request`` and ``nonce`` first."""
    return None if fields is None else {"request": path, "nonce": 1700000000000, **fields}


@dataclass(frozen=True, slots=True)
class Doc:
    summary: str
    request: Any
    answer: Any  # None: the route answers only its 404 (keyplane holds no funds)
    status: int = 200
    example: dict[str, Any] | None = None  # the route's own fields: ``example()`` adds request and nonce


# by the route's path under /api/v4/ (``endpoints.WHITEBIT_MANAGED_ROUTES``)
DOCS: dict[str, Doc] = {
    "sub-account/create": Doc(
        "Create a sub-account", WhitebitCreateSubAccount, WhitebitSubAccount, 201,
        {"alias": "docs-demo", "email": "demo@example.com",
         "permissions": {"spotEnabled": True, "collateralEnabled": False}},
    ),
    "sub-account/delete": Doc("Delete a sub-account", WhitebitSubAccountId, WhitebitNothing),
    "sub-account/edit": Doc("Edit a sub-account", WhitebitEditSubAccount, WhitebitNothing),
    "sub-account/list": Doc(
        "List sub-accounts", WhitebitListSubAccounts, WhitebitSubAccountPage, example={"limit": 30, "offset": 0}
    ),
    "sub-account/block": Doc("Block a sub-account", WhitebitSubAccountId, WhitebitNothing),
    "sub-account/unblock": Doc("Unblock a sub-account", WhitebitSubAccountId, WhitebitNothing),
    "sub-account/api-key/create": Doc(
        "Create a sub-account API key", WhitebitCreateApiKey, WhitebitApiKey, 201,
        {"subAccountId": "0f8a1b9e-2c3d-4e5f-8a9b-0c1d2e3f4a5b", "title": "trading bot", "type": 1},
    ),
    "sub-account/api-key/edit": Doc("Edit a sub-account API key", WhitebitEditApiKey, WhitebitNothing),
    "sub-account/api-key/delete": Doc("Delete a sub-account API key", WhitebitApiKeyId, WhitebitNothing),
    "sub-account/api-key/list": Doc("List sub-account API keys", WhitebitListApiKeys, WhitebitApiKeyPage),
    "sub-account/api-key/reset": Doc(
        "Reset an API key's secret (the old one stops at once)", WhitebitApiKeyId, WhitebitApiKey
    ),
    "sub-account/api-key/ip-address/list": Doc("List a key's IP allowlist", WhitebitApiKeyId, WhitebitIpList),
    "sub-account/api-key/ip-address/create": Doc(
        "Add one IP address to a key's allowlist", WhitebitApiKeyIp, WhitebitIpList, 201
    ),
    "sub-account/api-key/ip-address/delete": Doc(
        "Remove an entry from a key's allowlist", WhitebitApiKeyIp, WhitebitIpList
    ),
    "sub-account/transfer": Doc("Not available: keyplane holds no funds", WhitebitEmpty, None),
    "sub-account/balances": Doc("Not available: keyplane holds no funds", WhitebitEmpty, None),
    "sub-account/transfer/history": Doc("Not available: keyplane holds no funds", WhitebitEmpty, None),
    "sub-account/kyc-url": Doc("Not available: keyplane does no KYC", WhitebitEmpty, None),
    "sub-account/withdraw/unconfirmed-list": Doc("Not available: keyplane holds no funds", WhitebitEmpty, None),
    "sub-account/withdraw/confirm": Doc("Not available: keyplane holds no funds", WhitebitEmpty, None),
}
