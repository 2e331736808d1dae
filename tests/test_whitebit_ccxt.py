"""ccxt 4.5.90's ``whitebit``, unchanged and pointed at keyplane, drives the WhiteBIT v4 sub-account and
sub-account API-key families through its implicit methods, with ``nonceWindow`` false and true.

Grouped by family; each test uses its own main account. The nonce mode a test ran under is checked in the
store afterwards (windowed nonces are recorded one by one, monotonic ones as the key's last nonce)."""

from __future__ import annotations

import secrets
from typing import Any

import ccxt
import pytest

from clients.whitebit_http import Operator, WhitebitClient
from conftest import Server
from keyplane.store import Store
from keyplane.store.nonces import recorded_nonces


def whitebit(server: Server, key: dict[str, Any], *, window: bool) -> ccxt.whitebit:
    exchange = ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"], "enableRateLimit": False})
    exchange.urls["api"]["v4"] = {"public": server.base_url + "/api/v4/public", "private": server.base_url + "/api/v4"}
    if window:
        exchange.options["nonceWindow"] = True
    return exchange


def alias(prefix: str) -> str:
    return prefix + secrets.token_hex(4)


def nonce_rows(server: Server, key_id: str) -> tuple[int, int]:
    """(windowed nonces recorded, 1 if a monotonic last nonce is kept else 0) for one key: the store's
    tables and its nonce journal (``<database>.nonces``), as the server's workers see them."""
    store = Store(server.database_url)
    try:
        last, seen = recorded_nonces(store, key_id)
    finally:
        store.close()
    return len(seen), int(last is not None)


