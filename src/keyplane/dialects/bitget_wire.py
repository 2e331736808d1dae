"""The bodies of the Bitget routes (``dialects/bitget.py``) for the OpenAPI document: what each route
reads and answers, as ``bitget.py`` parses and renders it (choices and sources are in its docstring).

``BitgetDialect.operations()`` pairs these with its route table; a route without an entry in ``DOCS``
fails the document's build (``keyplane.openapi``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from keyplane.domain.rules import BITGET_PERMISSIONS, LABEL_MAX
from keyplane.openapi import Body, Ref

Permission = Literal["spot_trade", "margin_trade", "contract_trade", "transfer", "read"]
assert set(Permission.__args__) == set(BITGET_PERMISSIONS)  # type: ignore[attr-defined]

SubName = Annotated[str, msgspec.Meta(pattern="^[A-Za-z]{8}$", description="8 English letters")]
Passphrase = Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9]{8,32}$", description="8-32 letters and digits")]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=LABEL_MAX)]
Uid = Annotated[
    Annotated[str, msgspec.Meta(pattern="^[0-9]{1,19}$")] | Annotated[int, msgspec.Meta(ge=0, le=2**62)],
    msgspec.Meta(description="a sub-account's UID, as a string of digits or a number"),
]
UidText = Annotated[str, msgspec.Meta(pattern="^[0-9]+$")]
MsText = Annotated[str, msgspec.Meta(pattern="^[0-9]+$", description="Unix time in milliseconds")]
PermList = Annotated[
    list[Permission],
    msgspec.Meta(description='also taken comma-joined, as in Bitget\'s examples: ["spot_trade,read"]'),
]
IpList = Annotated[list[str], msgspec.Meta(description="IPv4/IPv6 addresses or CIDR ranges; an empty list: any IP")]
Status = Literal["normal", "freeze"]


# requests ---------------------------------------------------------------------------------------


class BitgetCreateSubaccounts(msgspec.Struct):
    subAccountList: list[SubName]


class BitgetModifySubaccount(msgspec.Struct):
    subAccountUid: Uid
    permList: PermList
    status: Status


class BitgetBatchEntry(msgspec.Struct):
    subAccountName: SubName
    passphrase: Passphrase
    label: Label
    permList: PermList = msgspec.field(default_factory=lambda: ["spot_trade", "contract_trade"])
    ipList: IpList = msgspec.field(default_factory=list)


class BitgetCreateApiKey(msgspec.Struct):
    subAccountUid: Uid
    passphrase: Passphrase
    label: Label
    permList: PermList = msgspec.field(default_factory=lambda: ["spot_trade", "contract_trade"])
    ipList: IpList = msgspec.field(default_factory=list)


class BitgetModifyApiKey(msgspec.Struct):
    subAccountUid: Uid
    subAccountApiKey: str
    passphrase: Passphrase
    label: Label
    permList: Annotated[PermList, msgspec.Meta(description="omitted: kept; empty: every permission removed")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    ipList: Annotated[IpList, msgspec.Meta(description="omitted: the allowlist is emptied")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET


class BitgetSubaccountListQuery(msgspec.Struct):
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 100
    idLessThan: Annotated[str, msgspec.Meta(pattern="^[0-9]{1,19}$", description="the previous page's endId")] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    status: Status | msgspec.UnsetType = msgspec.UNSET


class BitgetApiKeyListQuery(msgspec.Struct):
    subAccountUid: Annotated[str, msgspec.Meta(pattern="^[0-9]{1,19}$")]


# answers (the ``data`` of Bitget's envelope) ---------------------------------------------------------


class BitgetCreatedSubaccount(msgspec.Struct):
    # "subaAccount*", with the doubled a, is how Bitget's docs spell these fields
    subaAccountUid: UidText
    subaAccountName: str
    status: Status
    label: str
    permList: list[str]
    cTime: MsText
    uTime: MsText


class BitgetFailedSubaccount(msgspec.Struct):
    subaAccountName: str


class BitgetCreatedSubaccounts(msgspec.Struct):
    failureList: list[BitgetFailedSubaccount]
    successList: list[BitgetCreatedSubaccount]


class BitgetResult(msgspec.Struct):
    result: Literal["success"]


class BitgetApiKey(msgspec.Struct):
    subAccountUid: UidText
    label: str
    subAccountApiKey: str
    secretKey: Annotated[str, msgspec.Meta(description="shown once, at creation; \"\" in every other answer")]
    permList: list[str]
    ipList: list[str]


class BitgetBatchCreated(msgspec.Struct):
    subAccountName: str
    subAccountUid: UidText
    label: str
    subAccountApiKey: str
    secretKey: str
    permList: list[str]
    ipList: list[str]


class BitgetListedApiKey(msgspec.Struct):
    subAccountUid: UidText
    label: str
    subAccountApiKey: str
    permList: list[str]
    ipList: list[str]


class BitgetSubaccount(msgspec.Struct):
    subAccountUid: UidText
    subAccountName: str
    label: str
    status: Status
    permList: list[str]
    accountType: Literal["hosting"]
    bindingTime: MsText
    cTime: MsText
    uTime: MsText


class BitgetSubaccountPage(msgspec.Struct):
    endId: Annotated[str, msgspec.Meta(description='the last UID of the page, "" for an empty page')]
    subAccountList: list[BitgetSubaccount]


class BitgetAccountInfo(msgspec.Struct):
    userId: UidText
    inviterId: str
    parentId: int
    ips: Annotated[str, msgspec.Meta(description="the key's IP allowlist, comma-joined")]
    authorities: list[str]
    traderType: Literal["trader", "not_trader"]
    channelCode: str
    channel: str
    regisTime: MsText


# envelopes --------------------------------------------------------------------------------------


def ok(data: Any) -> dict[str, Any]:
    """``{"code": "00000", "msg": "success", "requestTime": <ms>, "data": ...}``"""
    return {
        "type": "object",
        "required": ["code", "msg", "requestTime", "data"],
        "properties": {
            "code": {"const": "00000"},
            "msg": {"const": "success"},
            "requestTime": {"type": "integer"},
            "data": Ref(data),
        },
    }


class BitgetError(msgspec.Struct):
    """Every refusal: Bitget's code and message (the tables in ``dialects/bitget.py``), ``data`` null."""

    code: Annotated[str, msgspec.Meta(pattern="^[0-9]+$", examples=["40009"])]
    msg: str
    requestTime: int
    data: None


