"""One path, one meaning (issue 8, item 2, the verifier's side), over HTTP against a real ``keyplane serve``.

Every request target an upstream could read otherwise than keyplane verified it is refused with the
dialect's own 400 (Bitget 40017, WhiteBIT code 9), signed correctly over exactly that target, whoever's
key it is: through ``POST /v1/verify`` (whose ``uri`` is no longer percent-decoded), on keyplane's own
routes (the server routes on the raw path, not the ASGI server's decoded one), and in-process through
``Verifier.verify``. Nothing changes: no row, no audit event, no spent nonce.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from attack import (
    BITGET_BAD_TARGET,
    BITGET_NOT_FOUND,
    TOKEN,
    WHITEBIT_BAD_TARGET,
    bitget_answer,
    bitget_headers,
    dialect_error,
    nonce_pair,
    raw_http,
    store_state,
    verify_call,
    whitebit_signed,
)

from conftest import Server, make_server
from keyplane.auth import Reason, SignedRequest
from keyplane.domain.target import clean_method, clean_path, clean_query
from keyplane.runtime import open_verifier

WITHDRAWAL = "/api/v2/spot/wallet/withdrawal"

# each an attempt at Bitget's withdrawal (or WhiteBIT's, below) that some upstream would route there
BITGET_TRICKS = [
    "/api/v2/spot/account/../wallet/withdrawal",
    "/api/v2/spot/account/./../wallet/withdrawal",
    "/api/v2/spot/./wallet/withdrawal",
    "/api/v2//spot/wallet/withdrawal",
    "/api/v2/spot/wallet//withdrawal",
    "/api/v2/spot/wallet/withdrawal/",
    "/api/v2/spot/wallet/withdrawal;x=1",
    "/api/v2/spot/wallet;/withdrawal",
    "/api/v2/spot/account/..;/wallet/withdrawal",
    "/api/v2/spot/wallet\\withdrawal",
    "/api/v2/spot/account\\..\\wallet\\withdrawal",
    "/api/v2/spot/wallet%2Fwithdrawal",
    "/api/v2/spot/account/%2e%2e/wallet/withdrawal",
    "/api/v2/spot/account/%2E%2E/wallet/withdrawal",
    "/api/v2/spot/account/.%2e/wallet/withdrawal",
    "/api/v2/spot/wallet/withdrawa%6c",  # decodes to the withdrawal itself
    "/api/v2/spot/wallet/withdrawal%00",
    "/api/v2/spot/wallet/withdrawal%20",
    "/api/v2/spot/wallet/withdrawal.",
    "/api/v2/spot/wallet/.withdrawal",
]
# what no HTTP parser lets through, but a /v1/verify call or an in-process caller can hand over
UNSENDABLE = [
    "/api/v2/spot/wallet/withdrawal\x00",
    "/api/v2/spot/wallet/with\tdrawal",
    "/api/v2/spot/wallet/withdrawal ",
    "/api/v2/spot/wallet/withdrawal\r\nX-Injected: 1",
    "/api/v2/spot/wallet/withdr\u0430wal",  # a Cyrillic a
    "/api/v2/spot/wallet/withdrawal\u2044x",
]
WHITEBIT_TRICKS = [
    "/api/v4/main-account/balance/../withdraw",
    "/api/v4//main-account/withdraw",
    "/api/v4/main-account/withdraw/",
    "/api/v4/main-account/withdraw;x",
    "/api/v4/main-account\\withdraw",
    "/api/v4/main-account%2Fwithdraw",
    "/api/v4/main-account/%2e%2e/main-account/withdraw",
    "/api/v4/main-account/withdra%77",
]
BAD_METHODS = ["post", "Post", "get", "P0ST", "POST ", " POST", "PO ST", "POST\x00", "G\u0415T", ""]
BAD_QUERIES = ["coin=USDT#x", "coin=US DT", "coin=\x01", "coin=\u00e9", "coin=USDT\r\nX: 1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("one-path"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    uid = server.main_account("onepath")
    return {
        "uid": uid,
        "bitget_read": server.bitget_main_key(uid, "--perm", "read"),
        "bitget_all": server.bitget_main_key(uid, "--perm", "read", "--perm", "transfer"),
        "whitebit": server.whitebit_main_key(uid),
    }


# --- POST /v1/verify ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BITGET_TRICKS + UNSENDABLE)
def test_verify_refuses_bitget_path_tricks(server: Server, keys: dict[str, Any], path: str) -> None:
    for key in ("bitget_read", "bitget_all"):
        for method in ("POST", "GET"):
            body = '{"coin":"USDT","size":"1"}' if method == "POST" else ""
            out = verify_call(server, method, path, bitget_headers(keys[key], method, path, body=body), body)
            assert out["code"] == "BAD_TARGET" and dialect_error(out) == BITGET_BAD_TARGET, (key, method, path)


def test_verify_no_longer_decodes_the_path(server: Server, keys: dict[str, Any]) -> None:
    """It used to: ``/api/v2/spot/account/asset%73`` verified as ``.../assets``, signed either way."""
    encoded = "/api/v2/spot/account/asset%73"
    for signed_over in (encoded, "/api/v2/spot/account/assets"):
        out = verify_call(server, "GET", encoded, bitget_headers(keys["bitget_read"], "GET", signed_over))
        assert out["code"] == "BAD_TARGET", signed_over
    clean = "/api/v2/spot/account/assets"
    assert verify_call(server, "GET", clean, bitget_headers(keys["bitget_read"], "GET", clean))["valid"] is True


@pytest.mark.parametrize("path", WHITEBIT_TRICKS + [p.replace("/api/v2/spot/wallet/", "/api/v4/") for p in UNSENDABLE])
def test_verify_refuses_whitebit_path_tricks_and_spends_no_nonce(
    server: Server, keys: dict[str, Any], path: str
) -> None:
    lower, higher = nonce_pair()
    headers, body = whitebit_signed(keys["whitebit"], path, {"ticker": "USDT", "amount": "1"}, higher)
    out = verify_call(server, "POST", path, headers, body)
    assert out["code"] == "BAD_TARGET" and dialect_error(out) == WHITEBIT_BAD_TARGET
    # the refused nonce was not recorded: a lower one still passes where it belongs
    ok_path = "/api/v4/trade-account/balance"
    ok_headers, ok_body = whitebit_signed(keys["whitebit"], ok_path, nonce=lower)
    assert verify_call(server, "POST", ok_path, ok_headers, ok_body)["valid"] is True


@pytest.mark.parametrize("method", BAD_METHODS)
def test_verify_refuses_methods_that_are_not_upper_case_tokens(
    server: Server, keys: dict[str, Any], method: str
) -> None:
    out = verify_call(server, method, WITHDRAWAL, bitget_headers(keys["bitget_all"], method, WITHDRAWAL))
    assert out["code"] == "BAD_TARGET" and dialect_error(out) == BITGET_BAD_TARGET
    headers, body = whitebit_signed(keys["whitebit"], "/api/v4/main-account/withdraw")
    out = verify_call(server, method, "/api/v4/main-account/withdraw", headers, body)
    assert out["code"] == "BAD_TARGET" and dialect_error(out) == WHITEBIT_BAD_TARGET


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_verify_refuses_a_query_an_upstream_could_cut_or_read_otherwise(
    server: Server, keys: dict[str, Any], query: str
) -> None:
    path = "/api/v2/spot/account/assets"
    headers = bitget_headers(keys["bitget_read"], "GET", path, query)
    out = verify_call(server, "GET", f"{path}?{query}", headers)
    assert out["code"] == "BAD_TARGET" and dialect_error(out) == BITGET_BAD_TARGET


def test_upper_case_and_other_methods_are_no_rule_not_a_bad_target(server: Server, keys: dict[str, Any]) -> None:
    """Well-formed but unknown: the dialect's 404 (test_dialect_rules.py has the full set)."""
    for method, path in [("POST", "/API/V2/SPOT/WALLET/WITHDRAWAL"), ("PUT", WITHDRAWAL), ("DELETE", WITHDRAWAL)]:
        out = verify_call(server, method, path, bitget_headers(keys["bitget_all"], method, path))
        assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == BITGET_NOT_FOUND


