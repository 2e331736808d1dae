"""``POST /v1/verify`` and ``POST /v1/noop`` on a real ``keyplane serve``: requests signed by ccxt, as a
gateway would forward them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import ccxt
import httpx
import pytest

from conftest import Server, make_server

TOKEN = "native-verify-token-" + "5" * 16
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a verify token: without one (and without KEYPLANE_VERIFY_OPEN=1) /v1/ is closed."""
    srv = make_server(tmp_path_factory.mktemp("native"), {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    srv.start()
    yield srv
    srv.stop()


def bitget_client(key: dict[str, Any]) -> Any:
    return ccxt.bitget({"apiKey": key["apiKey"], "secret": key["secretKey"], "password": key["passphrase"]})


def whitebit_client(key: dict[str, Any]) -> Any:
    return ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"]})


def as_verify_call(
    signed: dict[str, Any], client_ip: str = "127.0.0.1", *, base64_body: bool = False
) -> dict[str, Any]:
    """A ccxt-signed request in the shape the gateway sends to /v1/verify."""
    url = httpx.URL(signed["url"])
    uri = url.raw_path.decode()
    call: dict[str, Any] = {
        "method": signed["method"],
        "uri": uri,
        "headers": signed["headers"],
        "client_ip": client_ip,
    }
    body = signed["body"] or ""
    if base64_body:
        call["body_base64"] = base64.b64encode(body.encode()).decode()
    else:
        call["body"] = body
    return call


def verify(server: Server, call: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(server.base_url + "/v1/verify", json=call, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.fixture(scope="module")
def keys(server: Server) -> dict[str, Any]:
    uid = server.main_account("native")
    return {
        "uid": uid,
        "bitget": server.bitget_main_key(uid),
        "bitget_read": server.bitget_main_key(uid, "--perm", "read"),
        "whitebit": server.whitebit_main_key(uid),
    }


def test_valid_bitget_request_answers_identity_and_rate_limit(server: Server, keys: dict[str, Any]) -> None:
    signed = bitget_client(keys["bitget"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {"coin": "BTC"})
    out = verify(server, as_verify_call(signed))
    assert out["valid"] is True and out["code"] == "VALID" and out["scheme"] == "bitget"
    identity = out["identity"]
    assert identity["account_uid"] == keys["uid"] and identity["is_main"] is True
    assert identity["api_key"] == keys["bitget"]["apiKey"] and identity["key_id"] == keys["bitget"]["id"]
    assert out["ratelimit"]["limit"] == 10 and out["ratelimit"]["remaining"] <= 9
    assert "error" not in out


def test_valid_answer_has_the_documented_fields_and_live_rate_limit(server: Server, keys: dict[str, Any]) -> None:
    """A valid answer is built from a per-key encoded head plus the rate limit: it must stay exact."""
    client = bitget_client(keys["bitget_read"])
    answers = []
    for _ in range(2):
        signed = client.sign("v2/spot/account/assets", ["private", "spot"], "GET", {"coin": "ETH"})
        answers.append(verify(server, as_verify_call(signed)))
    first, second = answers
    assert list(first) == ["valid", "code", "scheme", "identity", "secret", "ratelimit"]
    assert list(first["identity"]) == [
        "account_uid", "main_account_uid", "is_main", "account_id", "key_id", "api_key", "permissions", "key_type"
    ]
    assert first["identity"] == second["identity"] and first["identity"]["permissions"] == ["read"]
    assert first["identity"]["key_type"] is None
    assert set(first["ratelimit"]) == {"limit", "remaining", "reset"}
    assert all(isinstance(v, int) for v in first["ratelimit"].values())
    assert second["ratelimit"]["remaining"] < first["ratelimit"]["remaining"]


def test_header_names_in_any_case_and_list_values(server: Server, keys: dict[str, Any]) -> None:
    signed = bitget_client(keys["bitget"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    headers = signed["headers"].items()
    mixed = {name.title() if i % 2 else name.lower(): value for i, (name, value) in enumerate(headers)}
    assert verify(server, as_verify_call({**signed, "headers": mixed}))["valid"] is True
    listed = {name: [value] for name, value in signed["headers"].items()}
    assert verify(server, as_verify_call({**signed, "headers": listed}))["valid"] is True
    assert verify(server, as_verify_call({**signed, "headers": {**listed, "X-Empty": []}}))["valid"] is True
    # a header sent twice (nginx's list) is its values joined, as on keyplane's own routes: never verified
    twice = {name: [value, "other"] for name, value in signed["headers"].items()}
    assert verify(server, as_verify_call({**signed, "headers": twice}))["code"] == "INVALID_TIMESTAMP"


def test_valid_whitebit_request_with_base64_body(server: Server, keys: dict[str, Any]) -> None:
    signed = whitebit_client(keys["whitebit"]).sign("trade-account/balance", ["v4", "private"], "POST", {})
    out = verify(server, as_verify_call(signed, base64_body=True))
    assert out["valid"] is True and out["scheme"] == "whitebit"
    assert out["identity"]["api_key"] == keys["whitebit"]["apiKey"]
    assert out["identity"]["key_type"] == 2


def test_bad_signature_answers_bitget_error_body_for_the_gateway(server: Server, keys: dict[str, Any]) -> None:
    signed = bitget_client(keys["bitget"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    signed["headers"]["ACCESS-SIGN"] = "AAAA" + signed["headers"]["ACCESS-SIGN"][4:]
    out = verify(server, as_verify_call(signed))
    assert out["valid"] is False and out["code"] == "BAD_SIGNATURE" and out["identity"] is None
    assert out["error"]["status"] == 400
    body = json.loads(out["error"]["body"])
    assert body["code"] == "40009" and body["msg"] == "sign signature error"


def test_missing_permission_comes_from_the_endpoint_table(server: Server, keys: dict[str, Any]) -> None:
    client = bitget_client(keys["bitget_read"])
    params = {"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"}
    signed = client.sign("v2/spot/trade/place-order", ["private", "spot"], "POST", params)
    out = verify(server, as_verify_call(signed))
    assert out["code"] == "PERMISSION_DENIED"
    assert json.loads(out["error"]["body"])["msg"] == "Incorrect permissions, need spot_trade permissions"
    # the same key may read
    signed = client.sign("v2/spot/trade/unfilled-orders", ["private", "spot"], "GET", {})
    assert verify(server, as_verify_call(signed))["valid"] is True


def test_wrong_client_ip_answers_dialect_error(server: Server, keys: dict[str, Any]) -> None:
    signed = bitget_client(keys["bitget"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    out = verify(server, as_verify_call(signed, client_ip="203.0.113.9"))
    assert out["code"] == "IP_NOT_ALLOWED" and json.loads(out["error"]["body"])["code"] == "40018"


def test_replayed_whitebit_nonce_is_refused(server: Server, keys: dict[str, Any]) -> None:
    signed = whitebit_client(keys["whitebit"]).sign("trade-account/balance", ["v4", "private"], "POST", {})
    call = as_verify_call(signed)
    assert verify(server, call)["valid"] is True
    out = verify(server, call)
    assert out["code"] == "NONCE_TOO_LOW" and out["error"]["status"] == 429
    assert json.loads(out["error"]["body"])["message"] == "Too many requests."


def test_unsigned_request_is_refused_in_the_path_dialect(server: Server) -> None:
    out = verify(server, {"method": "POST", "uri": "/api/v4/trade-account/balance", "headers": {}, "body": "{}"})
    assert out["valid"] is False and out["code"] == "MISSING_PAYLOAD"
    assert json.loads(out["error"]["body"])["message"] == "Payload not provided."


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"[]",
        b'{"uri": "/x"}',
        b'{"method": "GET"}',
        b'{"method": "GET", "uri": "/a", "body_base64": "@@"}',
    ],
)
def test_malformed_verify_call_is_400(server: Server, payload: bytes) -> None:
    response = httpx.post(server.base_url + "/v1/verify", content=payload, headers=AUTH)
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"


def test_noop_reads_the_body_and_answers_the_asked_size(server: Server) -> None:
    response = httpx.post(server.base_url + "/v1/noop?size=300", content=b"x" * 500, headers=AUTH)
    assert response.status_code == 200 and len(response.content) == 300
    response = httpx.post(server.base_url + "/v1/noop", content=b"y" * 200, headers=AUTH)
    assert len(response.content) == 200 and response.json()["ok"] is True
