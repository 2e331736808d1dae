"""Every documented limit and validation rule of the Bitget family, hit over HTTP: the exact code and
message, and proof (by listing afterwards) that nothing was created."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bitget_helpers as h
from conftest import Server, make_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-validation")))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def main(server: Server) -> h.MainKey:
    """A fresh main account per test, so that no test spends another's rate limit or sub-account quota."""
    return h.main_key(server)


@pytest.fixture
def raw(server: Server, main: h.MainKey) -> Iterator[h.Raw]:
    client = h.raw_main(server, main)
    yield client
    client.close()


def _one_sub(raw: h.Raw, **fields: Any) -> dict[str, Any]:
    entry = h.batch_entry(**fields)
    (made,) = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [entry]))
    made["passphrase"] = entry["passphrase"]
    return dict(made)


NAME_ERROR = ("40055", "subName must be an English letter with a length of 8")
PASSPHRASE_ERROR = ("40070", "passphrase 8-32 characters with letters and numbers")
LABEL_ERROR = ("40056", "remark must be length of 1 ~ 20")
IP_LIMIT_ERROR = ("40058", "Parameter ipList Only a maximum of 30 is allowed")
SUB_LIMIT_ERROR = ("40032", "The Max of sub-account created has reached the limit")
KEY_LIMIT_ERROR = ("40063", "API exceeds the maximum limit added")
NAME_TAKEN_ERROR = ("40060", "subNames already exists")
NOT_MAIN_ERROR = ("40048", "The user's ApiKey must be the parent account")


# sub-account names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abcdefg", "abcdefghi", "abcdefg1", "abcd efg", "abcdéfgh", "ABCDEFG_", 12345678,
                                  ["abcdefgh"]])
def test_batch_create_rejects_a_name_that_is_not_8_english_letters(raw: h.Raw, name: object) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(), h.batch_entry(name)]),
                   *NAME_ERROR)
    assert h.sub_accounts(raw) == []


@pytest.mark.parametrize("name", ["abcdefg", "abcdefghi", "12345678", "", None])
def test_create_virtual_subaccount_rejects_a_bad_name_and_creates_none(raw: h.Raw, name: object) -> None:
    h.assert_error(raw.post("create-virtual-subaccount", {"subAccountList": [h.new_name(), name]}), *NAME_ERROR)
    assert h.sub_accounts(raw) == []


def test_names_of_8_letters_in_either_case_are_accepted(raw: h.Raw) -> None:
    names = [h.new_name().upper(), h.new_name().lower()]
    created = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": names}))
    assert [a["subaAccountName"] for a in created["successList"]] == names
    assert sorted(a["subAccountName"] for a in h.sub_accounts(raw)) == sorted(names)


def test_names_are_unique_across_the_venue_even_across_main_accounts(server: Server, raw: h.Raw) -> None:
    name = h.new_name()
    _one_sub(raw, subAccountName=name)
    other = h.raw_main(server, h.main_key(server))
    try:
        for taken in (name, name.swapcase()):
            h.assert_error(other.post("batch-create-subaccount-and-apikey", [h.batch_entry(taken)]),
                           *NAME_TAKEN_ERROR)
            h.paced()
        # create-virtual-subaccount documents a per-name failureList ("Alias already exists")
        free = h.new_name()
        outcome = h.assert_ok(other.post("create-virtual-subaccount", {"subAccountList": [name, free]}))
        assert outcome["failureList"] == [{"subaAccountName": name}]
        assert [a["subaAccountName"] for a in outcome["successList"]] == [free]
        assert [a["subAccountName"] for a in h.sub_accounts(other)] == [free]
    finally:
        other.close()
    assert [a["subAccountName"] for a in h.sub_accounts(raw)] == [name]


def test_batch_create_rejects_the_same_name_twice_in_one_request(raw: h.Raw) -> None:
    name = h.new_name()
    response = raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(name), h.batch_entry(name.lower())])
    h.assert_error(response, "40071", "subName exist duplication")
    assert h.sub_accounts(raw) == []


