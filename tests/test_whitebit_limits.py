"""WhiteBIT limits and input rules: at most 50 keys per sub-account and 50 IPs per key (the operator may
change both), duplicate and unknown IPs, and the documented validation answers. Every refusal changes
nothing; every success has the documented status (201 on the three creates) and no numeric ``code``."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clients.whitebit_http import Operator, WhitebitClient
from conftest import Server, make_server

SUB = "/api/v4/sub-account/"
KEYS = "/api/v4/sub-account/api-key/"
IPS = "/api/v4/sub-account/api-key/ip-address/"


@pytest.fixture
def main(server: Server, operator: Operator) -> WhitebitClient:
    return operator.client(server.base_url, "limits")


def new_sub(main: WhitebitClient, **extra: Any) -> dict[str, Any]:
    fields = {
        "alias": "lim" + secrets.token_hex(4),
        "shareKyc": True,
        "permissions": {"spotEnabled": True, "collateralEnabled": False},
        **extra,
    }
    return dict(main.call(SUB + "create", fields, expect=201))


def new_key(main: WhitebitClient, sub: dict[str, Any], key_type: int = 1) -> dict[str, Any]:
    return dict(main.call(KEYS + "create", {"type": key_type, "subAccountId": sub["id"], "title": "k"}, expect=201))


def answer(main: WhitebitClient, path: str, fields: dict[str, Any]) -> tuple[int, Any]:
    response = main.post(path, fields)
    return response.status_code, response.json()


def business(message: str) -> tuple[int, dict[str, Any]]:
    return 400, {"code": 5, "message": message, "errors": {}}


def validation(**field_errors: list[str]) -> tuple[int, dict[str, Any]]:
    errors = {name.replace("__", "."): messages for name, messages in field_errors.items()}
    return 400, {"code": 0, "message": "Validation failed", "errors": errors}


def test_a_sub_account_holds_at_most_50_keys(main: WhitebitClient) -> None:
    sub = new_sub(main)
    for _ in range(50):
        new_key(main, sub)
    fields = {"type": 2, "subAccountId": sub["id"], "title": "one too many"}
    assert answer(main, KEYS + "create", fields) == business("Limit of API keys is reached. Maximum allowed: 50")
    assert len(main.call(KEYS + "list", {"subAccountId": sub["id"]})["data"]) == 50
    # the limit is per sub-account
    assert new_key(main, new_sub(main))["type"] == 1


def test_a_key_holds_at_most_50_ips_one_per_call(main: WhitebitClient) -> None:
    key = new_key(main, new_sub(main))
    for index in range(50):
        status, body = answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": f"10.0.0.{index}"})
        assert status == 201 and len(body["data"]) == index + 1
    refusal = business("You have reached the maximum number of allowed IPs: 50")
    assert answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": "10.0.1.1"}) == refusal
    listed = main.call(IPS + "list", {"apiKeyId": key["id"]})["data"]
    assert listed == [f"10.0.0.{index}" for index in range(50)]


def test_duplicate_unknown_and_invalid_ips_change_nothing(main: WhitebitClient) -> None:
    key = new_key(main, new_sub(main))
    assert answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": "192.168.1.1"}) == (
        201,
        {"data": ["192.168.1.1"]},
    )
    duplicate = business("This IP address is already in allowlist")
    assert answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": "192.168.1.1"}) == duplicate
    unknown = business("IP address 192.168.1.100 is not in the allowlist")
    assert answer(main, IPS + "delete", {"apiKeyId": key["id"], "ip": "192.168.1.100"}) == unknown
    for bad in ("192.168.1", "not-an-ip", 12, ["1.1.1.1"]):
        assert answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": bad}) == validation(
            ip=["Invalid IP address."]
        )
    assert answer(main, IPS + "create", {"apiKeyId": key["id"]}) == validation(ip=["validation.required"])
    assert main.call(IPS + "list", {"apiKeyId": key["id"]}) == {"data": ["192.168.1.1"]}


def test_unknown_keys_are_not_found(main: WhitebitClient, server: Server, operator: Operator) -> None:
    missing = (404, {"message": "API key not found"})
    unknown = {"apiKeyId": "a1b2c3d4-e5f6-7890-abcd-ef1234567890"}
    for path, extra in (
        (KEYS + "delete", {}),
        (KEYS + "reset", {}),
        (KEYS + "edit", {"title": "t", "urls": []}),
        (IPS + "list", {}),
        (IPS + "create", {"ip": "1.1.1.1"}),
        (IPS + "delete", {"ip": "1.1.1.1"}),
    ):
        assert answer(main, path, {**unknown, **extra}) == missing, path
    # another main account's key is unknown too
    key = new_key(main, new_sub(main))
    stranger = operator.client(server.base_url, "stranger")
    assert answer(stranger, KEYS + "reset", {"apiKeyId": key["id"]}) == missing
    assert answer(stranger, SUB + "block", {"id": key["subAccountId"]}) == validation(id=["Sub-account do not exists"])
    assert main.call(KEYS + "list", {})["data"][0]["apiKey"] == key["apiKey"]


def test_sub_account_create_validates_like_whitebit(main: WhitebitClient) -> None:
    create = SUB + "create"
    assert answer(main, create, {}) == validation(
        alias=["The alias field is required."],
        email=["The email field is required."],
        permissions=["The permissions field is required."],
    )
    fields = {"alias": "x" + secrets.token_hex(4), "email": "not-an-email", "permissions": {"spotEnabled": True}}
    assert answer(main, create, fields) == validation(
        email=["Email is invalid."],
        permissions__collateralEnabled=["The permissions.collateralEnabled field is required."],
    )
    fields = {"alias": 5, "shareKyc": "yes", "permissions": {"spotEnabled": 1, "collateralEnabled": False}}
    assert answer(main, create, fields) == validation(
        alias=["The alias must be a string."],
        shareKyc=["The shareKyc field must be true or false."],
        email=["The email field is required."],
        permissions__spotEnabled=["The permissions.spotEnabled field must be true or false."],
    )
    assert main.call(SUB + "list")["data"] == []

    made = new_sub(main, email="example@gmail.com", shareKyc=False)
    taken = {"alias": made["alias"].upper(), "shareKyc": True, "permissions": made["permissions"]}
    assert answer(main, create, taken) == validation(alias=["Alias already exists."])
    assert [a["id"] for a in main.call(SUB + "list")["data"]] == [made["id"]]


def test_sub_account_edit_block_and_list_validate(main: WhitebitClient) -> None:
    one, two = new_sub(main), new_sub(main)
    edit = {"id": one["id"], "alias": two["alias"], "permissions": {"spotEnabled": False, "collateralEnabled": False}}
    assert answer(main, SUB + "edit", edit) == validation(alias=["Alias already exists."])
    assert answer(main, SUB + "edit", {"id": one["id"]}) == validation(
        alias=["The alias field is required."], permissions=["The permissions field is required."]
    )
    assert answer(main, SUB + "unblock", {"id": one["id"]}) == validation(account=["Sub-account already unblocked"])
    assert answer(main, SUB + "block", {}) == validation(id=["The id field is required."])
    assert answer(main, SUB + "delete", {"id": "nope"}) == validation(id=["Sub-account do not exists"])
    assert answer(main, SUB + "list", {"limit": 0}) == validation(limit=["The limit must be at least 1."])
    assert answer(main, SUB + "list", {"limit": 101}) == validation(limit=["The limit must not be greater than 100."])
    for odd in ("ten", "²", "١٢", 1.5, [1], {"a": 1}, False):
        assert answer(main, SUB + "list", {"limit": odd}) == validation(limit=["The limit must be an integer."])
    assert answer(main, SUB + "list", {"offset": 10_001}) == validation(
        offset=["The offset must not be greater than 10000."]
    )
    assert main.call(SUB + "list", {"limit": "1"})["data"][0]["id"] == two["id"]
    names = {a["alias"] for a in main.call(SUB + "list")["data"]}
    assert names == {one["alias"], two["alias"]}


def test_api_key_create_edit_and_list_validate(main: WhitebitClient) -> None:
    sub = new_sub(main)
    create = KEYS + "create"
    assert answer(main, create, {}) == validation(
        type=["validation.required"], subAccountId=["validation.required"], title=["validation.required"]
    )
    for bad in (3, 0, True, "trade"):
        fields = {"type": bad, "subAccountId": sub["id"], "title": "t"}
        assert answer(main, create, fields) == validation(type=["validation.in"])
    fields = {"type": 1, "subAccountId": "8e667b4a-0b71-4988-8af5-9474dbfaeb51", "title": "t"}
    assert answer(main, create, fields) == validation(subAccountId=["validation.exists"])
    assert answer(main, create, {"type": 1, "subAccountId": sub["id"], "title": "t" * 65}) == validation(
        title=["validation.max.string"]
    )
    key = new_key(main, sub)

    edit = KEYS + "edit"
    assert answer(main, edit, {"apiKeyId": key["id"]}) == validation(
        title=["validation.required"], urls=["validation.required"]
    )
    assert answer(main, edit, {"apiKeyId": key["id"], "title": "t", "urls": "all"}) == validation(
        urls=["validation.array"]
    )
    fields = {"apiKeyId": key["id"], "title": "t", "urls": [{"url": "https://example.com/x"}, {"enable": True}]}
    assert answer(main, edit, fields) == validation(
        urls__0__url=["validation.regex"], urls__1__url=["validation.required"]
    )
    restricted = [{"url": "/api/v4/main-account/address", "enable": True}, {"url": SUB + "create", "enable": True}]
    assert answer(main, edit, {"apiKeyId": key["id"], "title": "t", "urls": restricted}) == business(
        "The following URLs are restricted for sub-account API keys: /api/v4/main-account/address, " + SUB + "create"
    )
    listed = main.call(KEYS + "list", {"subAccountId": sub["id"]})["data"]
    assert [(k["title"], k["restrictAccess"]) for k in listed] == [("k", False)]

    assert answer(main, KEYS + "list", {"limit": "x"}) == validation(limit=["validation.integer"])
    assert answer(main, KEYS + "list", {"limit": 101}) == validation(limit=["validation.max.numeric"])
    assert answer(main, KEYS + "list", {"subAccountId": "nope"}) == validation(subAccountId=["validation.exists"])


def test_successes_have_the_documented_statuses_and_no_code(main: WhitebitClient) -> None:
    sub_response = main.post(
        SUB + "create",
        {
            "alias": "st" + secrets.token_hex(4),
            "shareKyc": True,
            "permissions": {"spotEnabled": True, "collateralEnabled": True},
        },
    )
    sub = sub_response.json()
    key_response = main.post(KEYS + "create", {"type": 1, "subAccountId": sub["id"], "title": "t"})
    key = key_response.json()
    calls = [
        (SUB + "create", sub_response),
        (KEYS + "create", key_response),
        (SUB + "list", main.post(SUB + "list")),
        (
            SUB + "edit",
            main.post(SUB + "edit", {"id": sub["id"], "alias": sub["alias"], "permissions": sub["permissions"]}),
        ),
        (SUB + "block", main.post(SUB + "block", {"id": sub["id"]})),
        (SUB + "unblock", main.post(SUB + "unblock", {"id": sub["id"]})),
        (KEYS + "list", main.post(KEYS + "list")),
        (KEYS + "edit", main.post(KEYS + "edit", {"apiKeyId": key["id"], "title": "t2", "urls": []})),
        (IPS + "create", main.post(IPS + "create", {"apiKeyId": key["id"], "ip": "1.2.3.4"})),
        (IPS + "list", main.post(IPS + "list", {"apiKeyId": key["id"]})),
        (IPS + "delete", main.post(IPS + "delete", {"apiKeyId": key["id"], "ip": "1.2.3.4"})),
        (KEYS + "reset", main.post(KEYS + "reset", {"apiKeyId": key["id"]})),
        (KEYS + "delete", main.post(KEYS + "delete", {"apiKeyId": key["id"]})),
        (SUB + "delete", main.post(SUB + "delete", {"id": sub["id"]})),
    ]
    creates = {SUB + "create", KEYS + "create", IPS + "create"}
    for path, response in calls:
        assert response.status_code == (201 if path in creates else 200), (path, response.text)
        assert "code" not in response.json(), (path, response.text)
        assert response.headers["content-type"] == "application/json"
        if path.endswith(("/edit", "/block", "/unblock", "/delete")) and not path.startswith(IPS):
            assert response.json() == {}, path


# the operator's policy -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    policy = {
        "whitebit": {
            "keys_per_sub_account": 2,
            "ips_per_key": 1,
            "sub_accounts_per_main": 2,
            "rate_limits": {"sub-account/api-key/ip-address/list": "3/minute"},
        }
    }
    srv = make_server(Path(tmp_path_factory.mktemp("keyplane-policy")), {"KEYPLANE_POLICY": json.dumps(policy)})
    srv.start()
    yield srv
    srv.stop()


def test_the_operator_can_change_the_whitebit_limits(small_server: Server) -> None:
    operator = Operator(small_server.database_url)
    try:
        main = operator.client(small_server.base_url, "policy")
    finally:
        operator.close()
    sub = new_sub(main)
    new_key(main, sub)
    key = new_key(main, sub)
    refusal = business("Limit of API keys is reached. Maximum allowed: 2")
    assert answer(main, KEYS + "create", {"type": 1, "subAccountId": sub["id"], "title": "third"}) == refusal
    main.call(IPS + "create", {"apiKeyId": key["id"], "ip": "10.9.9.9"}, expect=201)
    refusal = business("You have reached the maximum number of allowed IPs: 1")
    assert answer(main, IPS + "create", {"apiKeyId": key["id"], "ip": "10.9.9.8"}) == refusal
    new_sub(main)
    fields = {
        "alias": "third" + secrets.token_hex(3),
        "shareKyc": True,
        "permissions": {"spotEnabled": True, "collateralEnabled": True},
    }
    assert answer(main, SUB + "create", fields) == business("Limit of sub-accounts is reached. Maximum allowed: 2")
    assert len(main.call(SUB + "list")["data"]) == 2
    assert len(main.call(KEYS + "list")["data"]) == 2


def test_odd_values_in_every_field_get_whitebits_envelope_never_a_500(main: WhitebitClient) -> None:
    sub = new_sub(main)
    key = new_key(main, sub)
    odd_values: list[Any] = [None, "", "²", "١٢", 1.5, -1, True, [], [1], {}, {"a": 1}, "x" * 300, "\u0000"]
    routes = {
        SUB + "create": ("alias", "email", "shareKyc", "permissions"),
        SUB + "edit": ("id", "alias", "permissions"),
        SUB + "delete": ("id",),
        SUB + "list": ("search", "limit", "offset"),
        SUB + "block": ("id",),
        KEYS + "create": ("type", "subAccountId", "title"),
        KEYS + "edit": ("apiKeyId", "title", "urls"),
        KEYS + "list": ("subAccountId", "limit", "offset"),
        IPS + "create": ("apiKeyId", "ip"),
        IPS + "delete": ("apiKeyId", "ip"),
    }
    valid = {
        "alias": "odd" + secrets.token_hex(4), "email": "odd@example.com", "shareKyc": True,
        "permissions": {"spotEnabled": True, "collateralEnabled": False}, "id": sub["id"], "search": "odd",
        "limit": 5, "offset": 0, "type": 1, "subAccountId": sub["id"], "title": "odd", "apiKeyId": key["id"],
        "urls": [], "ip": "10.20.30.40",
    }  # fmt: skip
    for path, names in routes.items():
        for name in names:
            for value in odd_values:
                fields = {n: valid[n] for n in names} | {name: value}
                if path == SUB + "create":
                    fields["alias"] = "odd" + secrets.token_hex(4) if name != "alias" else value
                response = main.post(path, fields)
                assert response.status_code in (200, 201, 400, 404), (path, name, value, response.text)
                body = response.json()
                if response.status_code == 400:
                    assert isinstance(body["code"], int) and body["message"] and isinstance(body["errors"], dict)
                elif response.status_code == 404:
                    assert set(body) == {"message"}
                else:
                    assert "code" not in body


def test_over_the_rate_limit_is_429_too_many_requests(small_server: Server) -> None:
    operator = Operator(small_server.database_url)
    try:
        main = operator.client(small_server.base_url, "rate")
        other = operator.client(small_server.base_url, "rate-other")
    finally:
        operator.close()
    key = new_key(main, new_sub(main))
    for _ in range(3):
        main.call(IPS + "list", {"apiKeyId": key["id"]})
    too_many = (429, {"code": 0, "message": "Too many requests.", "errors": {}})
    assert answer(main, IPS + "list", {"apiKeyId": key["id"]}) == too_many
    main.call(KEYS + "list", {})  # counted per endpoint
    assert answer(other, IPS + "list", {"apiKeyId": key["id"]}) == (404, {"message": "API key not found"})
