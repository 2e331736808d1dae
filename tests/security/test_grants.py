"""Keys cannot grant what they lack (issue 8, item 6), through HTTP on a real ``keyplane serve``.

A main key makes and changes sub-account keys only with Bitget permissions, or a WhiteBIT key type, it
holds itself; a read-only Bitget main key makes no key at all. Each refusal is the dialect's error
(Bitget 40014 naming what is lacking; WhiteBIT 401 code 4) and changes nothing.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import bitget_helpers as h
from clients.whitebit_http import WhitebitClient
from conftest import Server, make_server
from keyplane.domain.model import Scheme

UNLIMITED = "1000000/second"
POLICY = json.dumps({"bitget": {"default_rate_limit": UNLIMITED, "rate_limits": {
    name: UNLIMITED for name in ("create-virtual-subaccount", "modify-virtual-subaccount",
                                 "batch-create-subaccount-and-apikey", "create-virtual-subaccount-apikey",
                                 "modify-virtual-subaccount-apikey", "virtual-subaccount-list",
                                 "virtual-subaccount-apikey-list")}}})

SUB = "/api/v4/sub-account/"
KEYS = "/api/v4/sub-account/api-key/"
NOT_AUTHORIZED = (401, {"code": 4, "message": "This API Key is not authorized to perform this action.", "errors": {}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("grants"), {"KEYPLANE_POLICY": POLICY}))
    srv.start()
    yield srv
    srv.stop()


def bitget_main(server: Server, uid: str, permissions: list[str]) -> h.MainKey:
    service = h._operator(server).service
    issued = service.keys.issue_main_key(int(uid), Scheme.BITGET, permissions=permissions, ip_list=["127.0.0.1"])
    assert issued.secret is not None and issued.passphrase is not None
    h.RECORD.secret(issued.secret, issued.passphrase)
    return h.MainKey(uid, issued.key.api_key, issued.secret, issued.passphrase)


@pytest.fixture(scope="module")
def bitget(server: Server) -> dict[str, Any]:
    """One main account with a full, a spot-only and a read-only key; a sub-account with a full key's key."""
    full = h.main_key(server)
    keys = {
        "full": full,
        "spot": bitget_main(server, full.uid, ["spot_trade"]),
        "read": bitget_main(server, full.uid, ["read"]),
    }
    raw = h.raw_main(server, full)
    try:
        made = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [
            h.batch_entry(permList=["spot_trade", "transfer"])]))[0]
    finally:
        raw.close()
    return {**keys, "sub_uid": made["subAccountUid"], "strong_key": made["subAccountApiKey"]}


def _keys_of(server: Server, main: h.MainKey, sub_uid: str) -> list[dict[str, Any]]:
    raw = h.raw_main(server, main)
    try:
        return h.keys_of(raw, sub_uid)
    finally:
        raw.close()


def _post(server: Server, main: h.MainKey, route: str, body: Any) -> httpx.Response:
    raw = h.raw_main(server, main)
    try:
        return raw.post(route, body)
    finally:
        raw.close()


def _need(permission: str) -> tuple[str, str]:
    return "40014", f"Incorrect permissions, need {permission} permissions"


# Bitget -----------------------------------------------------------------------------------------------


