"""No 5xx for anything a client can send (issue 8, item 7), on a real ``keyplane serve``.

Every JSON route of both dialects and ``POST /v1/verify`` receive correctly signed requests (so they reach
the parsing behind the verifier) whose bodies hold arbitrary JSON, deep nesting, numbers of thousands of
digits, NaN/Infinity, invalid UTF-8, a BOM, NUL characters and odd types, in every field each route reads.
Each answer must be below 500 and in the dialect's own envelope; the server must log no unhandled error.
A second set of tests sends the attacks the issue names and asserts the exact refusal and that nothing
changed; one runs on PostgreSQL, whose text columns cannot hold NUL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bitget_helpers as h
from clients.whitebit_http import Operator
from conftest import Server, make_server
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import build_runtime

TOKEN = "no-5xx-verify-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

BITGET_USER = "/api/v2/user/"
BITGET_POST = [
    "create-virtual-subaccount",
    "modify-virtual-subaccount",
    "batch-create-subaccount-and-apikey",
    "create-virtual-subaccount-apikey",
    "modify-virtual-subaccount-apikey",
]
BITGET_GET = ["virtual-subaccount-list", "virtual-subaccount-apikey-list"]
BITGET_FIELDS = [
    "subAccountList", "subAccountUid", "permList", "status", "subAccountName", "passphrase", "label",
    "ipList", "subAccountApiKey",
]
BITGET_QUERY = ["limit", "idLessThan", "status", "subAccountUid"]

WHITEBIT_ROUTES = [
    "sub-account/create", "sub-account/delete", "sub-account/edit", "sub-account/list", "sub-account/block",
    "sub-account/unblock", "sub-account/api-key/create", "sub-account/api-key/edit",
    "sub-account/api-key/delete", "sub-account/api-key/list", "sub-account/api-key/reset",
    "sub-account/api-key/ip-address/list", "sub-account/api-key/ip-address/create",
    "sub-account/api-key/ip-address/delete", "sub-account/transfer", "sub-account/balances",
    "sub-account/transfer/history", "sub-account/kyc-url", "sub-account/withdraw/unconfirmed-list",
    "sub-account/withdraw/confirm",
]
WHITEBIT_FIELDS = [
    "alias", "email", "shareKyc", "permissions", "id", "search", "limit", "offset", "type", "subAccountId",
    "title", "apiKeyId", "urls", "ip",
]

# Every route's rate limit out of the way: the point is what the parsing behind them does.
UNLIMITED = "1000000/second"
POLICY = json.dumps({
    "bitget": {"default_rate_limit": UNLIMITED, "rate_limits": {name: UNLIMITED for name in
               [*BITGET_POST, *BITGET_GET, "account-info"]}},
    "whitebit": {"default_rate_limit": UNLIMITED},
})


# Strategies ------------------------------------------------------------------------------------------

leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**80), max_value=10**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["", "1", "0", "-1", "normal", "freeze", "read", "spot_trade", "1.2.3.4", "Abcdefgh12"])
)
json_values = st.recursive(
    leaves, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)

# JSON text no encoder makes: each is spliced into a body as a field's value.
raw_fragments = st.one_of(
    st.integers(1, 6000).map(lambda n: "9" * n),  # past Python's 4300-digit int/str limit, or just below
    st.integers(1, 6000).map(lambda n: '"' + "7" * n + '"'),  # the same as a digit string
    st.integers(1, 6000).map(lambda n: "-" + "1" * n),
    st.integers(1, 4000).map(lambda n: "[" * n + "]" * n),  # nesting past msgspec's recursion limit
    st.integers(1, 3000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.sampled_from([
        "NaN", "Infinity", "-Infinity", "1e99999", "-0", "1E400", '"\\u0000"', '"a\\u0000b"', '"\\ud800"',
        '"\\udc00\\ud800"', "0x10", "01", "tru", '"\\x"', "[1,]", '{"a" 1}', '"' + "é" * 50 + '"', "[null]",
        '{"":{"":{"":[]}}}', '"' + "x" * 5000 + '"',
    ]),
)
field_value = st.one_of(json_values.map(lambda value: json.dumps(value, ensure_ascii=False)), raw_fragments)


@st.composite
def json_object_text(draw: st.DrawFn, names: list[str]) -> str:
    chosen = draw(st.lists(st.sampled_from(names), max_size=4, unique=True))
    extra = draw(st.lists(st.text(max_size=6), max_size=1))
    return "{" + ",".join(json.dumps(n) + ":" + draw(field_value) for n in [*chosen, *extra]) + "}"


def _mangle(text: str, how: str) -> bytes:
    raw = text.encode("utf-8", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "latin1":  # invalid UTF-8 inside a string
        return raw.replace(b'":', b'\xff\xfe":', 1)
    if how == "truncated":
        return raw[: len(raw) // 2]
    if how == "utf16":
        return text.encode("utf-16")
    return raw


mangling = st.sampled_from(["none", "none", "none", "none", "bom", "latin1", "truncated", "utf16"])


@st.composite
def bitget_body(draw: st.DrawFn, route: str) -> bytes:
    if route == "batch-create-subaccount-and-apikey" and draw(st.booleans()):
        text = "[" + ",".join(draw(st.lists(json_object_text(BITGET_FIELDS), min_size=1, max_size=3))) + "]"
    else:
        text = draw(st.one_of(json_object_text(BITGET_FIELDS), field_value))
    return _mangle(text, draw(mangling))


@st.composite
def bitget_query(draw: st.DrawFn) -> str:
    chosen = draw(st.lists(st.sampled_from(BITGET_QUERY), max_size=3, unique=True))
    values = st.one_of(raw_fragments, st.text(max_size=20), st.sampled_from(["", "%00", "%FF", "1e3", "+1", "1 "]))
    # percent-encoded as a client sends it ('%' kept, so '%00' and '%FF' arrive as such)
    # at most 5000 characters a value (still past the 4300-digit limit): httpx refuses URLs past 64 KiB
    return "&".join(f"{name}={quote(draw(values)[:5000], safe='%')}" for name in chosen)


# The server --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = h.track(make_server(
        tmp_path_factory.mktemp("no-5xx"), {"KEYPLANE_POLICY": POLICY, "KEYPLANE_VERIFY_TOKEN": TOKEN}
    ))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    main = h.main_key(server)
    operator = Operator(server.database_url)
    try:
        whitebit = operator.whitebit_main_key(main.uid)
    finally:
        operator.close()
    return {"bitget": main, "whitebit": whitebit}


@pytest.fixture(scope="module")
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def bitget_request(http: httpx.Client, main: h.MainKey, method: str, path: str, query: str = "",
                   body: bytes = b"") -> httpx.Response:
    ts = h.now_ms()
    headers = {
        "ACCESS-KEY": main.api_key, "ACCESS-SIGN": h.sign(main.secret, ts, method, path, query, body),
        "ACCESS-TIMESTAMP": ts, "ACCESS-PASSPHRASE": main.passphrase, "Content-Type": "application/json",
    }
    return http.request(method, path + ("?" + query if query else ""), content=body or None, headers=headers)


_NONCES = itertools.count(int(time.time() * 1000) * 1000)


def whitebit_body(path: str, fields_text: str) -> bytes:
    """``{"request": path, "nonce": n, <fields>}`` as text: the fields may hold any raw fragment."""
    head = '{"request":' + json.dumps(path) + ',"nonce":' + str(next(_NONCES))
    inner = fields_text.strip()[1:-1] if fields_text.startswith("{") else '"x":' + fields_text
    return (head + ("," + inner if inner else "") + "}").encode("utf-8", "surrogatepass")


def whitebit_request(http: httpx.Client, key: dict[str, Any], path: str, body: bytes) -> httpx.Response:
    payload = base64.b64encode(body).decode()
    signature = hmac.new(key["apiSecret"].encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = {"X-TXC-APIKEY": key["apiKey"], "X-TXC-PAYLOAD": payload, "X-TXC-SIGNATURE": signature,
               "Content-Type": "application/json"}
    return http.post(path, content=body, headers=headers)


def assert_bitget_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) >= {"code", "msg", "requestTime", "data"}, response.text[:300]


def assert_whitebit_envelope(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    if response.status_code >= 400:
        assert "message" in body, response.text[:300]


def assert_no_unhandled_error(server: Server) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]


EXAMPLES = settings(
    # lean for CI (~5 s for the three); KEYPLANE_FUZZ_EXAMPLES=2000 for a longer hunt
    max_examples=int(os.environ.get("KEYPLANE_FUZZ_EXAMPLES", "150")), deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)


# Hypothesis: every JSON route -------------------------------------------------------------------------


@EXAMPLES
@given(data=st.data())
def test_bitget_routes_answer_no_5xx(server: Server, keys: dict[str, Any], http: httpx.Client,
                                     data: st.DataObject) -> None:
    main = keys["bitget"]
    if data.draw(st.booleans()):
        route = data.draw(st.sampled_from(BITGET_POST))
        response = bitget_request(http, main, "POST", BITGET_USER + route, body=data.draw(bitget_body(route)))
    else:
        route = data.draw(st.sampled_from([*BITGET_GET, "spot/account/info"]))
        path = "/api/v2/spot/account/info" if route == "spot/account/info" else BITGET_USER + route
        response = bitget_request(http, main, "GET", path, query=data.draw(bitget_query()))
    assert_bitget_envelope(response)
    # signed right, so it got past the verifier to the parsing under test
    assert response.json()["code"] not in ("40009", "40037", "40012"), response.text[:300]


@EXAMPLES
@given(data=st.data())
def test_whitebit_routes_answer_no_5xx(server: Server, keys: dict[str, Any], http: httpx.Client,
                                       data: st.DataObject) -> None:
    path = "/api/v4/" + data.draw(st.sampled_from(WHITEBIT_ROUTES))
    fields = data.draw(st.one_of(json_object_text(WHITEBIT_FIELDS), field_value))
    body = whitebit_body(path, fields)
    how = data.draw(mangling)
    if how != "none":
        body = _mangle(body.decode("utf-8", "surrogatepass"), how)
    response = whitebit_request(http, keys["whitebit"], path, body)
    assert_whitebit_envelope(response)
    assert response.status_code != 401, response.text[:300]  # signed right: past the verifier


@st.composite
def verify_calls(draw: st.DrawFn, keys: dict[str, Any]) -> bytes:
    """A /v1/verify call: arbitrary JSON, or a real signed request of either dialect with an arbitrary
    body, with any of its fields swapped for a raw fragment."""
    kind = draw(st.sampled_from(["arbitrary", "bitget", "whitebit"]))
    if kind == "arbitrary":
        return _mangle(draw(st.one_of(json_object_text(
            ["method", "uri", "path", "query", "headers", "body", "body_base64", "client_ip", "scheme"]),
            field_value)), draw(mangling))
    body_text = draw(st.one_of(json_object_text([*BITGET_FIELDS, *WHITEBIT_FIELDS]), field_value))
    if kind == "bitget":
        main: h.MainKey = keys["bitget"]
        path = draw(st.sampled_from(["/api/v2/spot/trade/place-order", "/api/v2/spot/account/assets",
                                     BITGET_USER + "create-virtual-subaccount"]))
        body = body_text.encode("utf-8", "surrogatepass")
        ts = h.now_ms()
        headers = {"access-key": main.api_key, "access-sign": h.sign(main.secret, ts, "POST", path, "", body),
                   "access-timestamp": ts, "access-passphrase": main.passphrase}
    else:
        key = keys["whitebit"]
        path = draw(st.sampled_from(["/api/v4/order/new", "/api/v4/main-account/withdraw"]))
        body = whitebit_body(path, body_text)
        payload = base64.b64encode(body).decode()
        headers = {"x-txc-apikey": key["apiKey"], "x-txc-payload": payload,
                   "x-txc-signature": hmac.new(key["apiSecret"].encode(), payload.encode(),
                                               hashlib.sha512).hexdigest()}
    call = {
        "method": "POST", "uri": path, "headers": headers, "client_ip": "127.0.0.1",
        "body_base64": base64.b64encode(body).decode(),
    }
    parts = {name: json.dumps(value) for name, value in call.items()}
    for name in draw(st.lists(st.sampled_from(sorted(call)), max_size=2, unique=True)):
        parts[name] = draw(field_value)
    if draw(st.booleans()):  # a header value swapped instead
        name = draw(st.sampled_from(sorted(headers)))
        parts["headers"] = json.dumps({**headers, name: None}).replace("null", draw(field_value))
    return ("{" + ",".join(f"{json.dumps(n)}:{v}" for n, v in parts.items()) + "}").encode("utf-8", "surrogatepass")


@EXAMPLES
@given(data=st.data())
def test_v1_verify_answers_no_5xx(server: Server, keys: dict[str, Any], http: httpx.Client,
                                  data: st.DataObject) -> None:
    response = http.post("/v1/verify", content=data.draw(verify_calls(keys)), headers=AUTH)
    assert response.status_code in (200, 400), (response.status_code, response.text[:300])
    body = response.json()
    assert body["valid"] in (True, False) and isinstance(body["code"], str)
    if response.status_code == 200 and not body["valid"]:
        assert body["error"]["status"] < 500, body


def test_the_server_logged_no_unhandled_error(server: Server) -> None:
    assert_no_unhandled_error(server)


# The attacks the issue names: exact refusals, nothing changed ----------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000
HUGE = "9" * 5000


def _sub_count(raw: h.Raw) -> int:
    return len(h.sub_accounts(raw))


@pytest.mark.parametrize("body", [
    DEEP,
    b'{"subAccountList":' + DEEP + b"}",
    b'{"subAccountUid":' + HUGE.encode() + b',"permList":["read"],"status":"normal"}',
    b'{"subAccountList":[NaN]}',
    b'\xef\xbb\xbf{"subAccountList":["Abcdefgh"]}',
    b'{"subAccountList":["\xff\xfeAbcdefg"]}',
    b'{"subAccountList":["Abc\\u0000defg"]}',
])
@pytest.mark.parametrize("route", ["create-virtual-subaccount", "modify-virtual-subaccount",
                                   "batch-create-subaccount-and-apikey", "create-virtual-subaccount-apikey",
                                   "modify-virtual-subaccount-apikey"])
def test_bitget_malformed_bodies_are_40017(server: Server, keys: dict[str, Any], http: httpx.Client,
                                           route: str, body: bytes) -> None:
    raw = h.raw_main(server, keys["bitget"])
    try:
        before = _sub_count(raw)
        h.assert_error(bitget_request(http, keys["bitget"], "POST", BITGET_USER + route, body=body),
                       "40017", "Parameter verification failed")
        assert _sub_count(raw) == before
    finally:
        raw.close()


@pytest.mark.parametrize(("route", "field", "body"), [
    ("modify-virtual-subaccount", "subAccountUid",
     '{"subAccountUid":"' + HUGE + '","permList":["read"],"status":"normal"}'),
    ("create-virtual-subaccount-apikey", "subAccountUid",
     '{"subAccountUid":"' + HUGE + '","passphrase":"Abcdefgh12","label":"x"}'),
    ("modify-virtual-subaccount", "subAccountUid",
     '{"subAccountUid":' + "9" * 4000 + ',"permList":["read"],"status":"normal"}'),
])
def test_bitget_huge_numbers_are_40020(server: Server, keys: dict[str, Any], http: httpx.Client, route: str,
                                       field: str, body: str) -> None:
    h.assert_error(bitget_request(http, keys["bitget"], "POST", BITGET_USER + route, body=body.encode()),
                   "40020", f"Parameter {field} error")


@pytest.mark.parametrize(("route", "query", "field"), [
    ("virtual-subaccount-list", "limit=" + HUGE, "limit"),
    ("virtual-subaccount-list", "idLessThan=" + HUGE, "idLessThan"),
    ("virtual-subaccount-list", "limit=" + "1" * 20, "limit"),
    ("virtual-subaccount-apikey-list", "subAccountUid=" + HUGE, "subAccountUid"),
])
def test_bitget_huge_query_numbers_are_40020(server: Server, keys: dict[str, Any], http: httpx.Client,
                                             route: str, query: str, field: str) -> None:
    h.assert_error(bitget_request(http, keys["bitget"], "GET", BITGET_USER + route, query=query),
                   "40020", f"Parameter {field} error")


@pytest.mark.parametrize("fields", [
    '"x":' + "[" * 5000 + "]" * 5000,
    '"limit":' + HUGE,
    '"limit":NaN',
    '"alias":"a\\u0000b","permissions":{"spotEnabled":true,"collateralEnabled":false},"email":"a@b.cd"',
    '"x":' + "[" * 40 + "]" * 40,
])
@pytest.mark.parametrize("route", ["sub-account/create", "sub-account/list", "sub-account/api-key/create",
                                   "sub-account/api-key/edit"])
def test_whitebit_malformed_bodies_are_invalid_payload(server: Server, keys: dict[str, Any], http: httpx.Client,
                                                      route: str, fields: str) -> None:
    path = "/api/v4/" + route
    listing = "/api/v4/sub-account/list"
    before = whitebit_request(http, keys["whitebit"], listing, whitebit_body(listing, "{}")).json()["data"]
    response = whitebit_request(http, keys["whitebit"], path, whitebit_body(path, "{" + fields + "}"))
    assert (response.status_code, response.json()) == (400, {"code": 9, "message": "Invalid payload.", "errors": {}})
    after = whitebit_request(http, keys["whitebit"], listing, whitebit_body(listing, "{}")).json()["data"]
    assert after == before


@pytest.mark.parametrize("call", [
    DEEP,
    b'{"method":"POST","uri":"/api/v2/spot/account/assets","headers":' + DEEP + b"}",
    b'{"method":"POST","uri":"/api/v2/spot/account/assets","client_ip":' + HUGE.encode() + b"}",
    b'\xef\xbb\xbf{"method":"POST","uri":"/x"}',
    b'{"method":"POST","uri":"/x","body":"\xff"}',
    b'{"method":NaN,"uri":"/x"}',
])
def test_v1_verify_malformed_calls_are_400(server: Server, http: httpx.Client, call: bytes) -> None:
    response = http.post("/v1/verify", content=call, headers=AUTH)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "BAD_REQUEST"


def test_v1_verify_deep_and_huge_signed_bodies_are_the_dialects_refusal(keys: dict[str, Any],
                                                                        http: httpx.Client) -> None:
    key = keys["whitebit"]
    for inner in ("[" * 5000 + "]" * 5000, HUGE):
        body = whitebit_body("/api/v4/order/new", '{"x":' + inner + "}")
        payload = base64.b64encode(body).decode()
        call = {"method": "POST", "uri": "/api/v4/order/new", "body_base64": payload, "client_ip": "127.0.0.1",
                "headers": {"X-TXC-APIKEY": key["apiKey"], "X-TXC-PAYLOAD": payload,
                            "X-TXC-SIGNATURE": hmac.new(key["apiSecret"].encode(), payload.encode(),
                                                        hashlib.sha512).hexdigest()}}
        answer = http.post("/v1/verify", json=call, headers=AUTH).json()
        assert (answer["valid"], answer["code"], answer["error"]["status"]) == (False, "PAYLOAD_MISMATCH", 400)


def test_oversized_header_sets_are_refused_before_any_dialect(server: Server, keys: dict[str, Any],
                                                             http: httpx.Client) -> None:
    """Granian answers 431 to a header set past its limits (no dialect sees it); below them, a huge header
    reaches the dialect, which answers its own 4xx; the server keeps serving either way."""
    many = {f"X-Pad-{i}": "a" * 100 for i in range(200)}
    for path in ("/api/v2/user/virtual-subaccount-list", "/api/v4/sub-account/list", "/v1/verify"):
        assert http.post(path, content=b"{}", headers=many).status_code == 431
        assert http.post(path, content=b"{}", headers={"X-Big": "a" * (1 << 20)}).status_code == 431
    big_key = {"ACCESS-KEY": "k" * 60_000}
    response = bitget_request(http, keys["bitget"], "GET", "/api/v2/spot/account/info")
    assert response.status_code == 200
    h.assert_error(http.get("/api/v2/spot/account/info", headers={**big_key, "ACCESS-SIGN": "x",
                   "ACCESS-TIMESTAMP": h.now_ms(), "ACCESS-PASSPHRASE": "x"}), "40037", "Apikey does not exist")


# PostgreSQL: NUL characters never reach the store --------------------------------------------------------


@pytest.mark.postgres
def test_nul_characters_are_refused_at_the_edge_on_postgres(pg_url: str, tmp_path: Path) -> None:
    srv = make_server(tmp_path, {"KEYPLANE_POLICY": POLICY, "KEYPLANE_VERIFY_TOKEN": TOKEN,
                                 "KEYPLANE_MASTER_KEY": "ef" * 32})
    srv.database_url = pg_url
    # made in this process, as ``keyplane accounts/keys create`` would (the command costs seconds a call)
    runtime = build_runtime(Settings(database_url=pg_url, master_key="ef" * 32))
    try:
        service = runtime.service
        uid = service.accounts.create_main_account("nul-test").uid
        made = service.keys.issue_main_key(
            uid, Scheme.BITGET, permissions=["read", "spot_trade"], ip_list=["127.0.0.1"]
        )
        assert made.secret is not None and made.passphrase is not None
        main = h.MainKey(str(uid), made.key.api_key, made.secret, made.passphrase)
        issued = service.keys.issue_main_key(uid, Scheme.WHITEBIT)
        whitebit = {"apiKey": issued.key.api_key, "apiSecret": issued.secret}
    finally:
        runtime.close()
    srv.start()
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as http:
            h.assert_error(bitget_request(http, main, "POST", BITGET_USER + "modify-virtual-subaccount-apikey",
                           body=b'{"subAccountUid":"1","subAccountApiKey":"bg_\\u0000","passphrase":"Abcdefgh12",'
                                b'"label":"x"}'), "40017", "Parameter verification failed")
            path = "/api/v4/sub-account/api-key/list"
            response = whitebit_request(http, whitebit, path, whitebit_body(path, '{"subAccountId":"a\\u0000"}'))
            assert (response.status_code, response.json()["code"]) == (400, 9)
            call = {"method": "GET", "uri": "/api/v2/spot/account/info", "client_ip": "127.0.0.1",
                    "headers": {"access-key": "bg_\x00nul", "access-sign": "x", "access-timestamp": h.now_ms(),
                                "access-passphrase": "x"}}
            answer = http.post("/v1/verify", json=call, headers=AUTH).json()
            assert (answer["valid"], answer["code"]) == (False, "UNKNOWN_KEY")
        assert_no_unhandled_error(srv)
    finally:
        srv.stop()