def test_create_virtual_subaccount_lists_a_name_repeated_in_the_request_as_failed(raw: h.Raw) -> None:
    name = h.new_name()
    outcome = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [name, name]}))
    assert outcome["failureList"] == [{"subaAccountName": name}]
    assert len(outcome["successList"]) == 1 and len(h.sub_accounts(raw)) == 1


# passphrases and labels ----------------------------------------------------------------------------


CYRILLIC_PASSWORD = "\u043f\u0430\u0440\u043e\u043b\u044c123"


@pytest.mark.parametrize("passphrase", ["abc1234", "a" * 33, "abcd123!", "abcd 1234", CYRILLIC_PASSWORD, 12345678])
def test_batch_create_rejects_a_passphrase_outside_8_to_32_letters_and_digits(raw: h.Raw, passphrase: object) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(passphrase=passphrase)]),
                   *PASSPHRASE_ERROR)
    assert h.sub_accounts(raw) == []


@pytest.mark.parametrize("passphrase", ["12345678", "abcdefgh", "A1" * 16])
def test_passphrases_of_8_to_32_letters_and_digits_are_accepted(server: Server, raw: h.Raw, passphrase: str) -> None:
    made = _one_sub(raw, passphrase=passphrase)
    client = h.Raw(server, made["subAccountApiKey"], made["secretKey"], passphrase)
    try:
        assert h.assert_ok(client.request("GET", "/api/v2/spot/account/info"))["userId"] == made["subAccountUid"]
    finally:
        client.close()


def test_create_apikey_rejects_a_bad_passphrase_and_creates_no_key(raw: h.Raw) -> None:
    sub = _one_sub(raw)
    for bad in ("short1", "x" * 33, "with-dash1"):
        body = {"subAccountUid": sub["subAccountUid"], "passphrase": bad, "label": "l"}
        h.assert_error(raw.post("create-virtual-subaccount-apikey", body), *PASSPHRASE_ERROR)
    assert len(h.keys_of(raw, sub["subAccountUid"])) == 1


@pytest.mark.parametrize("label", ["x" * 21, 12, ["a"]])
def test_batch_create_rejects_a_label_outside_1_to_20(raw: h.Raw, label: object) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(label=label)]), *LABEL_ERROR)
    assert h.sub_accounts(raw) == []


def test_a_missing_or_empty_label_is_a_missing_parameter(raw: h.Raw) -> None:
    entry = h.batch_entry()
    del entry["label"]
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [entry]), "40019", "Parameter label cannot be empty")
    h.paced()
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(label="")]),
                   "40019", "Parameter label cannot be empty")
    assert h.sub_accounts(raw) == []


def test_labels_of_1_and_20_characters_are_accepted(raw: h.Raw) -> None:
    sub = _one_sub(raw, label="x" * 20)
    assert sub["label"] == "x" * 20
    key = h.assert_ok(raw.post("create-virtual-subaccount-apikey", {
        "subAccountUid": sub["subAccountUid"], "passphrase": h.new_passphrase(), "label": "y"}))
    assert key["label"] == "y"


def test_create_apikey_rejects_a_long_label_and_creates_no_key(raw: h.Raw) -> None:
    sub = _one_sub(raw)
    body = {"subAccountUid": sub["subAccountUid"], "passphrase": h.new_passphrase(), "label": "z" * 21}
    h.assert_error(raw.post("create-virtual-subaccount-apikey", body), *LABEL_ERROR)
    assert len(h.keys_of(raw, sub["subAccountUid"])) == 1


# IP allowlists -------------------------------------------------------------------------------------


def test_at_most_30_ips_per_key(raw: h.Raw) -> None:
    ips = [f"10.0.0.{i}" for i in range(31)]
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(ipList=ips)]), *IP_LIMIT_ERROR)
    assert h.sub_accounts(raw) == []
    h.paced()
    sub = _one_sub(raw, ipList=ips[:30])
    assert sub["ipList"] == ips[:30]
    uid, api_key = sub["subAccountUid"], sub["subAccountApiKey"]
    body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "l", "ipList": ips}
    h.assert_error(raw.post("create-virtual-subaccount-apikey", body), *IP_LIMIT_ERROR)
    modify = {"subAccountUid": uid, "subAccountApiKey": api_key, "passphrase": sub["passphrase"], "label": "l",
              "ipList": ips}
    h.assert_error(raw.post("modify-virtual-subaccount-apikey", modify), *IP_LIMIT_ERROR)
    (key,) = h.keys_of(raw, uid)
    assert key["ipList"] == ips[:30] and key["label"] == "lbl"


