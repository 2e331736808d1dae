"""Every rule belongs to one dialect (issue 8, item 1), over HTTP against a real ``keyplane serve``.

A key is never valid on a path of another dialect (the withdrawal endpoints first), nor on a path of no
dialect; a request no rule of its dialect names is refused (unless it is a GET and the operator allows the
read-only fallback); a method no rule names is refused. Each refusal is the dialect's own answer and
changes nothing: no row, no audit event, no spent nonce or rate-limit unit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from attack import (
    BITGET_NOT_FOUND,
    TOKEN,
    WHITEBIT_NOT_FOUND,
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
from keyplane.domain.model import Scheme
from keyplane.domain.policy import Policy
from keyplane.domain.requirements import Requirement
from keyplane.endpoints import EndpointTable, Refusal, management_rules

WITHDRAWALS_WHITEBIT = ("/api/v4/main-account/withdraw", "/api/v4/main-account/transfer")
WITHDRAWAL_BITGET = "/api/v2/spot/wallet/withdrawal"
NO_DIALECT = ("/api/v3/withdraw", "/withdraw", "/api/v1/spot/wallet/withdrawal", "/v1/verify")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("dialect-rules"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    uid = server.main_account("dialects")
    return {
        "uid": uid,
        "bitget_read": server.bitget_main_key(uid, "--perm", "read"),
        "bitget_all": server.bitget_main_key(
            uid, "--perm", "read", "--perm", "transfer", "--perm", "spot_trade"
        ),
        "whitebit": server.whitebit_main_key(uid),  # a main key: type 2, withdrawals allowed on WhiteBIT
    }


WITHDRAW_BODY = json.dumps({"coin": "USDT", "transferType": "on_chain", "address": "x", "size": "1"})


@pytest.mark.parametrize("key_name", ["bitget_read", "bitget_all"])
@pytest.mark.parametrize("path", WITHDRAWALS_WHITEBIT)
def test_a_bitget_key_is_never_valid_on_whitebit_withdrawals(
    server: Server, keys: dict[str, Any], key_name: str, path: str
) -> None:
    before = store_state(server)
    body = json.dumps({"ticker": "USDT", "amount": "1", "address": "x", "uniqueId": "1"})
    out = verify_call(server, "POST", path, bitget_headers(keys[key_name], "POST", path, body=body), body)
    assert out["code"] == "UNKNOWN_ENDPOINT" and out["scheme"] == "bitget"
    assert dialect_error(out) == BITGET_NOT_FOUND
    assert store_state(server) == before


@pytest.mark.parametrize("path", [WITHDRAWAL_BITGET, "/api/v2/spot/wallet/transfer", "/api/v2/spot/trade/place-order"])
def test_a_whitebit_key_is_never_valid_on_bitget_endpoints(server: Server, keys: dict[str, Any], path: str) -> None:
    lower, higher = nonce_pair()
    headers, body = whitebit_signed(keys["whitebit"], path, {"coin": "USDT", "size": "1"}, higher)
    out = verify_call(server, "POST", path, headers, body)
    assert out["code"] == "UNKNOWN_ENDPOINT" and out["scheme"] == "whitebit"
    assert dialect_error(out) == WHITEBIT_NOT_FOUND
    # nothing was spent: a lower nonce than the refused one is still valid where it belongs
    ok_path = "/api/v4/trade-account/balance"
    ok_headers, ok_body = whitebit_signed(keys["whitebit"], ok_path, nonce=lower)
    assert verify_call(server, "POST", ok_path, ok_headers, ok_body)["valid"] is True


@pytest.mark.parametrize("path", NO_DIALECT)
def test_no_key_is_valid_on_a_path_of_no_dialect(server: Server, keys: dict[str, Any], path: str) -> None:
    for method in ("GET", "POST"):
        out = verify_call(server, method, path, bitget_headers(keys["bitget_all"], method, path))
        assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == BITGET_NOT_FOUND
    headers, body = whitebit_signed(keys["whitebit"], path)
    out = verify_call(server, "POST", path, headers, body)
    assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == WHITEBIT_NOT_FOUND


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "GETX"])
def test_a_method_no_rule_names_is_refused(server: Server, keys: dict[str, Any], method: str) -> None:
    before = store_state(server)
    for path in (WITHDRAWAL_BITGET, "/api/v2/spot/trade/place-order", "/api/v2/user/create-virtual-subaccount"):
        out = verify_call(server, method, path, bitget_headers(keys["bitget_all"], method, path))
        assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == BITGET_NOT_FOUND, (method, path)
    for path in (*WITHDRAWALS_WHITEBIT, "/api/v4/sub-account/create"):
        headers, body = whitebit_signed(keys["whitebit"], path)
        out = verify_call(server, method, path, headers, body)
        assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == WHITEBIT_NOT_FOUND, (method, path)
    assert store_state(server) == before


@pytest.mark.parametrize(
    "path",
    [
        "/API/V2/SPOT/WALLET/WITHDRAWAL",
        "/api/v2/spot/wallet/Withdrawal",  # under the wallet family's prefix rules: mixed case matches none
        "/api/v2/spot/wallet/WITHDRAWAL",
        "/api/v2/Spot/wallet/withdrawal",
        "/api/v2/spot/account/Assets",
        "/api/v2/earn/savings/subscribe",  # a Bitget endpoint the table does not know
    ],
)
def test_a_path_no_rule_names_is_refused_even_for_a_key_that_could_read(
    server: Server, keys: dict[str, Any], path: str
) -> None:
    for key in ("bitget_read", "bitget_all"):
        for method in ("GET", "POST"):
            out = verify_call(server, method, path, bitget_headers(keys[key], method, path))
            assert out["code"] == "UNKNOWN_ENDPOINT" and dialect_error(out) == BITGET_NOT_FOUND, (method, path)
    headers, body = whitebit_signed(keys["whitebit"], path.replace("/api/v2/", "/api/v4/"))
    out = verify_call(server, "POST", path.replace("/api/v2/", "/api/v4/"), headers, body)
    assert out["code"] == "UNKNOWN_ENDPOINT"


def test_a_refusal_spends_no_rate_limit(server: Server, keys: dict[str, Any]) -> None:
    path = "/api/v2/spot/account/assets"
    first = verify_call(server, "GET", path, bitget_headers(keys["bitget_read"], "GET", path))
    for _ in range(3):
        for bad in ("/api/v4/main-account/withdraw", "/API/v2/spot/account/assets"):
            verify_call(server, "GET", bad, bitget_headers(keys["bitget_read"], "GET", bad))
    second = verify_call(server, "GET", path, bitget_headers(keys["bitget_read"], "GET", path))
    assert first["valid"] and second["valid"]
    assert second["ratelimit"]["remaining"] == first["ratelimit"]["remaining"] - 1


def test_keyplane_own_routes_are_in_the_table_as_the_dialects_serve_them(server: Server, keys: dict[str, Any]) -> None:
    """/v1/verify knows keyplane's management routes: the main-account rule comes from the table."""
    path = "/api/v2/user/virtual-subaccount-list"
    out = verify_call(server, "GET", path, bitget_headers(keys["bitget_read"], "GET", path))
    assert out["valid"] is True and out["ratelimit"]["limit"] == 10
    headers, body = whitebit_signed(keys["whitebit"], "/api/v4/sub-account/list")
    assert verify_call(server, "POST", "/api/v4/sub-account/list", headers, body)["valid"] is True