# --- keyplane's own routes ---------------------------------------------------------------------------

BITGET_CREATE = "/api/v2/user/create-virtual-subaccount"
OWN_BITGET_TRICKS = [
    "/api/v2/user/../user/create-virtual-subaccount",
    "/api/v2/user/./create-virtual-subaccount",
    "/api/v2//user/create-virtual-subaccount",
    "/api/v2/user/create-virtual-subaccount/",
    "/api/v2/user/create-virtual-subaccount;jsessionid=1",
    "/api/v2/user\\create-virtual-subaccount",
    "/api/v2/user/create%2Dvirtual-subaccount",  # the server decodes it to the route itself
    "/api/v2/user%2Fcreate-virtual-subaccount",
    "/api/v2/user/%2e/create-virtual-subaccount",
    "/api/v2/spot/account/%2e%2e/%2e%2e/user/create-virtual-subaccount",
]
WHITEBIT_CREATE = "/api/v4/sub-account/create"
OWN_WHITEBIT_TRICKS = [
    "/api/v4/sub-account/../sub-account/create",
    "/api/v4/sub-account//create",
    "/api/v4/sub-account/create;x",
    "/api/v4/sub-account\\create",
    "/api/v4/sub-account/%63reate",
    "/api/v4/sub-account%2Fcreate",
]