@pytest.fixture(params=[False, True], ids=["nonceWindow-false", "nonceWindow-true"])
def window(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_ccxt_drives_the_sub_account_family(server: Server, window: bool) -> None:
    # the operator's own command makes the main key: one JSON object with apiKey and apiSecret
    uid = server.main_account(f"ccxt-sub-{int(window)}")  # main-account names are unique
    key = server.whitebit_main_key(uid, *(["--ip", "127.0.0.1"] if window else []))
    assert set(key) >= {"apiKey", "apiSecret", "id"} and key["ipList"] == (["127.0.0.1"] if window else [])
    ex = whitebit(server, key, window=window)
    name = alias("desk")

    created = ex.v4PrivatePostSubAccountCreate(
        {"alias": name, "email": "example@gmail.com", "permissions": {"spotEnabled": True, "collateralEnabled": False}}
    )
    assert "code" not in created
    assert created["alias"] == name
    assert created["email"] == "e***@g***m"
    assert created["status"] == "active"
    assert created["permissions"] == {"spotEnabled": True, "collateralEnabled": False}
    assert created["kyc"] == {"shareKyc": False, "kycStatus": None}
    assert len(created["id"]) == 36 and created["id"].count("-") == 4
    sub_id = created["id"]

    shared = ex.v4PrivatePostSubAccountCreate(
        {"alias": alias("kyc"), "shareKyc": True, "permissions": {"spotEnabled": False, "collateralEnabled": True}}
    )
    assert shared["kyc"] == {"shareKyc": True, "kycStatus": "shared"} and shared["email"] is None

    listed = ex.v4PrivatePostSubAccountList({})
    assert listed["offset"] == 0 and listed["limit"] == 30
    assert [a["id"] for a in listed["data"]] == [shared["id"], sub_id]  # newest first
    found = ex.v4PrivatePostSubAccountList({"search": name[4:], "limit": 10})
    assert [a["id"] for a in found["data"]] == [sub_id] and found["limit"] == 10
    page = ex.v4PrivatePostSubAccountList({"limit": 1, "offset": 1})
    assert [a["id"] for a in page["data"]] == [sub_id]

    renamed = alias("book")
    edited = ex.v4PrivatePostSubAccountEdit(
        {"id": sub_id, "alias": renamed, "permissions": {"spotEnabled": False, "collateralEnabled": True}}
    )
    assert edited == {}
    after = ex.v4PrivatePostSubAccountList({"search": renamed})["data"][0]
    assert after["alias"] == renamed
    assert after["permissions"] == {"spotEnabled": False, "collateralEnabled": True}

    assert ex.v4PrivatePostSubAccountBlock({"id": sub_id}) == {}
    assert ex.v4PrivatePostSubAccountList({"search": renamed})["data"][0]["status"] == "blocked"
    with pytest.raises(ccxt.ExchangeError, match="Sub-account already blocked"):
        ex.v4PrivatePostSubAccountBlock({"id": sub_id})
    assert ex.v4PrivatePostSubAccountUnblock({"id": sub_id}) == {}
    assert ex.v4PrivatePostSubAccountList({"search": renamed})["data"][0]["status"] == "active"

    assert ex.v4PrivatePostSubAccountDelete({"id": sub_id}) == {}
    assert [a["id"] for a in ex.v4PrivatePostSubAccountList({})["data"]] == [shared["id"]]
    with pytest.raises(ccxt.ExchangeError, match="Sub-account do not exists"):
        ex.v4PrivatePostSubAccountDelete({"id": sub_id})

    seen, last = nonce_rows(server, key["id"])
    if window:
        assert seen > 10 and last == 0
    else:
        assert seen == 0 and last == 1


def test_ccxt_drives_the_api_key_family(server: Server, operator: Operator, window: bool) -> None:
    key = operator.whitebit_main_key(operator.main_account("ccxt-keys"))
    ex = whitebit(server, key, window=window)
    sub = ex.v4PrivatePostSubAccountCreate(
        {"alias": alias("keys"), "shareKyc": True, "permissions": {"spotEnabled": True, "collateralEnabled": True}}
    )

    first = ex.v4PrivatePostSubAccountApiKeyCreate({"type": 1, "subAccountId": sub["id"], "title": "Trading Bot Key"})
    assert "code" not in first
    assert first["subAccountId"] == sub["id"] and first["title"] == "Trading Bot Key"
    assert first["type"] == 1 and first["isEnabled"] is True and first["restrictAccess"] is False
    assert first["accessEndpoints"] == [] and isinstance(first["lastActivity"], int)
    assert len(first["apiSecret"]) >= 32 and first["apiKey"]
    second = ex.v4PrivatePostSubAccountApiKeyCreate({"type": 2, "subAccountId": sub["id"], "title": "Withdrawals"})
    assert second["type"] == 2

    listed = ex.v4PrivatePostSubAccountApiKeyList({"subAccountId": sub["id"]})
    assert listed["limit"] == 100 and listed["offset"] == 0
    assert [k["id"] for k in listed["data"]] == [second["id"], first["id"]]  # newest first
    assert [k["type"] for k in listed["data"]] == ["2", "1"]
    assert all(k["apiSecret"] == "" for k in listed["data"])
    assert ex.v4PrivatePostSubAccountApiKeyList({"limit": 1, "offset": 1})["data"][0]["id"] == first["id"]

    urls = [
        {"url": "/api/v4/main-account/balance", "enable": True},
        {"url": "/api/v4/main-account/withdraw", "enable": False},
    ]
    assert ex.v4PrivatePostSubAccountApiKeyEdit({"apiKeyId": first["id"], "title": "Renamed", "urls": urls}) == {}
    edited = ex.v4PrivatePostSubAccountApiKeyList({"subAccountId": sub["id"]})["data"][1]
    assert edited["title"] == "Renamed" and edited["restrictAccess"] is True
    assert edited["accessEndpoints"] == [{"name": "/api/v4/main-account/balance", "title": "Get Balance"}]

    reset = ex.v4PrivatePostSubAccountApiKeyReset({"apiKeyId": first["id"]})
    assert reset["id"] == first["id"] and reset["apiKey"] == first["apiKey"]
    assert reset["apiSecret"] and reset["apiSecret"] != first["apiSecret"]
    # the old secret stops at once; the new one signs (and is then told it is not a main-account key)
    old = WhitebitClient(server.base_url, first["apiKey"], first["apiSecret"])
    assert old.post("/api/v4/sub-account/list").json() == {"code": 10, "message": "Unauthorized request.", "errors": {}}
    new = WhitebitClient(server.base_url, first["apiKey"], reset["apiSecret"])
    refused = new.post("/api/v4/sub-account/list")
    assert refused.status_code == 403 and refused.json() == {"code": 0, "message": "This action is unauthorized.",
                                                             "errors": {}}

    ips = ex.v4PrivatePostSubAccountApiKeyIpAddressCreate({"apiKeyId": first["id"], "ip": "192.168.1.1"})
    assert ips == {"data": ["192.168.1.1"]}
    ips = ex.v4PrivatePostSubAccountApiKeyIpAddressCreate({"apiKeyId": first["id"], "ip": "127.10.10.255"})
    assert ips == {"data": ["192.168.1.1", "127.10.10.255"]}
    with pytest.raises(ccxt.ExchangeError, match="already in allowlist"):
        ex.v4PrivatePostSubAccountApiKeyIpAddressCreate({"apiKeyId": first["id"], "ip": "192.168.1.1"})
    with pytest.raises(ccxt.ExchangeError, match=r"Invalid IP address\."):
        ex.v4PrivatePostSubAccountApiKeyIpAddressCreate({"apiKeyId": first["id"], "ip": "300.1.1.1"})
    assert ex.v4PrivatePostSubAccountApiKeyIpAddressList({"apiKeyId": first["id"]}) == {
        "data": ["192.168.1.1", "127.10.10.255"]
    }
    assert ex.v4PrivatePostSubAccountApiKeyIpAddressDelete({"apiKeyId": first["id"], "ip": "192.168.1.1"}) == {
        "data": ["127.10.10.255"]
    }
    with pytest.raises(ccxt.ExchangeError, match=r"IP address 192\.168\.1\.1 is not in the allowlist"):
        ex.v4PrivatePostSubAccountApiKeyIpAddressDelete({"apiKeyId": first["id"], "ip": "192.168.1.1"})

    assert ex.v4PrivatePostSubAccountApiKeyDelete({"apiKeyId": first["id"]}) == {}
    assert [k["id"] for k in ex.v4PrivatePostSubAccountApiKeyList({})["data"]] == [second["id"]]
    with pytest.raises(ccxt.ExchangeError, match="404"):
        ex.v4PrivatePostSubAccountApiKeyDelete({"apiKeyId": first["id"]})

    seen, last = nonce_rows(server, key["id"])
    if window:
        assert seen > 10 and last == 0
    else:
        assert seen == 0 and last == 1


def test_ccxt_gets_whitebit_errors_as_its_exception_classes(server: Server, operator: Operator) -> None:
    key = operator.whitebit_main_key(operator.main_account("ccxt-errors"))
    ex = whitebit(server, key, window=False)
    taken = alias("taken")
    ex.v4PrivatePostSubAccountCreate(
        {"alias": taken, "shareKyc": True, "permissions": {"spotEnabled": True, "collateralEnabled": False}}
    )
    with pytest.raises(ccxt.ExchangeError, match=r"Alias already exists\."):
        ex.v4PrivatePostSubAccountCreate(
            {"alias": taken, "shareKyc": True, "permissions": {"spotEnabled": True, "collateralEnabled": False}}
        )
    with pytest.raises(ccxt.ExchangeError, match=r"The email field is required\."):
        ex.v4PrivatePostSubAccountCreate(
            {"alias": alias("mail"), "permissions": {"spotEnabled": True, "collateralEnabled": False}}
        )

    wrong = whitebit(server, {"apiKey": key["apiKey"], "apiSecret": "0" * 32}, window=False)
    with pytest.raises(ccxt.AuthenticationError):
        wrong.v4PrivatePostSubAccountList({})

    # a nonce below the key's last one: HTTP 429 "Too many requests.", which ccxt reports as DDoSProtection
    behind = whitebit(server, key, window=False)
    behind.options["timeDifference"] = 60_000
    with pytest.raises(ccxt.DDoSProtection, match=r"Too many requests\."):
        behind.v4PrivatePostSubAccountList({})

    # funds are outside keyplane: WhiteBIT's 404 for an endpoint the account does not have
    sub = ex.v4PrivatePostSubAccountList({})["data"][0]
    with pytest.raises(ccxt.ExchangeError, match="endpoint not found"):
        ex.v4PrivatePostSubAccountBalances({"id": sub["id"]})
    with pytest.raises(ccxt.ExchangeError, match="endpoint not found"):
        ex.v4PrivatePostSubAccountTransfer(
            {"id": sub["id"], "direction": "main_to_sub", "amount": "1", "ticker": "USDT"}
        )
    with pytest.raises(ccxt.ExchangeError, match="endpoint not found"):
        ex.v4PrivatePostSubAccountTransferHistory({"id": sub["id"]})