@pytest.mark.parametrize("entry", ["300.1.1.1", "10.0.0.0/33", "1.2.3", "example.com", "", "2001:db8::/129",
                                  "10.0.0.1/8/8", 167772161, None])
def test_a_bad_ip_or_cidr_entry_is_refused(raw: h.Raw, entry: object) -> None:
    response = raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(ipList=["127.0.0.1", entry])])
    # 40057 names the parameter and the refused entry, as JSON text
    h.assert_error(response, "40057", f"Parameter ipList {json.dumps(entry)} does not meet specification")
    assert h.sub_accounts(raw) == []


def test_ip_list_that_is_not_a_list_is_a_parameter_error(raw: h.Raw) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(ipList="127.0.0.1")]),
                   "40020", "Parameter ipList error")
    assert h.sub_accounts(raw) == []


def test_ipv6_and_cidr_entries_are_accepted(raw: h.Raw) -> None:
    ips = ["2001:db8::1", "2001:DB8:0:0::/48", "10.0.0.0/8", "192.168.1.7/24", "::ffff:1.2.3.4", "127.0.0.1"]
    sub = _one_sub(raw, ipList=ips)
    expected = ["2001:db8::1", "2001:db8::/48", "10.0.0.0/8", "192.168.1.0/24", "1.2.3.4", "127.0.0.1"]
    assert sub["ipList"] == expected
    (key,) = h.keys_of(raw, sub["subAccountUid"])
    assert key["ipList"] == expected


# permissions ---------------------------------------------------------------------------------------


def test_an_unknown_permission_is_refused(raw: h.Raw) -> None:
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(permList=["withdraw"])]),
                   "40057", 'Parameter permList "withdraw" does not meet specification')
    assert h.sub_accounts(raw) == []


def test_comma_joined_permissions_as_in_the_docs_examples_are_accepted(raw: h.Raw) -> None:
    sub = _one_sub(raw, permList=["spot_trade,contract_trade", "read"])
    assert sub["permList"] == ["spot_trade", "contract_trade", "read"]


# modify-virtual-subaccount-apikey --------------------------------------------------------------------


def _modify(raw: h.Raw, sub: dict[str, Any], **fields: Any) -> Any:
    body = {"subAccountUid": sub["subAccountUid"], "subAccountApiKey": sub["subAccountApiKey"],
            "passphrase": sub["passphrase"], "label": "changed", **fields}
    return raw.post("modify-virtual-subaccount-apikey", body)


def test_modify_apikey_without_ip_list_empties_the_allowlist(raw: h.Raw) -> None:
    sub = _one_sub(raw, ipList=["127.0.0.1", "10.0.0.0/8"])
    assert h.assert_ok(_modify(raw, sub))["ipList"] == []
    assert h.keys_of(raw, sub["subAccountUid"])[0]["ipList"] == []


def test_modify_apikey_without_perm_list_keeps_the_permissions(raw: h.Raw) -> None:
    sub = _one_sub(raw, permList=["spot_trade", "read"])
    assert h.assert_ok(_modify(raw, sub, ipList=["127.0.0.1"]))["permList"] == ["spot_trade", "read"]
    key = h.keys_of(raw, sub["subAccountUid"])[0]
    assert key["permList"] == ["spot_trade", "read"] and key["ipList"] == ["127.0.0.1"]


def test_modify_apikey_with_empty_perm_list_removes_the_permissions(server: Server, raw: h.Raw) -> None:
    sub = _one_sub(raw, permList=["spot_trade", "read"])
    assert h.assert_ok(_modify(raw, sub, permList=[]))["permList"] == []
    assert h.keys_of(raw, sub["subAccountUid"])[0]["permList"] == []
    client = h.Raw(server, sub["subAccountApiKey"], sub["secretKey"], sub["passphrase"])
    try:  # the key itself sees the change at once: account info needs a read (or trade) permission
        h.assert_error(client.request("GET", "/api/v2/spot/account/info"), "40014",
                       "Incorrect permissions, need read permissions")
    finally:
        client.close()


