"""ccxt 4.5.90's own ``bitget`` class, unchanged and pointed at keyplane, drives the whole virtual
sub-account family through its implicit methods, and raises the error class each refusal implies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

import bitget_helpers as h
from conftest import Server, make_server

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-ccxt")))
    srv.start()
    yield srv
    srv.stop()


def _raises(error: type[Exception], code: str, call: Any, *args: Any) -> None:
    """``call`` raises exactly ``error`` (not a subclass) and the message carries Bitget's ``code``."""
    with pytest.raises(error) as caught:
        call(*args)
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    assert f'"code":"{code}"' in str(caught.value), str(caught.value)


def test_ccxt_drives_the_whole_family_then_a_new_sub_key_is_accepted(server: Server) -> None:
    main = h.main_key(server, cli=True)
    ex = h.ccxt_main(server, main)

    first, second = h.new_name(), h.new_name()
    batch = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([
        h.batch_entry(first, permList=["spot_trade", "read"], label="first"),
        h.batch_entry(second, ipList=["127.0.0.1", "10.0.0.0/8"], label="second"),
    ])
    assert batch["code"] == "00000" and batch["msg"] == "success"
    made = batch["data"]
    assert [entry["subAccountName"] for entry in made] == [first, second]
    for entry in made:
        assert set(entry) == {"subAccountUid", "subAccountName", "label", "subAccountApiKey", "secretKey",
                              "permList", "ipList"}
        assert entry["subAccountUid"].isdigit() and entry["secretKey"]
    assert made[0]["permList"] == ["spot_trade", "read"]
    assert made[1]["permList"] == ["spot_trade", "contract_trade"]  # Bitget's default
    assert made[1]["ipList"] == ["127.0.0.1", "10.0.0.0/8"]

    third = h.new_name()
    created = ex.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": [third]})["data"]
    assert created["failureList"] == []
    (sub,) = created["successList"]
    assert sub["subaAccountName"] == third and sub["status"] == "normal"
    assert sub["cTime"].isdigit() and sub["uTime"].isdigit()
    third_uid = sub["subaAccountUid"]

    passphrase = h.new_passphrase()
    key = ex.privateUserPostV2UserCreateVirtualSubaccountApikey({
        "subAccountUid": third_uid, "passphrase": passphrase, "label": "bot", "permList": ["spot_trade"],
        "ipList": ["127.0.0.1"],
    })["data"]
    assert key["subAccountUid"] == third_uid and key["secretKey"] and key["ipList"] == ["127.0.0.1"]

    modified = ex.privateUserPostV2UserModifyVirtualSubaccountApikey({
        "subAccountUid": third_uid, "subAccountApiKey": key["subAccountApiKey"], "passphrase": passphrase,
        "label": "bot2", "permList": ["spot_trade", "read"], "ipList": ["127.0.0.0/24", "2001:db8::/32"],
    })["data"]
    assert modified["label"] == "bot2"
    assert modified["permList"] == ["spot_trade", "read"]
    assert modified["ipList"] == ["127.0.0.0/24", "2001:db8::/32"]
    assert modified["secretKey"] == ""  # shown once, at creation

    result = ex.privateUserPostV2UserModifyVirtualSubaccount(
        {"subAccountUid": third_uid, "permList": ["spot_trade", "read"], "status": "normal"}
    )
    assert result["data"] == {"result": "success"}

    listed = ex.privateUserGetV2UserVirtualSubaccountList()["data"]
    by_uid = {entry["subAccountUid"]: entry for entry in listed["subAccountList"]}
    assert set(by_uid) == {made[0]["subAccountUid"], made[1]["subAccountUid"], third_uid}
    assert by_uid[third_uid]["permList"] == ["spot_trade", "read"]

    keys = ex.privateUserGetV2UserVirtualSubaccountApikeyList({"subAccountUid": third_uid})["data"]
    assert [k["subAccountApiKey"] for k in keys] == [key["subAccountApiKey"]]
    assert all("secretKey" not in k for k in keys)

    # the key just made signs a request of its own, through ccxt, and keyplane knows who it is
    sub_client = h.ccxt_client(server, key["subAccountApiKey"], key["secretKey"], passphrase)
    info = sub_client.privateSpotGetV2SpotAccountInfo()["data"]
    assert info["userId"] == third_uid and str(info["parentId"]) == main.uid
    # spot read-write, read-only elsewhere, in Bitget's codes
    assert info["authorities"] == ["stow", "smor", "coor", "cpor", "wtor"]
    assert info["ips"] == "127.0.0.0/24,2001:db8::/32"
    # every mutation left an audit event: who, what, from which IP, and never a secret
    events = [e for e in server.cli("audit", "--account", main.uid) if e["actorUid"] is not None]
    actions = sorted(e["action"] for e in events)
    assert actions == sorted(["subaccount.create"] * 3 + ["apikey.create"] * 3 + ["apikey.modify",
                                                                                   "subaccount.modify"])
    assert {(e["actorKey"], e["ip"]) for e in events} == {(main.api_key, "127.0.0.1")}
    assert key["secretKey"] not in json.dumps(events) and passphrase not in json.dumps(events)

    batch_client = h.ccxt_client(server, made[0]["subAccountApiKey"], made[0]["secretKey"], "unused")
    _raises(ccxt.AuthenticationError, "40012", batch_client.privateSpotGetV2SpotAccountInfo)