@pytest.mark.parametrize("path", OWN_BITGET_TRICKS)
def test_own_bitget_route_refuses_path_tricks_and_changes_nothing(
    server: Server, keys: dict[str, Any], path: str
) -> None:
    before = store_state(server)
    body = json.dumps({"subAccountList": ["pathtrick"]})
    headers = bitget_headers(keys["bitget_all"], "POST", path, body=body)
    answer = raw_http(server.base_url, b"POST", path.encode("latin-1"), headers, body.encode())
    assert bitget_answer(answer) == BITGET_BAD_TARGET
    assert store_state(server) == before


@pytest.mark.parametrize("path", OWN_WHITEBIT_TRICKS)
def test_own_whitebit_route_refuses_path_tricks_and_spends_nothing(
    server: Server, keys: dict[str, Any], path: str
) -> None:
    before = store_state(server)
    headers, body = whitebit_signed(keys["whitebit"], path, {"alias": "pathtrick", "email": "p@t.io"})
    answer = raw_http(server.base_url, b"POST", path.encode(), headers, body.encode())
    assert (answer.status, answer.json()) == WHITEBIT_BAD_TARGET
    assert store_state(server) == before


@pytest.mark.parametrize("method", [b"post", b"Post", b"pOST"])
def test_own_routes_refuse_a_method_not_in_upper_case(server: Server, keys: dict[str, Any], method: bytes) -> None:
    before = store_state(server)
    body = json.dumps({"subAccountList": ["lowermethod"]})
    headers = bitget_headers(keys["bitget_all"], method.decode(), BITGET_CREATE, body=body)
    answer = raw_http(server.base_url, method, BITGET_CREATE.encode(), headers, body.encode())
    assert bitget_answer(answer) == BITGET_BAD_TARGET
    headers, body = whitebit_signed(keys["whitebit"], WHITEBIT_CREATE, {"alias": "lowermethod", "email": "l@m.io"})
    answer = raw_http(server.base_url, method, WHITEBIT_CREATE.encode(), headers, body.encode())
    assert (answer.status, answer.json()) == WHITEBIT_BAD_TARGET
    assert store_state(server) == before


def test_own_route_with_a_non_ascii_path_is_refused(server: Server, keys: dict[str, Any]) -> None:
    before = store_state(server)
    path = "/api/v2/user/create-virtual-subaccount\u00e9"
    answer = raw_http(server.base_url, b"POST", path.encode(), bitget_headers(keys["bitget_all"], "POST", path))
    assert bitget_answer(answer) == BITGET_BAD_TARGET
    assert store_state(server) == before