def test_a_key_of_the_other_dialect_on_keyplane_own_routes_changes_nothing(
    server: Server, keys: dict[str, Any]
) -> None:
    before = store_state(server)
    # a WhiteBIT-signed create on Bitget's route: Bitget's dialect sees no ACCESS-KEY
    path = "/api/v2/user/create-virtual-subaccount"
    headers, body = whitebit_signed(keys["whitebit"], path, {"subAccountList": ["crossdialect"]})
    answer = raw_http(server.base_url, b"POST", path.encode(), headers, body.encode())
    assert bitget_answer(answer) == (400, {"code": "40001", "msg": "ACCESS_KEY cannot be empty", "data": None})
    # a Bitget-signed create on WhiteBIT's route: WhiteBIT's dialect sees no payload
    path = "/api/v4/sub-account/create"
    body = json.dumps({"alias": "crossdialect", "email": "a@b.cd"})
    headers = bitget_headers(keys["bitget_all"], "POST", path, body=body)
    answer = raw_http(server.base_url, b"POST", path.encode(), headers, body.encode())
    assert (answer.status, answer.json()) == (401, {"code": 0, "message": "Payload not provided.", "errors": {}})
    # PUT/DELETE/PATCH on keyplane's own POST routes: each dialect's 404
    for method in (b"PUT", b"DELETE", b"PATCH"):
        path = "/api/v2/user/create-virtual-subaccount"
        body = json.dumps({"subAccountList": ["methodtrick"]})
        headers = bitget_headers(keys["bitget_all"], method.decode(), path, body=body)
        answer = raw_http(server.base_url, method, path.encode(), headers, body.encode())
        assert bitget_answer(answer) == BITGET_NOT_FOUND
        headers, body = whitebit_signed(keys["whitebit"], "/api/v4/sub-account/create", {"alias": "methodtrick"})
        answer = raw_http(server.base_url, method, b"/api/v4/sub-account/create", headers, body.encode())
        assert (answer.status, answer.json()) == WHITEBIT_NOT_FOUND
    assert store_state(server) == before