def test_ccxt_batch_made_key_is_accepted_with_its_passphrase(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    entry = h.batch_entry()
    (made,) = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([entry])["data"]
    client = h.ccxt_client(server, made["subAccountApiKey"], made["secretKey"], entry["passphrase"])
    info = client.privateSpotGetV2SpotAccountInfo()["data"]
    assert info["userId"] == made["subAccountUid"] and str(info["parentId"]) == main.uid
    main_info = ex.privateSpotGetV2SpotAccountInfo()["data"]
    assert main_info["userId"] == main.uid and main_info["parentId"] in (None, int(main.uid), main.uid)


def test_freeze_stops_a_sub_key_at_once_and_unfreeze_restores_it(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    entry = h.batch_entry()
    (made,) = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([entry])["data"]
    sub = h.ccxt_client(server, made["subAccountApiKey"], made["secretKey"], entry["passphrase"])
    assert sub.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == made["subAccountUid"]  # now cached

    uid = made["subAccountUid"]
    ex.privateUserPostV2UserModifyVirtualSubaccount({"subAccountUid": uid, "permList": ["spot_trade"],
                                                     "status": "freeze"})
    # 40013 "User status is abnormal" is not in ccxt's table: a plain ExchangeError
    _raises(ccxt.ExchangeError, "40013", sub.privateSpotGetV2SpotAccountInfo)
    frozen = ex.privateUserGetV2UserVirtualSubaccountList({"status": "freeze"})["data"]["subAccountList"]
    assert [(a["subAccountUid"], a["status"]) for a in frozen] == [(uid, "freeze")]

    ex.privateUserPostV2UserModifyVirtualSubaccount({"subAccountUid": uid, "permList": ["spot_trade"],
                                                     "status": "normal"})
    assert sub.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == uid
    assert ex.privateUserGetV2UserVirtualSubaccountList({"status": "freeze"})["data"]["subAccountList"] == []


def test_list_pages_with_id_less_than_and_end_id_and_filters_by_status(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    names = [h.new_name() for _ in range(7)]
    created = ex.privateUserPostV2UserCreateVirtualSubaccount({"subAccountList": names})["data"]["successList"]
    uids = sorted((int(a["subaAccountUid"]) for a in created), reverse=True)

    seen: list[int] = []
    params: dict[str, str] = {"limit": "3"}
    while True:
        page = ex.privateUserGetV2UserVirtualSubaccountList(params)["data"]
        if not page["subAccountList"]:
            assert page["endId"] == ""  # a string, as documented, and falsy
            break
        got = [int(a["subAccountUid"]) for a in page["subAccountList"]]
        assert len(got) <= 3 and page["endId"] == str(got[-1])
        seen += got
        params = {"limit": "3", "idLessThan": page["endId"]}
    assert seen == uids  # newest first, each exactly once

    frozen = str(uids[2])
    ex.privateUserPostV2UserModifyVirtualSubaccount({"subAccountUid": frozen, "permList": ["read"],
                                                     "status": "freeze"})
    only_frozen = ex.privateUserGetV2UserVirtualSubaccountList({"status": "freeze"})["data"]["subAccountList"]
    assert [a["subAccountUid"] for a in only_frozen] == [frozen]
    normal = ex.privateUserGetV2UserVirtualSubaccountList({"status": "normal"})["data"]["subAccountList"]
    assert frozen not in {a["subAccountUid"] for a in normal} and len(normal) == 6


def test_apikey_list_never_carries_a_secret(server: Server) -> None:
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    uid = ex.privateUserPostV2UserCreateVirtualSubaccount(
        {"subAccountList": [h.new_name()]})["data"]["successList"][0]["subaAccountUid"]
    secrets_given = []
    for label in ("a", "b", "c"):
        key = ex.privateUserPostV2UserCreateVirtualSubaccountApikey(
            {"subAccountUid": uid, "passphrase": h.new_passphrase(), "label": label})["data"]
        secrets_given.append(key["secretKey"])
    listed = ex.privateUserGetV2UserVirtualSubaccountApikeyList({"subAccountUid": uid})
    assert sorted(k["label"] for k in listed["data"]) == ["a", "b", "c"]
    for k in listed["data"]:
        assert set(k) == {"subAccountUid", "label", "subAccountApiKey", "permList", "ipList"}
    text = ex.last_http_response
    assert all(secret not in text for secret in secrets_given)


# refusals, each with the ccxt class the reference implies ---------------------------------------------


@pytest.fixture(scope="module")
def made(server: Server) -> dict[str, Any]:
    """One main account with a sub-account key bound to 10.0.0.1 (not the test's 127.0.0.1)."""
    main = h.main_key(server)
    ex = h.ccxt_main(server, main)
    entry = h.batch_entry(ipList=["10.0.0.1"])
    open_entry = h.batch_entry()
    fenced, free = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([entry, open_entry])["data"]
    return {"main": main, "ex": ex, "fenced": fenced, "fenced_passphrase": entry["passphrase"],
            "free": free, "free_passphrase": open_entry["passphrase"]}


def _free_client(server: Server, made: dict[str, Any], **override: str) -> ccxt.bitget:
    creds = {"api_key": made["free"]["subAccountApiKey"], "secret": made["free"]["secretKey"],
             "passphrase": made["free_passphrase"], **override}
    return h.ccxt_client(server, creds["api_key"], creds["secret"], creds["passphrase"])


def test_ccxt_wrong_secret_is_authentication_error(server: Server, made: dict[str, Any]) -> None:
    client = _free_client(server, made, secret="f" * 64)
    _raises(ccxt.AuthenticationError, "40009", client.privateSpotGetV2SpotAccountInfo)


def test_ccxt_wrong_passphrase_is_authentication_error(server: Server, made: dict[str, Any]) -> None:
    client = _free_client(server, made, passphrase="wrongpass1")
    _raises(ccxt.AuthenticationError, "40012", client.privateSpotGetV2SpotAccountInfo)


def test_ccxt_unknown_key_is_authentication_error(server: Server, made: dict[str, Any]) -> None:
    client = _free_client(server, made, api_key="bg_" + "0" * 32)
    _raises(ccxt.AuthenticationError, "40037", client.privateSpotGetV2SpotAccountInfo)


def test_ccxt_stale_timestamp_is_invalid_nonce(server: Server, made: dict[str, Any]) -> None:
    client = _free_client(server, made)
    client.options["timeDifference"] = 31_000  # ccxt signs milliseconds() - timeDifference
    _raises(ccxt.InvalidNonce, "40008", client.privateSpotGetV2SpotAccountInfo)
    client.options["timeDifference"] = -31_000
    _raises(ccxt.InvalidNonce, "40008", client.privateSpotGetV2SpotAccountInfo)
    client.options["timeDifference"] = 20_000  # inside the 30 s window
    assert client.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == made["free"]["subAccountUid"]


def test_ccxt_ip_outside_the_allowlist_is_permission_denied(server: Server, made: dict[str, Any]) -> None:
    client = h.ccxt_client(server, made["fenced"]["subAccountApiKey"], made["fenced"]["secretKey"],
                           made["fenced_passphrase"])
    _raises(ccxt.PermissionDenied, "40018", client.privateSpotGetV2SpotAccountInfo)


def test_ccxt_main_key_without_ip_is_permission_denied(server: Server) -> None:
    main = h.main_key(server, ips=())
    ex = h.ccxt_main(server, main)
    _raises(ccxt.PermissionDenied, "40018", ex.privateUserGetV2UserVirtualSubaccountList)
    # any valid key may still ask who it is
    assert ex.privateSpotGetV2SpotAccountInfo()["data"]["userId"] == main.uid


def test_ccxt_sub_key_on_a_management_endpoint_is_refused_with_40048(server: Server, made: dict[str, Any]) -> None:
    client = _free_client(server, made)
    _raises(ccxt.ExchangeError, "40048", client.privateUserGetV2UserVirtualSubaccountList)


def test_ccxt_sixth_batch_entry_is_refused(server: Server) -> None:
    ex = h.ccxt_main(server, h.main_key(server))
    entries = [h.batch_entry() for _ in range(6)]
    _raises(ccxt.ExchangeError, "40058", ex.privateUserPostV2UserBatchCreateSubaccountAndApikey, entries)
    assert ex.privateUserGetV2UserVirtualSubaccountList()["data"]["subAccountList"] == []


def test_ccxt_bad_name_is_refused(server: Server) -> None:
    ex = h.ccxt_main(server, h.main_key(server))
    _raises(ccxt.ExchangeError, "40055", ex.privateUserPostV2UserBatchCreateSubaccountAndApikey,
            [h.batch_entry("short")])
    _raises(ccxt.ExchangeError, "40055", ex.privateUserPostV2UserCreateVirtualSubaccount,
            {"subAccountList": ["abcdefg1"]})
    assert ex.privateUserGetV2UserVirtualSubaccountList()["data"]["subAccountList"] == []


def test_ccxt_bad_passphrase_is_refused(server: Server) -> None:
    ex = h.ccxt_main(server, h.main_key(server))
    _raises(ccxt.ExchangeError, "40070", ex.privateUserPostV2UserBatchCreateSubaccountAndApikey,
            [h.batch_entry(passphrase="short1")])
    assert ex.privateUserGetV2UserVirtualSubaccountList()["data"]["subAccountList"] == []


def test_ccxt_non_ascii_label_and_encoded_query_verify(server: Server) -> None:
    ex = h.ccxt_main(server, h.main_key(server))
    entry = h.batch_entry(label="子账户-β")
    (made,) = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([entry])["data"]
    assert made["label"] == "子账户-β"
    # ccxt percent-encodes the URL's query but signs it decoded
    page = ex.privateUserGetV2UserVirtualSubaccountList({"limit": "5", "tag": "a b,c/d+é$"})["data"]
    assert [a["label"] for a in page["subAccountList"]] == ["子账户-β"]
    # a value holding '&': its signed text also reads as two parameters, so it verifies in no reading
    with pytest.raises(ccxt.AuthenticationError, match="40009"):
        ex.privateUserGetV2UserVirtualSubaccountList({"limit": "5", "tag": "c&d"})