def test_the_clean_route_still_works_after_the_tricks(server: Server, keys: dict[str, Any]) -> None:
    """The refusals above spent nothing: the WhiteBIT nonce of a refused request is still unused."""
    lower, higher = nonce_pair()
    headers, body = whitebit_signed(keys["whitebit"], "/api/v4/sub-account//create", {"alias": "x"}, higher)
    refused = raw_http(server.base_url, b"POST", b"/api/v4/sub-account//create", headers, body.encode())
    assert refused.status == 400
    before = store_state(server)
    permissions = {"spotEnabled": True, "collateralEnabled": False}
    fields = {"alias": "cleanroute", "email": "c@r.io", "permissions": permissions}
    headers, body = whitebit_signed(keys["whitebit"], WHITEBIT_CREATE, fields, lower)
    created = raw_http(server.base_url, b"POST", WHITEBIT_CREATE.encode(), headers, body.encode())
    assert created.status == 201, created.body
    after = store_state(server)
    assert len(after["accounts"]) == len(before["accounts"]) + 1
    assert len(after["audit_events"]) == len(before["audit_events"]) + 1


# --- in-process ----------------------------------------------------------------------------------------


def test_in_process_verify_refuses_the_same_targets(server: Server, keys: dict[str, Any]) -> None:
    with open_verifier(server.database_url, follow_changes=False) as verifier:
        key = keys["bitget_all"]

        def bitget(method: str, path: str, query: str = "") -> Reason:
            headers = {k.lower(): v for k, v in bitget_headers(key, method, path, query).items()}
            return verifier.verify(SignedRequest(method, path, query, headers, b"", "127.0.0.1")).reason

        assert bitget("GET", "/api/v2/spot/account/assets") is Reason.VALID
        for path in BITGET_TRICKS + UNSENDABLE:
            assert bitget("POST", path) is Reason.BAD_TARGET, path
        for method in BAD_METHODS:
            assert bitget(method, WITHDRAWAL) is Reason.BAD_TARGET, method
        for query in BAD_QUERIES:
            assert bitget("GET", "/api/v2/spot/account/assets", query) is Reason.BAD_TARGET, query
        assert bitget("POST", "/api/v4/main-account/withdraw") is Reason.UNKNOWN_ENDPOINT
        assert bitget("PATCH", WITHDRAWAL) is Reason.UNKNOWN_ENDPOINT
        # a caller that brings its own Requirement gets the same target check
        from keyplane.auth import Requirement
        from keyplane.domain.model import Scheme

        for path in BITGET_TRICKS:
            headers = {k.lower(): v for k, v in bitget_headers(key, "POST", path).items()}
            result = verifier.verify(
                SignedRequest("POST", path, "", headers, b"", "127.0.0.1"), Requirement(), Scheme.BITGET
            )
            assert result.reason is Reason.BAD_TARGET, path
        headers = {k.lower(): v for k, v in bitget_headers(key, "POST", "/api/v4/main-account/withdraw").items()}
        result = verifier.verify(
            SignedRequest("POST", "/api/v4/main-account/withdraw", "", headers, b"", "127.0.0.1"),
            Requirement(),
            Scheme.BITGET,
        )
        assert result.reason is Reason.UNKNOWN_ENDPOINT


# --- the checks themselves --------------------------------------------------------------------------


def test_target_checks() -> None:
    for path in ["/api/v2/spot/account/assets", "/api/v4/main-account/withdraw-pay", "/a/b.c/d_e~f"]:
        assert clean_path(path), path
    for path in BITGET_TRICKS + UNSENDABLE + WHITEBIT_TRICKS + ["", "/", "api/v2/x", "/a/../b", "/a/b/.."]:
        assert not clean_path(path), path
    assert clean_method("GET") and clean_method("POST") and clean_method("DELETE")
    for method in [*BAD_METHODS, "X" * 17]:
        assert not clean_method(method), method
    assert clean_query("") and clean_query("coin=BTC&symbol=BTC%2FUSDT&x=%20+[]")
    for query in BAD_QUERIES:
        assert not clean_query(query), query