def test_modify_apikey_shows_no_secret(raw: h.Raw) -> None:
    sub = _one_sub(raw)
    data = h.assert_ok(_modify(raw, sub, permList=["read"]))
    assert data["secretKey"] == "" and data["label"] == "changed"


def test_modify_apikey_with_a_wrong_passphrase_changes_nothing(raw: h.Raw) -> None:
    sub = _one_sub(raw, ipList=["127.0.0.1"])
    h.assert_error(_modify(raw, sub, passphrase="other1234", permList=[]), "40036", "passphrase is error")
    key = h.keys_of(raw, sub["subAccountUid"])[0]
    assert key["ipList"] == ["127.0.0.1"] and key["label"] == "lbl" and key["permList"] == sub["permList"]


def test_modify_apikey_of_another_sub_account_is_refused(raw: h.Raw) -> None:
    first = _one_sub(raw)
    h.paced()
    second = _one_sub(raw)
    h.assert_error(_modify(raw, {**first, "subAccountUid": second["subAccountUid"]}),
                   "40065", "This subApikey does not exist")
    h.assert_error(_modify(raw, {**first, "subAccountApiKey": "bg_" + "1" * 32}), "40065",
                   "This subApikey does not exist")


def test_a_main_key_cannot_be_modified_through_the_sub_account_endpoints(server: Server, main: h.MainKey,
                                                                         raw: h.Raw) -> None:
    # else a main key could drop its own IP binding, or another main account's
    body = {"subAccountUid": main.uid, "subAccountApiKey": main.api_key, "passphrase": main.passphrase,
            "label": "mine"}
    h.assert_error(raw.post("modify-virtual-subaccount-apikey", body), "40065", "This subApikey does not exist")
    h.assert_error(raw.post("create-virtual-subaccount-apikey",
                            {"subAccountUid": main.uid, "passphrase": h.new_passphrase(), "label": "x"}),
                   "40028", "This subUid does not belong to this account")
    h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": main.uid, "permList": [],
                                                          "status": "freeze"}),
                   "40028", "This subUid does not belong to this account")
    h.assert_ok(raw.get("virtual-subaccount-list"))  # still bound, still working


def test_another_main_accounts_sub_account_is_not_found(server: Server, raw: h.Raw) -> None:
    sub = _one_sub(raw)
    other = h.raw_main(server, h.main_key(server))
    try:
        uid = sub["subAccountUid"]
        body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "x"}
        h.assert_error(other.post("create-virtual-subaccount-apikey", body),
                       "40028", "This subUid does not belong to this account")
        h.assert_error(other.post("modify-virtual-subaccount", {"subAccountUid": uid, "permList": ["read"],
                                                                "status": "freeze"}),
                       "40028", "This subUid does not belong to this account")
        h.assert_error(other.get("virtual-subaccount-apikey-list", f"subAccountUid={uid}"),
                       "40028", "This subUid does not belong to this account")
        h.assert_error(_modify(other, sub), "40065", "This subApikey does not exist")
    finally:
        other.close()
    assert h.sub_accounts(raw)[0]["status"] == "normal"
    assert h.keys_of(raw, sub["subAccountUid"])[0]["label"] == "lbl"


# limits --------------------------------------------------------------------------------------------


def test_at_most_20_sub_accounts_per_main_account(raw: h.Raw) -> None:
    names = [h.new_name() for _ in range(19)]
    assert len(h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": names}))["successList"]) == 19
    late = [h.new_name(), h.new_name()]
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(n) for n in late]), *SUB_LIMIT_ERROR)
    assert len(h.sub_accounts(raw)) == 19
    # create-virtual-subaccount makes what fits and lists the rest as failed
    outcome = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": late}))
    assert [a["subaAccountName"] for a in outcome["successList"]] == late[:1]
    assert outcome["failureList"] == [{"subaAccountName": late[1]}]
    assert len(h.sub_accounts(raw)) == 20
    h.paced()
    h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry()]), *SUB_LIMIT_ERROR)
    assert len(h.sub_accounts(raw)) == 20


