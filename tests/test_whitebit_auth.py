"""WhiteBIT request authentication on keyplane's /api/v4 routes: every refusal gets WhiteBIT's documented
answer and changes nothing (no sub-account made, no nonce spent); nonce state survives a restart.

The refusals are sent by a hand-made signer (tests/clients/whitebit_http.py) because no real client sends
them on purpose. Each test has its own main account and key."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import httpx
import pytest

from clients.whitebit_http import Operator, WhitebitClient, compact, now_ms, sign
from conftest import Server

CREATE = "/api/v4/sub-account/create"
LIST = "/api/v4/sub-account/list"

TOO_MANY = {"code": 0, "message": "Too many requests.", "errors": {}}
STALE = {"code": 0, "message": "Your nonce is more than 5 seconds lesser than the current nonce.", "errors": {}}
INVALID_PAYLOAD = {"code": 9, "message": "Invalid payload.", "errors": {}}
UNAUTHORIZED = {"code": 10, "message": "Unauthorized request.", "errors": {}}
DISABLED = {"code": 2, "message": "This action is unauthorized. Enable your key in API settings", "errors": {}}
NOT_MAIN = {"code": 0, "message": "This action is unauthorized.", "errors": {}}  # ccxt: PermissionDenied


def new_fields() -> dict[str, Any]:
    return {
        "alias": "auth" + secrets.token_hex(4),
        "shareKyc": True,
        "permissions": {"spotEnabled": True, "collateralEnabled": False},
    }


@pytest.fixture
def client(server: Server, operator: Operator) -> WhitebitClient:
    return operator.client(server.base_url, "auth")


def subs(client: WhitebitClient) -> list[str]:
    return [a["alias"] for a in client.call(LIST)["data"]]


def refused(response: httpx.Response, status: int, body: dict[str, Any]) -> None:
    assert (response.status_code, response.json()) == (status, body)


def test_a_replayed_monotonic_nonce_is_too_many_requests_and_creates_nothing(client: WhitebitClient) -> None:
    fields = new_fields()
    body = compact(client.body(CREATE, fields))
    assert client.post_raw(CREATE, body).status_code == 201
    refused(client.post_raw(CREATE, body), 429, TOO_MANY)
    assert subs(client) == [fields["alias"]]


def test_a_nonce_below_the_last_one_is_refused(client: WhitebitClient) -> None:
    high = client.body(LIST)
    assert client.post_raw(LIST, compact(high)).status_code == 200
    low = {**client.body(CREATE, new_fields()), "nonce": str(int(high["nonce"]) - 1)}
    refused(client.post_raw(CREATE, compact(low)), 429, TOO_MANY)
    equal = {**client.body(CREATE, new_fields()), "nonce": high["nonce"]}
    refused(client.post_raw(CREATE, compact(equal)), 429, TOO_MANY)
    assert subs(client) == []


def test_a_monotonic_nonce_need_not_be_a_timestamp(client: WhitebitClient) -> None:
    for nonce in (1, 2, "3", 17):  # a JSON integer or a string of digits, only ever increasing
        body = {"request": LIST, "nonce": nonce}
        assert client.post_raw(LIST, compact(body)).status_code == 200
    refused(client.post_raw(LIST, compact({"request": LIST, "nonce": 16})), 429, TOO_MANY)


def test_a_replayed_windowed_nonce_is_refused_and_creates_nothing(client: WhitebitClient) -> None:
    fields = new_fields()
    body = compact(client.body(CREATE, fields, window=True))
    assert client.post_raw(CREATE, body).status_code == 201
    refused(client.post_raw(CREATE, body), 429, TOO_MANY)
    # the same nonce with another body is a replay too
    other = {**json.loads(body), "alias": "other" + secrets.token_hex(4)}
    refused(client.post_raw(CREATE, compact(other)), 429, TOO_MANY)
    assert subs(client) == [fields["alias"]]


def test_windowed_nonces_may_arrive_out_of_order_within_the_window(client: WhitebitClient) -> None:
    now = now_ms()
    for nonce in (now + 200, now - 1000, now + 100, now - 4000):
        body = {"request": LIST, "nonce": nonce, "nonceWindow": True}
        assert client.post_raw(LIST, compact(body)).status_code == 200, nonce


def test_a_stale_or_future_windowed_nonce_is_refused_and_creates_nothing(client: WhitebitClient) -> None:
    for offset in (-6_000, +6_000, -3_600_000):
        body = {**client.body(CREATE, new_fields(), window=True), "nonce": str(now_ms() + offset)}
        refused(client.post_raw(CREATE, compact(body)), 401, STALE)  # not a 429: no back-off
    assert subs(client) == []


def test_a_payload_that_differs_from_the_body_is_invalid(client: WhitebitClient) -> None:
    body = compact(client.body(CREATE, new_fields()))
    other = compact({**json.loads(body), "alias": "swapped" + secrets.token_hex(4)})
    payload = base64.b64encode(other).decode()
    # signed correctly over the payload, but the body sent is not what the payload says
    refused(client.post_raw(CREATE, body, payload=payload), 400, INVALID_PAYLOAD)
    refused(client.post_raw(CREATE, other, payload=base64.b64encode(body).decode()), 400, INVALID_PAYLOAD)
    refused(client.post_raw(CREATE, body, payload="not base64!"), 400, INVALID_PAYLOAD)
    assert subs(client) == []


def test_spaced_json_is_an_invalid_payload(client: WhitebitClient) -> None:
    fields = client.body(CREATE, new_fields())
    for spaced in (json.dumps(fields).encode(), json.dumps(fields, indent=2).encode(), compact(fields) + b"\n"):
        refused(client.post_raw(CREATE, spaced), 400, INVALID_PAYLOAD)
    # spaces inside strings are not spacing
    quoted = {**client.body(CREATE, new_fields()), "email": None}
    quoted["alias"] = "with space " + secrets.token_hex(3)
    assert client.post_raw(CREATE, compact(quoted)).status_code == 201
    assert subs(client) == [quoted["alias"]]


def test_a_body_that_is_not_a_json_object_is_an_invalid_payload(client: WhitebitClient) -> None:
    for body in (b"[1,2]", b"not json", b'"text"'):
        refused(client.post_raw(LIST, body), 400, INVALID_PAYLOAD)


def test_a_missing_or_wrong_request_field_is_refused(client: WhitebitClient) -> None:
    body = {"nonce": str(client.next_nonce()), **new_fields()}
    refused(client.post_raw(CREATE, compact(body)), 400, {"code": 0, "message": "Request not provided.", "errors": {}})
    body = {"request": "", "nonce": str(client.next_nonce()), **new_fields()}
    refused(client.post_raw(CREATE, compact(body)), 400, {"code": 0, "message": "Request not provided.", "errors": {}})
    body = {"request": LIST, "nonce": str(client.next_nonce()), **new_fields()}
    refused(client.post_raw(CREATE, compact(body)), 400, INVALID_PAYLOAD)
    assert subs(client) == []


def test_a_missing_nonce_is_refused(client: WhitebitClient) -> None:
    missing = {"code": 0, "message": "Nonce not provided.", "errors": {}}
    for nonce in (None, "", "abc", -5, True, "²", "١٢٣", 1.5, [1], {"n": 1}):
        body: dict[str, Any] = {"request": CREATE, **new_fields()}
        if nonce is not None:
            body["nonce"] = nonce
        refused(client.post_raw(CREATE, compact(body)), 400, missing)
    assert subs(client) == []


def test_a_nonce_window_that_is_not_a_boolean_is_refused(client: WhitebitClient) -> None:
    body = {**client.body(CREATE, new_fields()), "nonceWindow": "true"}
    refused(client.post_raw(CREATE, compact(body)), 400, {"code": 0, "message": "Invalid nonceWindow.", "errors": {}})
    assert subs(client) == []


def test_a_bad_signature_is_unauthorized_and_spends_no_nonce(client: WhitebitClient) -> None:
    high = client.body(CREATE, new_fields())
    high["nonce"] = str(int(high["nonce"]) + 10_000)
    body = compact(high)
    payload = base64.b64encode(body).decode()
    refused(client.post_raw(CREATE, body, signature=sign("0" * 32, payload)), 401, UNAUTHORIZED)
    refused(client.post_raw(CREATE, body, signature="zz"), 401, UNAUTHORIZED)
    refused(client.post_raw(CREATE, body, headers={"X-TXC-SIGNATURE": None}), 401, UNAUTHORIZED)
    # the refused request's high nonce was never recorded: a lower, valid one still passes
    assert subs(client) == []


def test_an_unknown_or_missing_key_is_unauthorized(client: WhitebitClient) -> None:
    body = compact(client.body(CREATE, new_fields()))
    refused(client.post_raw(CREATE, body, api_key=secrets.token_hex(16)), 401, UNAUTHORIZED)
    refused(client.post_raw(CREATE, body, headers={"X-TXC-APIKEY": None}), 401, UNAUTHORIZED)
    refused(client.post_raw(CREATE, body, api_key="x" * 500), 401, UNAUTHORIZED)
    assert subs(client) == []


def test_a_missing_payload_header_is_payload_not_provided(client: WhitebitClient) -> None:
    body = compact(client.body(CREATE, new_fields()))
    answer = {"code": 0, "message": "Payload not provided.", "errors": {}}
    refused(client.post_raw(CREATE, body, headers={"X-TXC-PAYLOAD": None}), 401, answer)
    refused(client.post_raw(CREATE, body, payload=""), 401, answer)
    assert subs(client) == []


def test_a_key_of_another_dialect_is_unknown_here(server: Server, operator: Operator) -> None:
    bitget = operator.bitget_main_key(operator.main_account("auth-bitget"))
    other = WhitebitClient(server.base_url, bitget["apiKey"], bitget["secretKey"])
    refused(other.post(LIST), 401, UNAUTHORIZED)


def test_unknown_routes_and_other_methods_are_not_found(client: WhitebitClient) -> None:
    assert client.post("/api/v4/sub-account/nope").status_code == 404
    assert client.post("/api/v4/main-account/balance").status_code == 404
    assert client.http.get(client.base_url + LIST).status_code == 404


def test_funds_endpoints_are_not_available_once_verified(client: WhitebitClient) -> None:
    sub = client.call(CREATE, new_fields(), expect=201)
    gone = {"message": "This endpoint is not available for this account."}
    for path, fields in (
        ("/api/v4/sub-account/balances", {"id": sub["id"]}),
        ("/api/v4/sub-account/transfer", {"id": sub["id"], "direction": "main_to_sub", "amount": "1", "ticker": "BTC"}),
        ("/api/v4/sub-account/transfer/history", {"id": sub["id"]}),
        ("/api/v4/sub-account/kyc-url", {"id": sub["id"]}),
        ("/api/v4/sub-account/withdraw/unconfirmed-list", {}),
        ("/api/v4/sub-account/withdraw/confirm", {"id": sub["id"]}),
    ):
        refused(client.post(path, fields), 404, gone)
        # unsigned, it is refused like any other route
        response = client.http.post(client.base_url + path, content=b"{}")
        refused(response, 401, {"code": 0, "message": "Payload not provided.", "errors": {}})


def test_sub_account_keys_cannot_manage_and_stop_when_blocked_or_outside_their_ips(client: WhitebitClient) -> None:
    sub = client.call(CREATE, new_fields(), expect=201)
    key = client.call("/api/v4/sub-account/api-key/create", {"type": 2, "subAccountId": sub["id"], "title": "t"}, 201)
    sub_client = WhitebitClient(client.base_url, key["apiKey"], key["apiSecret"])
    refused(sub_client.post(LIST), 403, NOT_MAIN)
    refused(sub_client.post(CREATE, new_fields()), 403, NOT_MAIN)

    # blocked: its keys stop with the very next request, and start again when unblocked
    client.call("/api/v4/sub-account/block", {"id": sub["id"]})
    refused(sub_client.post(LIST), 403, DISABLED)
    listed = client.call("/api/v4/sub-account/api-key/list", {"subAccountId": sub["id"]})
    assert listed["data"][0]["isEnabled"] is False
    client.call("/api/v4/sub-account/unblock", {"id": sub["id"]})
    refused(sub_client.post(LIST), 403, NOT_MAIN)

    # an IP allowlist that does not hold the caller's address (127.0.0.1)
    ips = "/api/v4/sub-account/api-key/ip-address/"
    client.call(ips + "create", {"apiKeyId": key["id"], "ip": "10.0.0.1"}, 201)
    refused(sub_client.post(LIST), 403, DISABLED)
    client.call(ips + "create", {"apiKeyId": key["id"], "ip": "127.0.0.1"}, 201)
    refused(sub_client.post(LIST), 403, NOT_MAIN)
    client.call(ips + "delete", {"apiKeyId": key["id"], "ip": "127.0.0.1"})
    refused(sub_client.post(LIST), 403, DISABLED)

    # deleted: unknown at once
    client.call("/api/v4/sub-account/api-key/delete", {"apiKeyId": key["id"]})
    refused(sub_client.post(LIST), 401, UNAUTHORIZED)
    assert len(subs(client)) == 1


def test_nonce_state_survives_a_restart(server: Server, operator: Operator) -> None:
    uid = operator.main_account("auth-restart")
    key = operator.whitebit_main_key(uid)
    monotonic = WhitebitClient(server.base_url, key["apiKey"], key["apiSecret"])
    windowed_key = operator.whitebit_main_key(uid)
    windowed = WhitebitClient(server.base_url, windowed_key["apiKey"], windowed_key["apiSecret"])

    replay = compact(monotonic.body(CREATE, new_fields()))
    lower = compact({**monotonic.body(CREATE, new_fields()), "nonce": str(int(json.loads(replay)["nonce"]) - 1)})
    assert monotonic.post_raw(CREATE, replay).status_code == 201

    # A windowed nonce a little ahead of the clock, so that it is still inside WhiteBIT's 5 s window after the
    # restart. A restart on a loaded machine can outlast the window, and then the replay proves nothing: the
    # scenario is tried again (each time with a new sub-account), up to three restarts.
    made = 1  # the monotonic key's one accepted create
    for _attempt in range(3):
        ahead = {**windowed.body(CREATE, new_fields(), window=True), "nonce": now_ms() + 3_500}
        windowed_replay = compact(ahead)
        assert windowed.post_raw(CREATE, windowed_replay).status_code == 201
        made += 1
        server.restart()
        answer = windowed.post_raw(CREATE, windowed_replay)
        if now_ms() < ahead["nonce"] + 5_000:
            refused(answer, 429, TOO_MANY)
            break
    else:
        pytest.fail("three restarts each outlasted the 5 s nonce window")

    refused(monotonic.post_raw(CREATE, replay), 429, TOO_MANY)
    refused(monotonic.post_raw(CREATE, lower), 429, TOO_MANY)
    assert len(subs(monotonic)) == made  # one per accepted request, none per replay


def test_odd_header_values_get_whitebits_envelope_never_a_500(client: WhitebitClient) -> None:
    body = compact(client.body(LIST))
    odd = ["\u00e9\u00ff", "x" * 5000, "=", "AAAA====", "%00", "a\tb"]
    for header in ("X-TXC-APIKEY", "X-TXC-PAYLOAD", "X-TXC-SIGNATURE"):
        for value in odd:
            response = client.post_raw(LIST, body, headers={header: value.encode("latin-1")})
            assert response.status_code in (400, 401), (header, value, response.text)
            assert isinstance(response.json()["code"], int)