ERRORS: dict[int, Body] = {
    400: Body("Refused: Bitget's code and message (every error is HTTP 400, as its error table says)", BitgetError),
    429: Body('Over the rate limit: code "429"', BitgetError),
    500: Body("A bug (never client input): 40015", BitgetError),
    503: Body("The store or Redis is unreachable: 40015, retry", BitgetError),
}


@dataclass(frozen=True, slots=True)
class Doc:
    """One route's declaration: its summary, what it reads, what it answers (``data``)."""

    summary: str
    data: Any
    request: Any = None
    query: type[msgspec.Struct] | None = None
    description: str = ""
    example: Any = None  # a request body, shown by /docs and sent by tests/test_openapi.py


# by the route's name under /api/v2/user/ (``endpoints.BITGET_USER_ROUTES``), or its full path
DOCS: dict[str, Doc] = {
    "create-virtual-subaccount": Doc(
        "Create virtual sub-accounts", BitgetCreatedSubaccounts, BitgetCreateSubaccounts,
        description="A taken name goes to failureList; the others are made.",
        example={"subAccountList": ["docsdemo"]},
    ),
    "modify-virtual-subaccount": Doc(
        "Modify a virtual sub-account (permissions, freeze)", BitgetResult, BitgetModifySubaccount,
        example={"subAccountUid": "1000000002", "permList": ["spot_trade", "read"], "status": "normal"},
    ),
    "batch-create-subaccount-and-apikey": Doc(
        "Create sub-accounts, each with an API key", list[BitgetBatchCreated],
        list[BitgetBatchEntry] | BitgetBatchEntry,
        description="All or nothing. A single object is taken as a batch of one; the answer is a list either way.",
        example=[{"subAccountName": "docsdemb", "passphrase": "passphrase1", "label": "market maker",
                  "permList": ["spot_trade", "read"], "ipList": ["203.0.113.7"]}],
    ),
    "virtual-subaccount-list": Doc(
        "List virtual sub-accounts", BitgetSubaccountPage, query=BitgetSubaccountListQuery,
        description="Pages from the newest: pass the previous page's endId as idLessThan.",
    ),
    "create-virtual-subaccount-apikey": Doc(
        "Create a sub-account API key", BitgetApiKey, BitgetCreateApiKey,
        description="The answer's secretKey is shown once.",
        example={"subAccountUid": "1000000002", "passphrase": "passphrase1", "label": "trading bot",
                 "permList": ["spot_trade", "read"], "ipList": ["203.0.113.7"]},
    ),
    "modify-virtual-subaccount-apikey": Doc(
        "Modify a sub-account API key", BitgetApiKey, BitgetModifyApiKey,
        description="The passphrase must be the key's (it cannot be changed); secretKey is \"\".",
    ),
    "virtual-subaccount-apikey-list": Doc(
        "List a sub-account's API keys", list[BitgetListedApiKey], query=BitgetApiKeyListQuery,
    ),
    "/api/v2/spot/account/info": Doc(
        "Get account information (the signing key's)", BitgetAccountInfo,
        description="authorities are Bitget's codes (stow, stor, ...): what the key may do.",
    ),
}