@pytest.fixture(scope="module")
def fallback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    endpoints = {"read_fallback": True}
    srv = make_server(
        tmp_path_factory.mktemp("fallback"),
        {"KEYPLANE_VERIFY_TOKEN": TOKEN, "KEYPLANE_ENDPOINTS": json.dumps(endpoints)},
    )
    srv.start()
    yield srv
    srv.stop()


def test_the_operator_read_fallback_lets_only_unknown_gets_of_the_dialect_through(fallback_server: Server) -> None:
    server = fallback_server
    uid = server.main_account("fallback")
    read = server.bitget_main_key(uid, "--perm", "read")
    whitebit = server.whitebit_main_key(uid)
    known_get = "/api/v2/earn/savings/assets"
    out = verify_call(server, "GET", known_get, bitget_headers(read, "GET", known_get))
    assert out["valid"] is True
    # not a POST, not another dialect's path, not a path a rule names for another method
    for method, path in [
        ("POST", "/api/v2/earn/savings/subscribe"),
        ("GET", "/api/v4/main-account/withdraw"),
        ("GET", "/api/v3/anything"),
        ("GET", "/api/v2/user/create-virtual-subaccount"),
        ("PUT", "/api/v2/earn/savings/assets"),
    ]:
        out = verify_call(server, method, path, bitget_headers(read, method, path))
        assert out["code"] == "UNKNOWN_ENDPOINT", (method, path)
    headers, body = whitebit_signed(whitebit, "/api/v2/earn/savings/assets")
    assert verify_call(server, "GET", "/api/v2/earn/savings/assets", headers, body)["code"] == "UNKNOWN_ENDPOINT"


# --- the table itself -------------------------------------------------------------------------------


TABLE = EndpointTable.defaults()


@pytest.mark.parametrize(
    ("scheme", "method", "path"),
    [
        (Scheme.BITGET, "POST", "/api/v4/main-account/withdraw"),
        (Scheme.BITGET, "POST", "/api/v4/main-account/transfer"),
        (Scheme.WHITEBIT, "POST", "/api/v2/spot/wallet/withdrawal"),
        (Scheme.WHITEBIT, "POST", "/api/v2/user/create-virtual-subaccount-apikey"),
        (Scheme.BITGET, "POST", "/api/v4/sub-account/api-key/create"),
        (Scheme.BITGET, "PUT", "/api/v2/spot/wallet/withdrawal"),
        (Scheme.BITGET, "DELETE", "/api/v2/spot/trade/place-order"),
        (Scheme.WHITEBIT, "PATCH", "/api/v4/main-account/withdraw"),
        (Scheme.WHITEBIT, "GET", "/api/v4/main-account/withdraw"),
        (Scheme.BITGET, "GET", "/API/V2/SPOT/ACCOUNT/ASSETS"),
        (Scheme.BITGET, "POST", "/api/v2/spot/wallet/Withdrawal"),
        (Scheme.WHITEBIT, "POST", "/api/v4/main-account/Withdraw"),
        (Scheme.WHITEBIT, "POST", "/api/v4/trade-account/Balance"),
        (Scheme.BITGET, "GET", "/api/v2/unknown"),
        (Scheme.BITGET, "POST", "/api/v2/user/virtual-subaccount-list"),
    ],
)
def test_table_refuses_other_dialects_unknown_paths_and_unnamed_methods(
    scheme: Scheme, method: str, path: str
) -> None:
    assert TABLE.requirement_for(scheme, method, path) is Refusal.NO_RULE
    assert TABLE.lookup(scheme, method, path) is None


