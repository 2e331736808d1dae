"""Issue 11 item 5, the last wire-fidelity gaps: one test per point, over HTTP against a live ``keyplane
serve`` that runs the documented limits (no suite-wide lift of account info's 1/s, conftest.make_server),
and through ccxt 4.5.90 itself wherever a client's exception class is the point, asserting that exact class
(not a subclass). The choices and their sources are written next to the code (dialects/bitget.py,
dialects/whitebit.py, domain/policy.py, endpoints.py)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import ccxt
import httpx
import pytest

import bitget_helpers as h
from clients.whitebit_http import Operator, WhitebitClient, compact, now_ms
from conftest import Server, make_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

INFO = "/api/v2/spot/account/info"
WB_SUB = "/api/v4/sub-account/"
WB_KEYS = "/api/v4/sub-account/api-key/"
WB_IPS = "/api/v4/sub-account/api-key/ip-address/"

# Bitget's authority codes for keyplane's permissions (dialects/bitget.py AUTHORITY_CODES)
ALL_WRITE = ["stow", "smow", "coow", "cpow", "wtow", "wwow"]
ALL_READ = ["stor", "smor", "coor", "cpor", "wtor"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("wire-fidelity"), documented_limits=True))
    srv.start()
    yield srv
    srv.stop()


def raises_exactly(error: type[Exception], call: Callable[..., Any], *args: Any) -> str:
    """``call`` raises ``error`` itself, not a subclass; returns the exception's text."""
    with pytest.raises(ccxt.BaseError) as caught:
        call(*args)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    return str(caught.value)


def sub_key(raw: h.Raw, server: Server, perms: list[str], **fields: Any) -> tuple[dict[str, Any], h.Raw]:
    """A new sub-account (Bitget's default permissions) with one key of ``perms``, and a client of that key."""
    name = h.new_name()
    (made,) = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [name]}))["successList"]
    passphrase = h.new_passphrase()
    key = h.assert_ok(raw.post("create-virtual-subaccount-apikey", {
        "subAccountUid": made["subaAccountUid"], "passphrase": passphrase, "label": "k", "permList": perms,
        **fields,
    }))
    return key, h.Raw(server, key["subAccountApiKey"], key["secretKey"], passphrase)


# Bitget: GET /api/v2/spot/account/info ---------------------------------------------------------------


def test_account_info_has_the_documented_fields_and_bitgets_authority_codes(server: Server) -> None:
    main = h.main_key(server, ips=("127.0.0.1", "10.0.0.0/8"))
    info = h.ccxt_main(server, main).privateSpotGetV2SpotAccountInfo()["data"]
    assert info == {
        "userId": main.uid,
        "inviterId": "",  # a string, never null
        "parentId": int(main.uid),  # Int on the newer pages, a number in every example
        "ips": "127.0.0.1,10.0.0.0/8",  # not "ipWhiteList"
        "authorities": ALL_WRITE,
        "traderType": "not_trader",
        "channelCode": "",
        "channel": "",
        "regisTime": info["regisTime"],
    }
    assert info["regisTime"].isdigit()

    raw = h.raw_main(server, main)
    try:
        # each sub-account is its own UID, so the 1/s does not stand between these reads
        for perms, codes in (
            (["read"], ALL_READ),
            (["spot_trade"], ["stow", "smor", "coor", "cpor", "wtor"]),
            # the sub-account holds Bitget's default spot_trade and contract_trade: transfer is capped to a read
            (["contract_trade", "transfer"], ["stor", "smor", "coow", "cpow", "wtor"]),
        ):
            key, client = sub_key(raw, server, perms)
            try:
                theirs = h.assert_ok(client.request("GET", INFO))
            finally:
                client.close()
            assert theirs["authorities"] == codes, perms
            assert theirs["userId"] == key["subAccountUid"] and theirs["parentId"] == int(main.uid)
            assert theirs["ips"] == "" and theirs["inviterId"] == "" and theirs["traderType"] == "not_trader"
            assert "ipWhiteList" not in theirs
    finally:
        raw.close()