def test_a_read_only_main_key_mints_no_key(server: Server, bitget: dict[str, Any]) -> None:
    read, full, uid = bitget["read"], bitget["full"], bitget["sub_uid"]
    before_keys = _keys_of(server, full, uid)
    raw = h.raw_main(server, full)
    before_subs = h.sub_accounts(raw)
    raw.close()
    for body in ({"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "ro", "permList": ["read"]},
                 {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "ro"}):
        h.assert_error(_post(server, read, "create-virtual-subaccount-apikey", body), *_need("read_and_write"))
    h.assert_error(_post(server, read, "batch-create-subaccount-and-apikey", [h.batch_entry(permList=["read"])]),
                   *_need("read_and_write"))
    raw = h.raw_main(server, full)
    assert h.sub_accounts(raw) == before_subs
    raw.close()
    assert _keys_of(server, full, uid) == before_keys


def test_a_key_grants_only_the_permissions_it_holds(server: Server, bitget: dict[str, Any]) -> None:
    spot, full, uid = bitget["spot"], bitget["full"], bitget["sub_uid"]
    before = _keys_of(server, full, uid)
    for perms, lacking in ((["spot_trade", "transfer"], "transfer"), (["margin_trade"], "margin_trade"),
                           (None, "contract_trade")):  # no permList: the default spot_trade + contract_trade
        body: dict[str, Any] = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "x"}
        if perms is not None:
            body["permList"] = perms
        h.assert_error(_post(server, spot, "create-virtual-subaccount-apikey", body), *_need(lacking))
    h.assert_error(_post(server, spot, "batch-create-subaccount-and-apikey",
                         [h.batch_entry(permList=["spot_trade"]), h.batch_entry(permList=["transfer"])]),
                   *_need("transfer"))
    assert _keys_of(server, full, uid) == before
    # what it holds, it grants: spot_trade, and read, which any permission implies
    made = h.assert_ok(_post(server, spot, "create-virtual-subaccount-apikey", {
        "subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "ok", "permList": ["spot_trade", "read"]}))
    assert made["permList"] == ["spot_trade", "read"]


def test_a_key_cannot_raise_or_touch_a_stronger_key(server: Server, bitget: dict[str, Any]) -> None:
    spot, full, uid = bitget["spot"], bitget["full"], bitget["sub_uid"]
    passphrase = h.new_passphrase()
    own = h.assert_ok(_post(server, spot, "create-virtual-subaccount-apikey", {
        "subAccountUid": uid, "passphrase": passphrase, "label": "own", "permList": ["spot_trade"]}))
    before = _keys_of(server, full, uid)
    # raising its own key's permissions past its own
    h.assert_error(_post(server, spot, "modify-virtual-subaccount-apikey", {
        "subAccountUid": uid, "subAccountApiKey": own["subAccountApiKey"], "passphrase": passphrase,
        "label": "own", "permList": ["spot_trade", "transfer"], "ipList": []}), *_need("transfer"))
    # changing (here: lifting the allowlist of) a key that holds transfer, which it lacks; the passphrase is
    # checked first, so a wrong one answers 40036 without telling whether the grant would have passed
    strong = next(k for k in before if k["subAccountApiKey"] == bitget["strong_key"])
    assert "transfer" in strong["permList"]
    h.assert_error(_post(server, spot, "modify-virtual-subaccount-apikey", {
        "subAccountUid": uid, "subAccountApiKey": bitget["strong_key"], "passphrase": "Wrongpass12",
        "label": "mine now", "ipList": []}), "40036", "passphrase is error")
    # and a sub-account's permissions, the ceiling of its keys, cannot be raised past its own either
    h.assert_error(_post(server, spot, "modify-virtual-subaccount", {
        "subAccountUid": uid, "permList": ["spot_trade", "transfer"], "status": "normal"}), *_need("transfer"))
    assert _keys_of(server, full, uid) == before


def test_a_weaker_key_cannot_modify_a_stronger_key_even_with_its_passphrase(server: Server) -> None:
    full = h.main_key(server)
    spot = bitget_main(server, full.uid, ["spot_trade"])
    entry = h.batch_entry(permList=["spot_trade", "transfer"], ipList=["127.0.0.1"])
    made = h.assert_ok(_post(server, full, "batch-create-subaccount-and-apikey", [entry]))[0]
    before = _keys_of(server, full, made["subAccountUid"])
    h.assert_error(_post(server, spot, "modify-virtual-subaccount-apikey", {
        "subAccountUid": made["subAccountUid"], "subAccountApiKey": made["subAccountApiKey"],
        "passphrase": entry["passphrase"], "label": "lifted", "ipList": []}), *_need("transfer"))
    assert _keys_of(server, full, made["subAccountUid"]) == before
    assert before[0]["ipList"] == ["127.0.0.1"]
    # the full key may
    h.assert_ok(_post(server, full, "modify-virtual-subaccount-apikey", {
        "subAccountUid": made["subAccountUid"], "subAccountApiKey": made["subAccountApiKey"],
        "passphrase": entry["passphrase"], "label": "lifted", "ipList": []}))


# WhiteBIT ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def whitebit(server: Server) -> dict[str, Any]:
    """A main account with a type 2 and a type 1 key, and a sub-account holding a type 2 key."""
    service = h._operator(server).service
    uid = service.accounts.create_main_account("grants-" + secrets.token_hex(3)).uid
    clients = {}
    for key_type in (2, 1):
        issued = service.keys.issue_main_key(uid, Scheme.WHITEBIT, key_type=key_type)
        assert issued.secret is not None
        clients[key_type] = WhitebitClient(server.base_url, issued.key.api_key, issued.secret)
    sub = clients[2].call(SUB + "create", {"alias": "gr" + secrets.token_hex(4), "shareKyc": True,
                                           "permissions": {"spotEnabled": True, "collateralEnabled": False}},
                          expect=201)
    strong = clients[2].call(KEYS + "create", {"type": 2, "subAccountId": sub["id"], "title": "strong"}, expect=201)
    return {"type2": clients[2], "type1": clients[1], "sub": sub, "strong": strong}


def _wb_keys(client: WhitebitClient, sub_id: str) -> list[dict[str, Any]]:
    return list(client.call(KEYS + "list", {"subAccountId": sub_id})["data"])


def _answer(client: WhitebitClient, path: str, fields: dict[str, Any]) -> tuple[int, Any]:
    response = client.post(path, fields)
    return response.status_code, response.json()


def test_a_type_1_key_cannot_make_a_type_2_key(whitebit: dict[str, Any]) -> None:
    weak, strong, sub = whitebit["type1"], whitebit["type2"], whitebit["sub"]
    before = _wb_keys(strong, sub["id"])
    for key_type in (2, "2"):
        assert _answer(weak, KEYS + "create", {"type": key_type, "subAccountId": sub["id"], "title": "t"}) \
            == NOT_AUTHORIZED
    assert _wb_keys(strong, sub["id"]) == before
    made = weak.call(KEYS + "create", {"type": 1, "subAccountId": sub["id"], "title": "t1"}, expect=201)
    assert made["type"] == 1


def test_a_type_1_key_cannot_change_reset_or_widen_a_type_2_key(whitebit: dict[str, Any]) -> None:
    weak, strong, sub, key = whitebit["type1"], whitebit["type2"], whitebit["sub"], whitebit["strong"]
    strong.call(KEYS + "ip-address/create", {"apiKeyId": key["id"], "ip": "203.0.113.7"}, expect=201)
    before = _wb_keys(strong, sub["id"])
    for path, fields in (
        (KEYS + "edit", {"apiKeyId": key["id"], "title": "mine", "urls": []}),
        (KEYS + "reset", {"apiKeyId": key["id"]}),
        (KEYS + "ip-address/delete", {"apiKeyId": key["id"], "ip": "203.0.113.7"}),
        (KEYS + "ip-address/create", {"apiKeyId": key["id"], "ip": "203.0.113.8"}),
    ):
        assert _answer(weak, path, fields) == NOT_AUTHORIZED, path
    assert _wb_keys(strong, sub["id"]) == before
    # the secret was not reset: the sub-account's key still signs
    sub_client = WhitebitClient(strong.base_url, key["apiKey"], key["apiSecret"])
    response = sub_client.post("/api/v4/sub-account/list", {})
    # verified (a wrong secret is 401 code 10), then refused by its allowlist (403 code 2)
    assert (response.status_code, response.json()["code"]) == (403, 2)