def test_at_most_10_keys_per_sub_account(raw: h.Raw) -> None:
    sub = _one_sub(raw)
    uid = sub["subAccountUid"]
    for index in range(9):
        body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": f"k{index}"}
        h.assert_ok(raw.post("create-virtual-subaccount-apikey", body))
        time.sleep(0.21)  # 5/s
    body = {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "eleventh"}
    h.assert_error(raw.post("create-virtual-subaccount-apikey", body), *KEY_LIMIT_ERROR)
    keys = h.keys_of(raw, uid)
    assert len(keys) == 10 and "eleventh" not in {k["label"] for k in keys}


def test_batch_create_rejects_sixth_entry(raw: h.Raw) -> None:
    response = raw.post("batch-create-subaccount-and-apikey", [h.batch_entry() for _ in range(6)])
    h.assert_error(response, "40058", "Parameter subAccountList Only a maximum of 5 is allowed")
    assert h.sub_accounts(raw) == []
    h.paced()
    assert len(h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry() for _ in range(5)]))) == 5


# who may call ----------------------------------------------------------------------------------------

MANAGEMENT_CALLS: list[tuple[str, str, Any]] = [
    ("POST", "create-virtual-subaccount", {"subAccountList": ["abcdefgh"]}),
    ("POST", "modify-virtual-subaccount", {"subAccountUid": "1", "permList": ["read"], "status": "normal"}),
    ("POST", "batch-create-subaccount-and-apikey", [{"subAccountName": "abcdefgh", "passphrase": "abcd1234",
                                                    "label": "l"}]),
    ("GET", "virtual-subaccount-list", ""),
    ("POST", "create-virtual-subaccount-apikey", {"subAccountUid": "1", "passphrase": "abcd1234", "label": "l"}),
    ("POST", "modify-virtual-subaccount-apikey", {"subAccountUid": "1", "subAccountApiKey": "x",
                                                  "passphrase": "abcd1234", "label": "l"}),
    ("GET", "virtual-subaccount-apikey-list", "subAccountUid=1"),
]


def _call(client: h.Raw, method: str, name: str, payload: Any) -> Any:
    return client.post(name, payload) if method == "POST" else client.get(name, payload)


def test_a_sub_account_key_may_call_no_management_endpoint(server: Server, raw: h.Raw) -> None:
    sub = _one_sub(raw, ipList=["127.0.0.1"])  # even one bound to an IP
    client = h.Raw(server, sub["subAccountApiKey"], sub["secretKey"], sub["passphrase"])
    try:
        for method, name, payload in MANAGEMENT_CALLS:
            h.assert_error(_call(client, method, name, payload), *NOT_MAIN_ERROR)
    finally:
        client.close()
    assert [a["subAccountUid"] for a in h.sub_accounts(raw)] == [sub["subAccountUid"]]


def test_a_main_key_not_bound_to_an_ip_may_call_no_management_endpoint(server: Server) -> None:
    main = h.main_key(server, ips=())
    client = h.raw_main(server, main)
    try:
        for method, name, payload in MANAGEMENT_CALLS:
            h.assert_error(_call(client, method, name, payload), "40018", "Invalid IP")
        assert h.assert_ok(client.request("GET", "/api/v2/spot/account/info"))["userId"] == main.uid
    finally:
        client.close()
    bound = h.raw_main(server, h.main_key(server, main.uid))
    try:
        assert h.sub_accounts(bound) == []
    finally:
        bound.close()


# rate limits (per endpoint, per main-account UID) --------------------------------------------------------


def _assert_rate_limited(response: Any) -> None:
    body = response.json()
    assert response.status_code == 429, response.text
    assert set(body) == {"code", "msg", "requestTime", "data"}
    assert (body["code"], body["msg"], body["data"]) == ("429", "Too Many Requests", None)
    assert isinstance(body["requestTime"], int)