def test_account_info_is_one_request_per_second_per_uid(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    raw = h.raw_main(server, main)
    try:
        key, sub_client = sub_key(raw, server, ["read"])
        try:
            assert ex.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == main.uid
            # the second within the second: Bitget's 429, which ccxt turns into a back-off
            text = raises_exactly(ccxt.DDoSProtection, ex.privateSpotGetV2SpotAccountInfo)
            assert '"code":"429"' in text
            h.assert_error(raw.request("GET", INFO), "429", "Too Many Requests", status=429)
            # another UID (a sub-account of the same main account) has its own second
            assert h.assert_ok(sub_client.request("GET", INFO))["userId"] == key["subAccountUid"]
            h.paced()
            assert ex.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == main.uid
        finally:
            sub_client.close()
    finally:
        raw.close()


def test_account_info_needs_a_read_or_trade_permission(server: Server) -> None:
    raw = h.raw_main(server, h.main_key(server))
    try:
        none, none_client = sub_key(raw, server, [])
        assert none["permList"] == []
        h.assert_error(none_client.request("GET", INFO), "40014", "Incorrect permissions, need read permissions")
        ccxt_none = h.ccxt_client(server, none["subAccountApiKey"], none["secretKey"], none_client.passphrase)
        text = raises_exactly(ccxt.PermissionDenied, ccxt_none.privateSpotGetV2SpotAccountInfo)
        assert '"code":"40014"' in text
        none_client.close()
        for perms in (["read"], ["spot_trade"], ["margin_trade"]):
            key, client = sub_key(raw, server, perms)
            try:
                assert h.assert_ok(client.request("GET", INFO))["userId"] == key["subAccountUid"], perms
            finally:
                client.close()
    finally:
        raw.close()


# Bitget: the sub-account family ----------------------------------------------------------------------


def test_apikey_list_is_five_requests_per_second_per_uid(server: Server) -> None:
    main, other = h.main_key(server), h.main_key(server)
    raw = h.raw_main(server, main)
    try:
        key, sub_client = sub_key(raw, server, ["read"])
        sub_client.close()
        h.paced()  # the sub-account family's windows start afresh
        ex = h.ccxt_main(server, main)
        uid = {"subAccountUid": key["subAccountUid"]}
        started = time.monotonic()
        for _ in range(5):
            assert len(ex.privateUserGetV2UserVirtualSubaccountApikeyList(uid)["data"]) == 1
        text = raises_exactly(ccxt.DDoSProtection, ex.privateUserGetV2UserVirtualSubaccountApikeyList, uid)
        assert '"code":"429"' in text and time.monotonic() - started < 1
        # another main account's UID is not held back
        other_raw = h.raw_main(server, other)
        try:
            assert h.assert_ok(other_raw.get("virtual-subaccount-list"))["subAccountList"] == []
            h.assert_error(other_raw.get("virtual-subaccount-apikey-list", f"subAccountUid={key['subAccountUid']}"),
                           "40028", "This subUid does not belong to this account")
        finally:
            other_raw.close()
        h.paced()
        assert len(ex.privateUserGetV2UserVirtualSubaccountApikeyList(uid)["data"]) == 1
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("ipList", ["127.0.0.1", "10.0.0.999"], '"10.0.0.999"'),
        ("ipList", ["10.0.0.0/33"], '"10.0.0.0/33"'),
        ("ipList", [167772161], "167772161"),
        ("ipList", ["x" * 100], '"' + "x" * 60 + "..."),  # cut to 64 characters
        ("permList", ["spot_trade,withdraw"], '"withdraw"'),  # the name within the docs' comma-joined form
        ("permList", ["read", {"a": 1}], '{"a": 1}'),
        ("permList", ["caf\u00e9"], '"caf\\u00e9"'),  # ASCII only
    ],
)
def test_40057_carries_both_placeholders(server: Server, field: str, value: list[Any], shown: str) -> None:
    main = h.main_key(server)
    raw = h.raw_main(server, main)
    try:
        (made,) = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [h.new_name()]}))["successList"]
        uid = made["subaAccountUid"]
        body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "k", field: value}
        message = f"Parameter {field} {shown} does not meet specification"
        h.assert_error(raw.post("create-virtual-subaccount-apikey", body), "40057", message)
        # ccxt has no entry for 40057: a bare ExchangeError, carrying the message
        create = h.ccxt_main(server, main).privateUserPostV2UserCreateVirtualSubaccountApikey
        text = raises_exactly(ccxt.ExchangeError, create, body)
        assert '"code":"40057"' in text and json.dumps(message)[1:-1] in text
        assert h.keys_of(raw, uid) == []  # nothing was made
    finally:
        raw.close()