def test_every_rule_names_its_dialect_and_posts_are_replay_protected() -> None:
    for rule in TABLE.rules:
        assert rule.path.startswith({Scheme.BITGET: "/api/v2/", Scheme.WHITEBIT: "/api/v4/"}[rule.dialect])
        assert rule.requirement.replay_protect is (rule.method != "GET"), rule


def test_an_operator_rule_outside_the_prefixes_belongs_to_the_dialect_it_names() -> None:
    table = EndpointTable.from_overrides(
        {"rules": [{"path": "/venue/private/*", "dialect": "whitebit", "key_type": 2, "replay_protect": False}]}
    )
    found = table.requirement_for(Scheme.WHITEBIT, "POST", "/venue/private/withdraw")
    assert isinstance(found, Requirement) and found.key_type == 2 and found.replay_protect is False
    assert table.requirement_for(Scheme.BITGET, "POST", "/venue/private/withdraw") is Refusal.NO_RULE
    assert table.dialect_of("/venue/private/withdraw") is Scheme.WHITEBIT
    # a caller bringing its own requirement still cannot use a Bitget key there
    assert table.check_target(Scheme.BITGET, "POST", "/venue/private/withdraw") is Refusal.NO_RULE
    assert table.check_target(Scheme.WHITEBIT, "POST", "/venue/private/withdraw") is None


def test_the_management_rows_are_the_dialects_own_requirements() -> None:
    """The dialects take their routes' requirements from these rows; a changed policy changes both."""
    policy = Policy.from_overrides({"bitget": {"rate_limits": {"create-virtual-subaccount": "2/second"}}})
    rows = {(r.dialect, r.method, r.path): r.requirement for r in management_rules(policy)}
    create = rows[(Scheme.BITGET, "POST", "/api/v2/user/create-virtual-subaccount")]
    assert create.main_only and create.main_needs_ip and create.rate_limit == "2/second" and create.replay_protect
    listing = rows[(Scheme.BITGET, "GET", "/api/v2/user/virtual-subaccount-list")]
    assert listing.main_only and not listing.replay_protect
    assert all(r.main_only for (d, _m, _p), r in rows.items() if d is Scheme.WHITEBIT)
    assert sum(d is Scheme.WHITEBIT for d, _m, _p in rows) == 20
    table = EndpointTable.defaults(policy)
    assert table.requirement_for(Scheme.BITGET, "POST", "/api/v2/user/create-virtual-subaccount") == create


def test_served_routes_match_the_table(server: Server) -> None:
    from keyplane.config import Settings
    from keyplane.dialects.bitget import BitgetDialect
    from keyplane.dialects.whitebit import WhitebitDialect
    from keyplane.runtime import build_runtime

    runtime = build_runtime(Settings(database_url=server.database_url))
    try:
        bitget = BitgetDialect(runtime.service, runtime.verifier)
        whitebit = WhitebitDialect(runtime.service, runtime.verifier)
        table = runtime.verifier.endpoints
        for (method, path), (requirement, _route) in bitget.routes.items():
            assert table.requirement_for(Scheme.BITGET, method, path) == requirement
        for path, (requirement, _route) in whitebit.routes.items():
            assert table.requirement_for(Scheme.WHITEBIT, "POST", path) == requirement
        assert len(bitget.routes) == 8 and len(whitebit.routes) == 20
    finally:
        runtime.close()
