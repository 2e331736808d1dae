"""Bitget request authentication over raw HTTP: the ACCESS-* headers, the signature over the bytes sent
(as ccxt, python-bitget and Bitget's SDK each sign), the ±30 s window, passphrases and IP allowlists."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import bitget_helpers as h
from conftest import KEYPLANE, Server, free_port, make_server
from keyplane.domain.model import Scheme

INFO = "/api/v2/spot/account/info"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-auth")))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def main(server: Server) -> h.MainKey:
    return h.main_key(server)


@pytest.fixture
def fresh(server: Server) -> h.MainKey:
    """A main account of its own, for a test that counts what it made."""
    return h.main_key(server)


@pytest.fixture(scope="module")
def sub(server: Server, main: h.MainKey) -> dict[str, Any]:
    """A sub-account key with no IP allowlist, made by the main key."""
    raw = h.raw_main(server, main)
    entry = h.batch_entry(permList=["read"])
    (made,) = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [entry]))
    raw.close()
    return {**made, "passphrase": entry["passphrase"]}


@pytest.fixture
def client(server: Server, sub: dict[str, Any]) -> Iterator[h.Raw]:
    raw = h.Raw(server, sub["subAccountApiKey"], sub["secretKey"], sub["passphrase"])
    yield raw
    raw.close()


# headers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code", "msg"),
    [
        ("ACCESS-KEY", "40001", "ACCESS_KEY cannot be empty"),
        ("ACCESS-SIGN", "40002", "ACCESS_SIGN cannot be empty"),
        ("ACCESS-TIMESTAMP", "40005", "Invalid ACCESS_TIMESTAMP"),
        ("ACCESS-PASSPHRASE", "40011", "ACCESS_PASSPHRASE cannot be empty"),
    ],
)
def test_a_missing_access_header_is_refused_with_its_code(client: h.Raw, header: str, code: str, msg: str) -> None:
    h.assert_error(client.request("GET", INFO, drop=(header,)), code, msg)
    h.assert_error(client.request("GET", INFO, headers={header: ""}), code, msg)


@pytest.mark.parametrize("timestamp", ["abc", "-1000", "1.7e12", "17000000000000000000"])
def test_a_timestamp_that_is_not_milliseconds_is_invalid(client: h.Raw, timestamp: str) -> None:
    h.assert_error(client.request("GET", INFO, timestamp=timestamp), "40005", "Invalid ACCESS_TIMESTAMP")


def test_a_timestamp_with_a_non_ascii_digit_is_invalid_not_a_server_error(client: h.Raw) -> None:
    # '²' (latin-1 0xB2) passes str.isdigit() but not int(): it used to answer HTTP 500
    ts = h.now_ms()[:-1].encode() + b"\xb2"
    headers = {"ACCESS-KEY": client.api_key, "ACCESS-SIGN": "x", "ACCESS-TIMESTAMP": ts,
               "ACCESS-PASSPHRASE": client.passphrase}
    h.assert_error(client.http.get(INFO, headers=headers), "40005", "Invalid ACCESS_TIMESTAMP")


def test_header_names_are_case_insensitive(client: h.Raw, sub: dict[str, Any]) -> None:
    ts = h.now_ms()
    headers = {"access-key": client.api_key, "access-sign": h.sign(client.secret, ts, "GET", INFO, "", b""),
               "access-timestamp": ts, "access-passphrase": client.passphrase}
    response = client.http.get(INFO, headers=headers)
    assert h.assert_ok(response)["userId"] == sub["subAccountUid"]


# the timestamp window ----------------------------------------------------------------------------------


@pytest.mark.parametrize("skew_ms", [-29_000, -1_000, 0, 1_000, 29_000])
def test_a_timestamp_within_30_seconds_is_accepted(client: h.Raw, skew_ms: int) -> None:
    h.assert_ok(client.request("GET", INFO, timestamp=str(int(time.time() * 1000) + skew_ms)))


@pytest.mark.parametrize("skew_ms", [-31_000, 31_000, -3_600_000, 86_400_000])
def test_a_timestamp_outside_30_seconds_is_expired(client: h.Raw, skew_ms: int) -> None:
    response = client.request("GET", INFO, timestamp=str(int(time.time() * 1000) + skew_ms))
    h.assert_error(response, "40008", "Request timestamp expired")


# the signature ------------------------------------------------------------------------------------------


def test_wrong_secret_unknown_key_and_wrong_passphrase_are_told_apart(server: Server, client: h.Raw) -> None:
    h.assert_error(client.request("GET", INFO, sign_with="0" * 64), "40009", "sign signature error")
    stranger = h.Raw(server, "bg_" + "9" * 32, client.secret, client.passphrase)
    wrong = h.Raw(server, client.api_key, client.secret, "Wrongpass123")
    try:
        h.assert_error(stranger.request("GET", INFO), "40037", "Apikey does not exist")
        h.assert_error(wrong.request("GET", INFO), "40012", "apikey/password is incorrect")
    finally:
        stranger.close()
        wrong.close()


def test_a_signature_covers_method_path_query_and_body(fresh: h.MainKey, server: Server) -> None:
    raw = h.raw_main(server, fresh)
    try:
        good = {"subAccountList": [h.new_name()]}
        tampered_body = json.dumps({"subAccountList": [h.new_name()]}, separators=(",", ":")).encode()
        h.assert_error(raw.post("create-virtual-subaccount", good, signed_body=tampered_body),
                       "40009", "sign signature error")
        h.assert_error(raw.get("virtual-subaccount-list", "limit=1", signed_query="limit=2"),
                       "40009", "sign signature error")
        ts = h.now_ms()
        signature = h.sign(fresh.secret, ts, "GET", "/api/v2/user/virtual-subaccount-apikey-list", "", b"")
        h.assert_error(raw.get("virtual-subaccount-list", timestamp=ts, headers={"ACCESS-SIGN": signature}),
                       "40009", "sign signature error")
        h.assert_error(raw.get("virtual-subaccount-list", headers={"ACCESS-SIGN": "not base64 at all"}),
                       "40009", "sign signature error")
        assert h.sub_accounts(raw) == []
    finally:
        raw.close()


def test_python_bitget_style_spaced_json_and_unsorted_unencoded_query_verify(fresh: h.MainKey, server: Server) -> None:
    raw = h.raw_main(server, fresh)
    try:
        name = h.new_name()
        spaced = json.dumps({"subAccountList": [name]})  # python-bitget: default separators, with spaces
        assert ", " in spaced or ": " in spaced
        created = h.assert_ok(raw.post("create-virtual-subaccount", spaced))
        uid = created["successList"][0]["subaAccountUid"]
        listed = h.assert_ok(raw.get("virtual-subaccount-list", "status=normal&limit=5"))  # not key-sorted
        assert [a["subAccountUid"] for a in listed["subAccountList"]] == [uid]
        modify = json.dumps({"subAccountUid": uid, "permList": ["read"], "status": "normal"})
        assert h.assert_ok(raw.post("modify-virtual-subaccount", modify)) == {"result": "success"}
    finally:
        raw.close()


def test_ccxt_style_encoded_url_with_the_decoded_query_signed_verifies(fresh: h.MainKey, server: Server) -> None:
    raw = h.raw_main(server, fresh)
    try:
        # the URL carries the percent-encoded query, the prehash the decoded one (ccxt's rawencode)
        response = raw.get("virtual-subaccount-list", "limit=5&status=normal&tag=a%20b%2Cc",
                           signed_query="limit=5&status=normal&tag=a b,c")
        assert h.assert_ok(response)["subAccountList"] == []
        # ccxt sends '+' as %2B and signs '+'
        h.assert_ok(raw.get("virtual-subaccount-list", "limit=5&tag=a%2Bb", signed_query="limit=5&tag=a+b"))
        # a raw '+' is a space to a form decoder and a '+' to others: no decoded reading (auth/bitget.py)
        plus = raw.get("virtual-subaccount-list", "limit=5&tag=a+b", signed_query="limit=5&tag=a b")
        h.assert_error(plus, "40009", "sign signature error")
    finally:
        raw.close()


def test_bitget_sdk_style_empty_object_signed_as_empty_body_verifies(fresh: h.MainKey, server: Server) -> None:
    raw = h.raw_main(server, fresh)
    try:
        # Bitget's SDK signs '' for a body of '{}': the request gets past authentication to the route
        response = raw.post("modify-virtual-subaccount", b"{}", signed_body=b"")
        h.assert_error(response, "40019", "Parameter subAccountUid cannot be empty")
    finally:
        raw.close()


def test_malformed_requests_answer_in_bitgets_envelope(fresh: h.MainKey, server: Server) -> None:
    raw = h.raw_main(server, fresh)
    try:
        h.assert_error(raw.post("create-virtual-subaccount", b"{not json"), "40017", "Parameter verification failed")
        h.assert_error(raw.post("create-virtual-subaccount", b"[]"), "40017", "Parameter verification failed")
        h.assert_error(raw.post("create-virtual-subaccount", {}), "40019", "Parameter subAccountList cannot be empty")
        h.assert_error(raw.post("create-virtual-subaccount", {"subAccountList": "abcdefgh"}),
                       "40020", "Parameter subAccountList error")
        h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": "x1", "permList": [],
                                                              "status": "normal"}),
                       "40020", "Parameter subAccountUid error")
        h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": "1", "permList": ["read"]}),
                       "40019", "Parameter status cannot be empty")
        time.sleep(1)  # 5/s
        h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": "1", "permList": ["read"],
                                                              "status": "del"}),
                       "40020", "Parameter status error")
        h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": "1", "status": "normal"}),
                       "40019", "Parameter permList cannot be empty")
        h.assert_error(raw.post("modify-virtual-subaccount", {"subAccountUid": "1\u00b2", "permList": ["read"],
                                                              "status": "normal"}),
                       "40020", "Parameter subAccountUid error")
        for query in ("limit=0", "limit=501", "limit=abc", "status=del", "idLessThan=abc"):
            param = query.split("=")[0]
            h.assert_error(raw.get("virtual-subaccount-list", query), "40020", f"Parameter {param} error")
        h.assert_error(raw.get("virtual-subaccount-list", "limit=1%C2%B2", signed_query="limit=1\u00b2"),
                       "40020", "Parameter limit error")
        h.assert_error(raw.get("virtual-subaccount-apikey-list"), "40019", "Parameter subAccountUid cannot be empty")
        h.assert_error(raw.get("virtual-subaccount-apikey-list", "subAccountUid=1%C2%B2",
                               signed_query="subAccountUid=1\u00b2"), "40020", "Parameter subAccountUid error")
        h.assert_error(raw.request("POST", "/api/v2/user/no-such-endpoint", body={}), "40404",
                       "Request URL NOT FOUND", status=404)
        h.assert_error(raw.request("GET", "/api/v2/user/create-virtual-subaccount"), "40404",
                       "Request URL NOT FOUND", status=404)
        h.assert_error(raw.post("create-virtual-subaccount", b"[" + b"1," * 40_000 + b"1]"), "40017",
                       "Parameter verification failed")
        assert h.sub_accounts(raw) == []
    finally:
        raw.close()


# IP allowlists (the client's address is chosen by binding the connection to 127.0.0.x) -------------------------


def _key_with_ips(server: Server, main: h.MainKey, ips: list[str]) -> dict[str, Any]:
    raw = h.raw_main(server, main)
    try:
        entry = h.batch_entry(ipList=ips)
        (made,) = h.assert_ok(raw.post("batch-create-subaccount-and-apikey", [entry]))
    finally:
        raw.close()
    return {**made, "passphrase": entry["passphrase"]}


def _info_from(server: Server, key: dict[str, Any], address: str) -> Any:
    raw = h.Raw(server, key["subAccountApiKey"], key["secretKey"], key["passphrase"], local_address=address)
    try:
        return raw.request("GET", INFO)
    finally:
        raw.close()


def test_an_exact_ip_allows_only_that_address(server: Server) -> None:
    key = _key_with_ips(server, h.main_key(server), ["127.0.0.2"])
    assert h.assert_ok(_info_from(server, key, "127.0.0.2"))["userId"] == key["subAccountUid"]
    h.assert_error(_info_from(server, key, "127.0.0.1"), "40018", "Invalid IP")
    h.assert_error(_info_from(server, key, "127.0.0.3"), "40018", "Invalid IP")


def test_a_cidr_entry_allows_its_range_only(server: Server) -> None:
    key = _key_with_ips(server, h.main_key(server), ["10.0.0.0/8", "127.0.0.0/30"])
    for inside in ("127.0.0.1", "127.0.0.2", "127.0.0.3"):
        h.assert_ok(_info_from(server, key, inside))
    for outside in ("127.0.0.4", "127.0.1.1"):
        h.assert_error(_info_from(server, key, outside), "40018", "Invalid IP")


def test_ipv6_entries_do_not_admit_an_ipv4_client(server: Server) -> None:
    key = _key_with_ips(server, h.main_key(server), ["::1", "2001:db8::/32", "::/0"])
    h.assert_error(_info_from(server, key, "127.0.0.1"), "40018", "Invalid IP")


def test_an_ipv4_mapped_entry_admits_its_ipv4_client(server: Server) -> None:
    key = _key_with_ips(server, h.main_key(server), ["::ffff:127.0.0.2"])
    h.assert_ok(_info_from(server, key, "127.0.0.2"))
    h.assert_error(_info_from(server, key, "127.0.0.1"), "40018", "Invalid IP")


def test_an_ipv4_mapped_range_admits_its_ipv4_clients(server: Server) -> None:
    key = _key_with_ips(server, h.main_key(server), ["::ffff:127.0.0.0/127"])
    assert key["ipList"] == ["127.0.0.0/31"]
    h.assert_ok(_info_from(server, key, "127.0.0.1"))
    h.assert_error(_info_from(server, key, "127.0.0.2"), "40018", "Invalid IP")


def test_a_main_key_bound_to_a_range_manages_only_from_inside_it(server: Server) -> None:
    main = h.main_key(server, ips=("127.0.0.0/31",))
    inside = h.raw_main(server, main, local_address="127.0.0.1")
    outside = h.raw_main(server, main, local_address="127.0.0.5")
    try:
        assert h.sub_accounts(inside) == []
        h.assert_error(outside.get("virtual-subaccount-list"), "40018", "Invalid IP")
    finally:
        inside.close()
        outside.close()


def test_changing_the_allowlist_takes_effect_on_the_next_request(server: Server) -> None:
    main = h.main_key(server)
    key = _key_with_ips(server, main, ["127.0.0.2"])
    h.assert_ok(_info_from(server, key, "127.0.0.2"))
    raw = h.raw_main(server, main)
    try:
        h.assert_ok(raw.post("modify-virtual-subaccount-apikey", {
            "subAccountUid": key["subAccountUid"], "subAccountApiKey": key["subAccountApiKey"],
            "passphrase": key["passphrase"], "label": "moved", "ipList": ["127.0.0.3"]}))
    finally:
        raw.close()
    h.assert_error(_info_from(server, key, "127.0.0.2"), "40018", "Invalid IP")
    h.assert_ok(_info_from(server, key, "127.0.0.3"))


def test_a_key_revoked_on_the_command_line_stops_working(server: Server) -> None:
    main = h.main_key(server)
    raw = h.raw_main(server, main)
    try:
        h.assert_ok(raw.get("virtual-subaccount-list"))
        server.cli("keys", "revoke", "--key", main.api_key)
        deadline = time.monotonic() + 5
        while raw.get("virtual-subaccount-list").status_code == 200:
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.1)
        h.assert_error(raw.get("virtual-subaccount-list"), "40037", "Apikey does not exist")
    finally:
        raw.close()


def test_account_info_answers_who_the_key_is(server: Server, main: h.MainKey, sub: dict[str, Any]) -> None:
    raw = h.raw_main(server, main)
    try:
        mine = h.assert_ok(raw.request("GET", INFO))
    finally:
        raw.close()
    assert mine["userId"] == main.uid and mine["ips"] == "127.0.0.1"
    assert mine["authorities"] == ["stow", "smow", "coow", "cpow", "wtow", "wwow"]  # Bitget's read-write codes
    theirs = _info_from(server, sub, "127.0.0.1")
    data = h.assert_ok(theirs)
    assert data["userId"] == sub["subAccountUid"] and str(data["parentId"]) == main.uid
    assert data["authorities"] == ["stor", "smor", "coor", "cpor", "wtor"] and data["ips"] == ""  # read-only codes
    assert "secretKey" not in theirs.text and sub["secretKey"] not in theirs.text


def test_a_whitebit_key_cannot_sign_a_bitget_request(server: Server) -> None:
    # the same venue holds both dialects' keys; each scheme only finds its own
    operator = h._operator(server)
    main = operator.service.accounts.create_main_account("two-dialects")
    issued = operator.service.keys.issue_main_key(main.uid, Scheme.WHITEBIT, ip_list=("127.0.0.1",))
    assert issued.secret is not None
    h.RECORD.secret(issued.secret)
    raw = h.Raw(server, issued.key.api_key, issued.secret, "whatever1")
    try:
        h.assert_error(raw.request("GET", INFO), "40037", "Apikey does not exist")
        h.assert_error(raw.get("virtual-subaccount-list"), "40037", "Apikey does not exist")
    finally:
        raw.close()


# IPv6 clients: a second server listening on ::1 -----------------------------------------------------------


@pytest.fixture(scope="module")
def v6server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    srv = h.track(make_server(tmp_path_factory.mktemp("bitget-ipv6")))
    port = free_port()
    srv.base_url = f"http://[::1]:{port}"
    with srv.log_path.open("ab") as log:
        srv.process = subprocess.Popen(
            [*KEYPLANE, "serve", "--host", "::1", "--port", str(port), "--database", srv.database_url],
            stdout=log, stderr=subprocess.STDOUT, env=srv.env, cwd=srv.workdir,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(srv.base_url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert srv.process.poll() is None and time.monotonic() < deadline, srv.log_path.read_text()
        time.sleep(0.1)
    yield srv
    srv.stop()


@pytest.mark.parametrize(("allowed", "admitted"), [
    (("::1",), True),
    (("::/120",), True),
    (("0:0:0:0:0:0:0:1",), True),
    (("2001:db8::/32",), False),
    (("127.0.0.1",), False),
    (("127.0.0.0/8", "2001:db8::1"), False),
])
def test_ipv6_allowlist_entries_admit_an_ipv6_client(v6server: Server, allowed: tuple[str, ...],
                                                     admitted: bool) -> None:
    raw = h.raw_main(v6server, h.main_key(v6server, ips=allowed))
    try:
        response = raw.get("virtual-subaccount-list")
        if admitted:
            assert h.assert_ok(response)["subAccountList"] == []
        else:
            h.assert_error(response, "40018", "Invalid IP")
    finally:
        raw.close()


def test_ccxt_over_ipv6_with_a_key_bound_to_an_ipv6_range(v6server: Server) -> None:
    ex = h.ccxt_main(v6server, h.main_key(v6server, ips=("::1/128",)))
    entry = h.batch_entry(ipList=["::/64"])
    (made,) = ex.privateUserPostV2UserBatchCreateSubaccountAndApikey([entry])["data"]
    assert made["ipList"] == ["::/64"]
    sub = h.ccxt_client(v6server, made["subAccountApiKey"], made["secretKey"], entry["passphrase"])
    assert sub.privateSpotGetV2SpotAccountInfo()["data"]["ips"] == "::/64"
