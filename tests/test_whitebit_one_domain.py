"""One domain, two dialects: a sub-account made through Bitget's API shows in WhiteBIT's list of the same
main account, in WhiteBIT's shape, and one made through WhiteBIT's shows in Bitget's; a block, a rename or
an alias taken on one side is seen on the other. Both sides are driven by ccxt 4.5.90, unchanged."""

from __future__ import annotations

import random
import string
from typing import Any

import ccxt
import pytest

from clients.whitebit_http import Operator
from conftest import Server


def letters() -> str:
    return "".join(random.choices(string.ascii_letters, k=8))


def clients(server: Server, operator: Operator) -> tuple[ccxt.bitget, ccxt.whitebit]:
    """ccxt for Bitget and for WhiteBIT, each with its own main key of one and the same main account."""
    uid = operator.main_account("one-domain")
    bg_key, wb_key = operator.bitget_main_key(uid), operator.whitebit_main_key(uid)
    bg = ccxt.bitget({"apiKey": bg_key["apiKey"], "secret": bg_key["secretKey"], "password": bg_key["passphrase"]})
    for group in list(bg.urls["api"]):
        bg.urls["api"][group] = server.base_url
    wb = ccxt.whitebit({"apiKey": wb_key["apiKey"], "secret": wb_key["apiSecret"]})
    wb.urls["api"]["v4"] = {"public": server.base_url + "/api/v4/public", "private": server.base_url + "/api/v4"}
    return bg, wb


def bitget_list(bg: ccxt.bitget) -> dict[str, dict[str, Any]]:
    response = bg.privateUserGetV2UserVirtualSubaccountList()
    return {entry["subAccountName"]: entry for entry in response["data"]["subAccountList"]}


def whitebit_list(wb: ccxt.whitebit) -> dict[str, dict[str, Any]]:
    return {entry["alias"]: entry for entry in wb.v4PrivatePostSubAccountList({"limit": 100})["data"]}


def test_a_bitget_sub_account_shows_in_whitebits_list_and_back(server: Server, operator: Operator) -> None:
    bg, wb = clients(server, operator)
    name = letters()
    made = bg.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": [name]})
    uid = made["data"]["successList"][0]["subaAccountUid"]

    seen = whitebit_list(wb)[name]
    assert seen["userId"] == uid and seen["status"] == "active" and seen["email"] is None
    assert len(seen["id"]) == 36 and "subAccountUid" not in seen
    # Bitget's default spot_trade + contract_trade is WhiteBIT's spot + collateral
    assert seen["permissions"] == {"spotEnabled": True, "collateralEnabled": True}

    # a WhiteBIT block is Bitget's freeze; Bitget's "normal" is WhiteBIT's unblocked
    wb.v4PrivatePostSubAccountBlock({"id": seen["id"]})
    assert bitget_list(bg)[name]["status"] == "freeze"
    bg.privateUserPostV2UserModifyVirtualSubaccount(
        {"subAccountUid": uid, "permList": ["spot_trade", "transfer"], "status": "normal"}
    )
    assert whitebit_list(wb)[name]["status"] == "active"
    assert whitebit_list(wb)[name]["permissions"] == {"spotEnabled": True, "collateralEnabled": False}

    # a WhiteBIT edit renames it for Bitget too, and keeps the permission WhiteBIT cannot express
    renamed = letters()
    wb.v4PrivatePostSubAccountEdit(
        {"id": seen["id"], "alias": renamed, "permissions": {"spotEnabled": False, "collateralEnabled": True}}
    )
    entry = bitget_list(bg)[renamed]
    assert entry["subAccountUid"] == uid
    assert sorted(entry["permList"]) == ["contract_trade", "margin_trade", "transfer"]


def test_a_whitebit_sub_account_shows_in_bitgets_list(server: Server, operator: Operator) -> None:
    bg, wb = clients(server, operator)
    name = letters()
    made = wb.v4PrivatePostSubAccountCreate(
        {"alias": name, "email": "desk@example.com", "permissions": {"spotEnabled": True, "collateralEnabled": False}}
    )
    entry = bitget_list(bg)[name]
    assert entry["subAccountUid"] == made["userId"]
    assert entry["status"] == "normal" and entry["permList"] == ["spot_trade"]
    assert set(entry) == {"subAccountUid", "subAccountName", "label", "status", "permList", "accountType",
                          "bindingTime", "cTime", "uTime"}

    # names are one namespace: Bitget cannot take the WhiteBIT alias (in any case), nor the other way round
    taken = bg.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": [name.swapcase()]})
    assert taken["data"]["failureList"] == [{"subaAccountName": name.swapcase()}]
    other = letters()
    bg.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": [other]})
    with pytest.raises(ccxt.ExchangeError, match=r"Alias already exists\."):
        wb.v4PrivatePostSubAccountCreate(
            {"alias": other, "shareKyc": True, "permissions": {"spotEnabled": True, "collateralEnabled": False}}
        )

    # deleted through WhiteBIT: gone from Bitget's list
    wb.v4PrivatePostSubAccountDelete({"id": made["id"]})
    assert set(bitget_list(bg)) == {other}
    assert set(whitebit_list(wb)) == {other}