def test_batch_create_is_limited_to_1_per_second_per_uid(server: Server, raw: h.Raw, main: h.MainKey) -> None:
    same_uid = h.raw_main(server, h.main_key(server, main.uid))
    other = h.raw_main(server, h.main_key(server))
    h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry()]))
    refused = h.batch_entry()
    _assert_rate_limited(raw.post("batch-create-subaccount-and-apikey", [refused]))
    try:
        # another key of the same main account shares the limit; another main account does not
        _assert_rate_limited(same_uid.post("batch-create-subaccount-and-apikey", [h.batch_entry()]))
        h.assert_ok(other.post("batch-create-subaccount-and-apikey", [h.batch_entry()]))
    finally:
        same_uid.close()
        other.close()
    assert refused["subAccountName"] not in {a["subAccountName"] for a in h.sub_accounts(raw)}
    assert len(h.sub_accounts(raw)) == 1
    h.paced()
    h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [refused]))


def test_other_posts_are_limited_to_5_per_second_per_uid(raw: h.Raw) -> None:
    names = [h.new_name() for _ in range(6)]
    started = time.monotonic()
    for name in names[:5]:
        h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [name]}))
    _assert_rate_limited(raw.post("create-virtual-subaccount", {"subAccountList": [names[5]]}))
    assert time.monotonic() - started < 1
    assert len(h.sub_accounts(raw)) == 5
    # the limit is per endpoint: modify-virtual-subaccount has its own five
    uid = h.sub_accounts(raw)[0]["subAccountUid"]
    for _ in range(5):
        h.assert_ok(raw.post("modify-virtual-subaccount", {"subAccountUid": uid, "permList": ["read"],
                                                           "status": "normal"}))
    _assert_rate_limited(raw.post("modify-virtual-subaccount", {"subAccountUid": uid, "permList": ["read"],
                                                                "status": "freeze"}))
    assert h.sub_accounts(raw)[0]["status"] == "normal"


def test_lists_are_limited_to_10_per_second_per_uid(raw: h.Raw) -> None:
    started = time.monotonic()
    for _ in range(10):
        h.assert_ok(raw.get("virtual-subaccount-list"))
    _assert_rate_limited(raw.get("virtual-subaccount-list"))
    assert time.monotonic() - started < 1
    h.paced()
    h.assert_ok(raw.get("virtual-subaccount-list"))


def test_a_refused_signature_does_not_spend_the_rate_limit(raw: h.Raw) -> None:
    for _ in range(15):
        h.assert_error(raw.get("virtual-subaccount-list", sign_with="0" * 64), "40009", "sign signature error")
    for _ in range(10):
        h.assert_ok(raw.get("virtual-subaccount-list"))


# the documented limits are the operator's to change --------------------------------------------------------

OVERRIDES = {
    "bitget": {
        "sub_accounts_per_main": 3,
        "keys_per_sub_account": 2,
        "ips_per_key": 2,
        "batch_size": 2,
        "rate_limits": {"virtual-subaccount-list": "2/second"},
    }
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(Path(tmp_path_factory.mktemp("bitget-policy")),
                              {"KEYPLANE_POLICY": json.dumps(OVERRIDES)}))
    srv.start()
    yield srv
    srv.stop()


def test_operator_policy_overrides_the_documented_limits(tuned: Server) -> None:
    raw = h.raw_main(tuned, h.main_key(tuned))
    try:
        h.assert_error(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry() for _ in range(3)]),
                       "40058", "Parameter subAccountList Only a maximum of 2 is allowed")
        h.paced()
        h.assert_error(raw.post("batch-create-subaccount-and-apikey",
                                [h.batch_entry(ipList=["10.0.0.1", "10.0.0.2", "10.0.0.3"])]),
                       "40058", "Parameter ipList Only a maximum of 2 is allowed")
        h.paced()
        made = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [h.batch_entry(), h.batch_entry()]))
        uid = made[0]["subAccountUid"]
        h.assert_ok(raw.post("create-virtual-subaccount-apikey",
                             {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "2nd"}))
        h.assert_error(raw.post("create-virtual-subaccount-apikey",
                                {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": "3rd"}),
                       *KEY_LIMIT_ERROR)
        outcome = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [h.new_name(), h.new_name()]}))
        assert len(outcome["successList"]) == 1 and len(outcome["failureList"]) == 1
        h.assert_ok(raw.get("virtual-subaccount-list"))
        h.assert_ok(raw.get("virtual-subaccount-list"))
        _assert_rate_limited(raw.get("virtual-subaccount-list"))
        h.paced()
        assert len(h.sub_accounts(raw)) == 3
    finally:
        raw.close()