def test_virtual_subaccount_list_items_carry_account_type_and_binding_time(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    names = [h.new_name(), h.new_name()]
    created = ex.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": names})["data"]["successList"]
    listed = ex.privateUserGetV2UserVirtualSubaccountList()["data"]["subAccountList"]
    assert {item["subAccountName"] for item in listed} == set(names)
    by_uid = {item["subaAccountUid"]: item for item in created}
    for item in listed:
        assert item["accountType"] == "hosting"  # the one value the docs' example shows
        assert item["bindingTime"] == item["cTime"] == by_uid[item["subAccountUid"]]["cTime"]
        assert item["bindingTime"].isdigit()


def test_batch_create_takes_one_object_or_an_array_and_answers_a_list(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    # as the current page shows it, a single JSON object (ccxt sends the dict it is given as the body)
    single = h.batch_entry(permList=["read"])
    made = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey(single)["data"]
    assert isinstance(made, list) and len(made) == 1
    assert made[0]["subAccountName"] == single["subAccountName"] and made[0]["permList"] == ["read"]
    client = h.Raw(server, made[0]["subAccountApiKey"], made[0]["secretKey"], single["passphrase"])
    try:
        assert h.assert_ok(client.request("GET", INFO))["userId"] == made[0]["subAccountUid"]
    finally:
        client.close()
    h.paced()  # 1/s
    # as the seed doc shows it, a bare array
    pair = [h.batch_entry(), h.batch_entry()]
    made = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey(pair)["data"]
    assert [m["subAccountName"] for m in made] == [e["subAccountName"] for e in pair]
    h.paced()
    # over the raw wire too: the object's bytes as sent, answered with a list
    raw = h.raw_main(server, main)
    try:
        entry = h.batch_entry()
        made = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", json.dumps(entry)))
        assert [m["subAccountName"] for m in made] == [entry["subAccountName"]]
        assert len(h.sub_accounts(raw)) == 4
    finally:
        raw.close()


# every string field of every Bitget answer -------------------------------------------------------------

S, INT, DIGITS = "str", "int", "digits"  # a JSON string; a JSON integer; a string of decimal digits
KEY_FIELDS = {"subAccountUid": DIGITS, "label": S, "subAccountApiKey": S, "permList": [S], "ipList": [S]}
SUB_ITEM = {"subAccountUid": DIGITS, "subAccountName": S, "label": S, "status": S, "permList": [S],
            "accountType": S, "bindingTime": DIGITS, "cTime": DIGITS, "uTime": DIGITS}
# data of each route's success, as its page's table types it (a dict: exactly these fields; [x]: a list of x)
SCHEMAS: dict[str, Any] = {
    "create-virtual-subaccount": {
        "failureList": [{"subaAccountName": S}],
        "successList": [{"subaAccountUid": DIGITS, "subaAccountName": S, "status": S, "label": S, "permList": [S],
                         "cTime": DIGITS, "uTime": DIGITS}],
    },
    "modify-virtual-subaccount": {"result": S},
    "batch-create-subaccount-and-apikey": [{"subAccountName": S, **KEY_FIELDS, "secretKey": S}],
    "virtual-subaccount-list": {"endId": S, "subAccountList": [SUB_ITEM]},
    "create-virtual-subaccount-apikey": {**KEY_FIELDS, "secretKey": S},
    "modify-virtual-subaccount-apikey": {**KEY_FIELDS, "secretKey": S},
    "virtual-subaccount-apikey-list": [KEY_FIELDS],
    "account-info": {"userId": DIGITS, "inviterId": S, "channelCode": S, "channel": S, "ips": S, "traderType": S,
                     "regisTime": DIGITS, "authorities": [S], "parentId": INT},
}


def string_leaves(schema: Any = SCHEMAS, where: str = "") -> Iterator[str]:
    """The path of every string field the schemas name, a list's items as ``[]``."""
    if schema in (S, DIGITS):
        yield where
    elif isinstance(schema, list):
        yield from string_leaves(schema[0], where + "[]")
    elif isinstance(schema, dict):
        for name, inner in schema.items():
            yield from string_leaves(inner, f"{where}.{name}" if where else name)


def conforms(value: Any, schema: Any, where: str, seen: list[str]) -> None:
    if schema in (S, DIGITS):
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        assert schema == S or value.isdigit(), f"{where}: {value!r} is not a string of digits"
        seen.append(where)
    elif schema == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: {value!r} is not a list"
        for index, item in enumerate(value):
            conforms(item, schema[0], f"{where}[{index}]", seen)
    else:
        assert isinstance(value, dict) and set(value) == set(schema), f"{where}: {value!r} has other fields"
        for name, inner in schema.items():
            conforms(value[name], inner, f"{where}.{name}", seen)


def test_every_string_field_of_every_bitget_answer_is_a_string(server: Server) -> None:
    main = h.main_key(server)
    raw = h.raw_main(server, main)
    answers: list[tuple[str, httpx.Response]] = []

    def call(route: str, response: httpx.Response) -> Any:
        answers.append((route, response))
        body = response.json()
        return body["data"] if body["code"] == "00000" else None

    try:
        # one answer at least of every route, with every list non-empty, and an error of every route
        taken = h.new_name()
        call("create-virtual-subaccount", raw.post("create-virtual-subaccount", {"subAccountList": [taken]}))
        created = call("create-virtual-subaccount", raw.post("create-virtual-subaccount",
                                                             {"subAccountList": [h.new_name(), taken.swapcase()]}))
        assert len(created["successList"]) == 1 and len(created["failureList"]) == 1
        uid = created["successList"][0]["subaAccountUid"]
        call("virtual-subaccount-list", raw.get("virtual-subaccount-list", "status=freeze"))  # an empty page
        call("modify-virtual-subaccount", raw.post("modify-virtual-subaccount",
                                                   {"subAccountUid": uid, "permList": ["read"], "status": "normal"}))
        batch = call("batch-create-subaccount-and-apikey", raw.post("batch-create-subaccount-and-apikey",
                                                                    [h.batch_entry(ipList=["127.0.0.1"])]))
        passphrase = h.new_passphrase()
        key = call("create-virtual-subaccount-apikey", raw.post("create-virtual-subaccount-apikey", {
            "subAccountUid": uid, "passphrase": passphrase, "label": "k", "permList": ["read"],
            "ipList": ["127.0.0.1", "10.0.0.0/8"],
        }))
        call("modify-virtual-subaccount-apikey", raw.post("modify-virtual-subaccount-apikey", {
            "subAccountUid": uid, "subAccountApiKey": key["subAccountApiKey"], "passphrase": passphrase,
            "label": "k2", "permList": ["read"], "ipList": ["127.0.0.1"],
        }))
        call("virtual-subaccount-list", raw.get("virtual-subaccount-list"))
        call("virtual-subaccount-apikey-list", raw.get("virtual-subaccount-apikey-list", f"subAccountUid={uid}"))
        call("account-info", raw.request("GET", INFO))
        sub = h.Raw(server, key["subAccountApiKey"], key["secretKey"], passphrase)
        try:
            call("account-info", sub.request("GET", INFO))
        finally:
            sub.close()
        assert batch is not None and batch[0]["ipList"] == ["127.0.0.1"]

        h.paced()  # the 1/s routes (batch-create, account info) answer again
        for route, response in (
            ("create-virtual-subaccount", raw.post("create-virtual-subaccount", {"subAccountList": ["abc"]})),
            ("modify-virtual-subaccount", raw.post("modify-virtual-subaccount", {"subAccountUid": uid})),
            ("batch-create-subaccount-and-apikey", raw.post("batch-create-subaccount-and-apikey", [])),
            ("virtual-subaccount-list", raw.get("virtual-subaccount-list", "limit=501")),
            ("create-virtual-subaccount-apikey", raw.post("create-virtual-subaccount-apikey", {"subAccountUid": uid})),
            ("modify-virtual-subaccount-apikey", raw.post("modify-virtual-subaccount-apikey", {"subAccountUid": uid})),
            ("virtual-subaccount-apikey-list", raw.get("virtual-subaccount-apikey-list")),
            ("account-info", raw.request("GET", INFO, headers={"ACCESS-PASSPHRASE": "wrongPass1"})),
        ):
            call(route, response)
    finally:
        raw.close()

    errors = {route for route, response in answers if response.json()["code"] != "00000"}
    assert errors == set(SCHEMAS)  # an error answer of every route
    checked: list[str] = []
    for route, response in answers:
        body = response.json()
        assert set(body) == {"code", "msg", "requestTime", "data"}, body
        conforms(body["code"], S, f"{route}.code", checked)
        conforms(body["msg"], S, f"{route}.msg", checked)
        conforms(body["requestTime"], INT, f"{route}.requestTime", checked)
        if body["code"] == "00000":
            assert response.status_code == 200
            conforms(body["data"], SCHEMAS[route], route, checked)
        else:
            assert response.status_code == 400 and body["data"] is None, response.text
    # the walk reached every documented string field of every route's success, in every list
    reached = {re.sub(r"\[\d+\]", "[]", where) for where in checked}
    assert set(string_leaves()) <= reached, set(string_leaves()) - reached
    # and the empty page's endId is the empty string, not null
    empty = next(r.json()["data"] for route, r in answers
                 if route == "virtual-subaccount-list" and r.json()["code"] == "00000")
    assert empty == {"endId": "", "subAccountList": []}


# WhiteBIT ---------------------------------------------------------------------------------------------


def wb_ccxt(server: Server, key: dict[str, Any], *, window: bool = False) -> ccxt.whitebit:
    exchange = ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"], "enableRateLimit": False})
    exchange.urls["api"]["v4"] = {"public": server.base_url + "/api/v4/public", "private": server.base_url + "/api/v4"}
    exchange.options["nonceWindow"] = window
    return exchange


def wb_sub_key(main: WhitebitClient, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    perms = {"spotEnabled": True, "collateralEnabled": False}
    sub = main.call(WB_SUB + "create", {"alias": name, "shareKyc": True, "permissions": perms}, expect=201)
    key = main.call(WB_KEYS + "create", {"type": 1, "subAccountId": sub["id"], "title": "desk"}, expect=201)
    return sub, key


def test_whitebit_ip_address_create_takes_exactly_one_address(server: Server, operator: Operator) -> None:
    uid = operator.main_account("wb-ips")
    main_key = operator.whitebit_main_key(uid)
    main = WhitebitClient(server.base_url, main_key["apiKey"], main_key["apiSecret"])
    _sub, key = wb_sub_key(main, "ips" + str(now_ms()))
    ex = wb_ccxt(server, operator.whitebit_main_key(uid))  # a key of its own: nonces are counted per key
    for cidr in ("10.0.0.0/8", "192.168.1.1/32", "2001:db8::/32", "fe80::1%eth0", "10.0.0.1, 10.0.0.2"):
        response = main.post(WB_IPS + "create", {"apiKeyId": key["id"], "ip": cidr})
        assert (response.status_code, response.json()) == (
            400, {"code": 0, "message": "Validation failed", "errors": {"ip": ["Invalid IP address."]}}), cidr
        # ccxt has no entry for the message: a bare ExchangeError
        text = raises_exactly(ccxt.ExchangeError, ex.v4PrivatePostSubAccountApiKeyIpAddressCreate,
                              {"apiKeyId": key["id"], "ip": cidr})
        assert "Invalid IP address." in text
    assert main.call(WB_IPS + "list", {"apiKeyId": key["id"]}) == {"data": []}
    # one address, IPv4 or IPv6, as documented
    assert ex.v4PrivatePostSubAccountApiKeyIpAddressCreate({"apiKeyId": key["id"], "ip": "192.168.1.100"}) == {
        "data": ["192.168.1.100"]}
    assert main.call(WB_IPS + "create", {"apiKeyId": key["id"], "ip": "2001:db8::7"}, expect=201) == {
        "data": ["192.168.1.100", "2001:db8::7"]}
    # a range stays keyplane's own extension: the CLI binds a key to one
    made = server.cli("keys", "create", "--account", uid, "--dialect", "whitebit", "--ip", "127.0.0.0/8")
    assert made["ipList"] == ["127.0.0.0/8"]
    ranged = WhitebitClient(server.base_url, made["apiKey"], made["apiSecret"])
    assert ranged.call(WB_SUB + "list", {})["data"][0]["id"] == _sub["id"]


def test_whitebit_nonce_outside_the_window_is_not_a_429(server: Server, operator: Operator) -> None:
    uid = operator.main_account("wb-nonce")
    main_key = operator.whitebit_main_key(uid)
    main = WhitebitClient(server.base_url, main_key["apiKey"], main_key["apiSecret"])
    assert main.call(WB_SUB + "list")["data"] == []  # a monotonic nonce on record
    stale = {"code": 0, "message": "Your nonce is more than 5 seconds lesser than the current nonce.", "errors": {}}
    for offset in (-10_000, +10_000):
        body = {**main.body(WB_SUB + "list", window=True), "nonce": str(now_ms() + offset)}
        response = main.post_raw(WB_SUB + "list", compact(body))
        assert (response.status_code, response.json()) == (401, stale), offset
    # ccxt with nonceWindow and a clock 10 s behind: not DDoSProtection (its back-off for every 429)
    late = wb_ccxt(server, operator.whitebit_main_key(uid), window=True)
    late.options["timeDifference"] = 10_000  # ccxt's nonce() is milliseconds() - timeDifference
    text = raises_exactly(ccxt.ExchangeError, late.v4PrivatePostSubAccountList, {})
    assert "more than 5 seconds" in text
    # the same client with its clock right is served; a monotonic nonce not above the key's last is still
    # the documented 429 "Too many requests." (nothing changed there)
    late.options["timeDifference"] = 0
    assert late.v4PrivatePostSubAccountList({})["data"] == []
    body = {**main.body(WB_SUB + "list"), "nonce": "1"}
    response = main.post_raw(WB_SUB + "list", compact(body))
    assert (response.status_code, response.json()["message"]) == (429, "Too many requests.")


def test_whitebit_sub_account_key_on_a_main_only_endpoint_is_permission_denied(
    server: Server, operator: Operator
) -> None:
    main_key = operator.whitebit_main_key(operator.main_account("wb-main-only"))
    main = WhitebitClient(server.base_url, main_key["apiKey"], main_key["apiSecret"])
    _sub, key = wb_sub_key(main, "desk" + str(now_ms()))
    sub_client = WhitebitClient(server.base_url, key["apiKey"], key["apiSecret"])
    refusal = (403, {"code": 0, "message": "This action is unauthorized.", "errors": {}})
    for path, fields in ((WB_SUB + "list", {}), (WB_KEYS + "list", {}),
                         (WB_KEYS + "create", {"type": 1, "subAccountId": _sub["id"], "title": "x"})):
        response = sub_client.post(path, fields)
        assert (response.status_code, response.json()) == refusal, path
    other = main.call(WB_KEYS + "create", {"type": 1, "subAccountId": _sub["id"], "title": "ccxt"}, expect=201)
    ex = wb_ccxt(server, other)
    for call, params in ((ex.v4PrivatePostSubAccountList, {}), (ex.v4PrivatePostSubAccountApiKeyList, {}),
                         (ex.v4PrivatePostSubAccountCreate, {"alias": "nope", "shareKyc": True,
                                                             "permissions": {"spotEnabled": True,
                                                                             "collateralEnabled": True}})):
        raises_exactly(ccxt.PermissionDenied, call, params)
    assert len(main.call(WB_KEYS + "list", {"subAccountId": _sub["id"]})["data"]) == 2  # nothing was made
    assert [s["alias"] for s in main.call(WB_SUB + "list", {})["data"]] == [_sub["alias"]]