def test_a_mistyped_policy_stops_the_server_at_start(tmp_path: Path) -> None:
    # before, a string limit started fine and then answered every create with HTTP 500
    srv = make_server(tmp_path, {"KEYPLANE_POLICY": '{"bitget":{"sub_accounts_per_main":"3"}}'})
    with pytest.raises(RuntimeError) as failed:
        srv.start()
    srv.stop()
    assert "bitget.sub_accounts_per_main must be a positive integer" in str(failed.value)


def test_a_request_from_a_wrong_ip_does_not_spend_the_rate_limit(server: Server, main: h.MainKey, raw: h.Raw) -> None:
    elsewhere = h.raw_main(server, main, local_address="127.0.0.2")
    try:
        for _ in range(15):
            h.assert_error(elsewhere.get("virtual-subaccount-list"), "40018", "Invalid IP")
    finally:
        elsewhere.close()
    for _ in range(10):
        h.assert_ok(raw.get("virtual-subaccount-list"))


@pytest.fixture(scope="module")
def roomy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Room for more sub-accounts than one page holds."""
    policy = {"bitget": {"sub_accounts_per_main": 120, "rate_limits": {"create-virtual-subaccount": "100/second"}}}
    srv = h.track(make_server(Path(tmp_path_factory.mktemp("bitget-roomy")), {"KEYPLANE_POLICY": json.dumps(policy)}))
    srv.start()
    yield srv
    srv.stop()


def test_the_list_pages_100_by_default_and_up_to_500(roomy: Server) -> None:
    raw = h.raw_main(roomy, h.main_key(roomy))
    try:
        for _ in range(6):
            names = [h.new_name() for _ in range(20)]
            created = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": names}))
            assert len(created["successList"]) == 20
        outcome = h.assert_ok(raw.post("create-virtual-subaccount", {"subAccountList": [h.new_name()]}))
        assert outcome["successList"] == [] and len(outcome["failureList"]) == 1  # 120 is this venue's limit
        first = h.assert_ok(raw.get("virtual-subaccount-list"))
        assert len(first["subAccountList"]) == 100 and first["endId"] == first["subAccountList"][-1]["subAccountUid"]
        rest = h.assert_ok(raw.get("virtual-subaccount-list", f"idLessThan={first['endId']}"))
        assert len(rest["subAccountList"]) == 20
        assert len(h.assert_ok(raw.get("virtual-subaccount-list", "limit=500"))["subAccountList"]) == 120
        h.assert_error(raw.get("virtual-subaccount-list", "limit=501"), "40020", "Parameter limit error")
    finally:
        raw.close()


@pytest.mark.parametrize(
    ("method", "name", "per_second"),
    [
        ("POST", "batch-create-subaccount-and-apikey", 1),
        ("POST", "create-virtual-subaccount", 5),
        ("POST", "modify-virtual-subaccount", 5),
        ("POST", "create-virtual-subaccount-apikey", 5),
        ("POST", "modify-virtual-subaccount-apikey", 5),
        ("GET", "virtual-subaccount-list", 10),
        ("GET", "virtual-subaccount-apikey-list", 5),
    ],
)
def test_each_endpoint_answers_429_past_its_documented_rate(raw: h.Raw, method: str, name: str,
                                                            per_second: int) -> None:
    # the quota is spent once the caller is authenticated, before the body is read: bodies that are not valid
    # calls do. Each POST a new request: two identical ones signed in one millisecond are one request, and
    # the second is refused as a replay (40004) before it reaches the rate limit.
    started = time.monotonic()
    for n in range(per_second):
        response = raw.post(name, {"probe": n}) if method == "POST" else raw.get(name)
        assert response.status_code in (200, 400) and response.json()["code"] not in ("429", "40004"), response.text
    _assert_rate_limited(raw.post(name, {"probe": per_second}) if method == "POST" else raw.get(name))
    assert time.monotonic() - started < 1
