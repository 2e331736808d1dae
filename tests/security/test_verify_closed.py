"""``/v1/`` is closed unless configured (issue 8, item 4), against a real ``keyplane serve``.

Without ``KEYPLANE_VERIFY_TOKEN`` every ``/v1/`` call answers 401 before anything is looked up or spent,
unless the operator opens it with ``KEYPLANE_VERIFY_OPEN=1``; the server says at start which it is. Open
without a token, a call's ``client_ip`` (what IP allowlists judge) is believed only from a trusted proxy.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from attack import AUTH, TOKEN, raw_http, store_state, verify_call, whitebit_signed

from conftest import KEYPLANE, Server, make_server

UNAUTHORIZED = {"valid": False, "code": "UNAUTHORIZED"}


def post_json(server: Server, path: str, call: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    answer = raw_http(
        server.base_url, b"POST", path.encode(), {"Content-Type": "application/json", **(headers or {})},
        json.dumps(call).encode(),
    )
    return answer.status, answer.json()


@pytest.fixture(scope="module")
def closed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("closed"))
    srv.start()
    yield srv
    srv.stop()


def test_without_a_token_every_v1_call_is_401_and_spends_nothing(closed: Server) -> None:
    uid = closed.main_account("closed")
    key = closed.whitebit_main_key(uid)
    headers, body = whitebit_signed(key, "/api/v4/trade-account/balance")
    call = {"method": "POST", "uri": "/api/v4/trade-account/balance", "headers": headers, "body": body}
    before = store_state(closed)
    for auth in ({}, AUTH, {"Authorization": "Bearer "}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        for path in ("/v1/verify", "/v1/noop", "/v1/anything"):
            status, answer = post_json(closed, path, call, auth)
            assert status == 401 and {k: answer[k] for k in ("valid", "code")} == UNAUTHORIZED, (path, auth)
            assert "KEYPLANE_VERIFY_TOKEN" in answer["message"]
    assert store_state(closed) == before
    log = closed.log_path.read_text()
    assert "/v1/ is closed" in log and "KEYPLANE_VERIFY_OPEN=1" in log
    # the nonce of the refused call is unspent: the same call verifies once the operator sets a token
    closed.env["KEYPLANE_VERIFY_TOKEN"] = TOKEN
    try:
        closed.restart()
        assert "/v1/ needs Authorization: Bearer" in closed.log_path.read_text()
        status, answer = post_json(closed, "/v1/verify", call, AUTH)
        assert status == 200 and answer["valid"] is True, answer
        status, answer = post_json(closed, "/v1/verify", call)
        assert status == 401 and answer["code"] == "UNAUTHORIZED"
    finally:
        del closed.env["KEYPLANE_VERIFY_TOKEN"]
        closed.restart()


@pytest.fixture(scope="module")
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("opened"), {"KEYPLANE_VERIFY_OPEN": "1"})
    srv.start()
    yield srv
    srv.stop()


def test_explicitly_open_answers_and_says_so_at_start(opened: Server) -> None:
    assert "/v1/ is OPEN" in opened.log_path.read_text()
    uid = opened.main_account("opened")
    key = opened.whitebit_main_key(uid)
    headers, body = whitebit_signed(key, "/api/v4/trade-account/balance")
    call = {"method": "POST", "uri": "/api/v4/trade-account/balance", "headers": headers, "body": body}
    status, answer = post_json(opened, "/v1/verify", call)
    assert status == 200 and answer["valid"] is True


def test_open_without_a_token_believes_no_caller_chosen_client_ip(opened: Server) -> None:
    """Anyone may call an open /v1/verify, so a client_ip other than the caller's own would be an oracle
    that defeats every key's IP allowlist: HTTP 400, nothing looked up or spent."""
    uid = opened.main_account("allowlisted")
    key = opened.whitebit_main_key(uid, "--ip", "203.0.113.7")
    path = "/api/v4/trade-account/balance"
    before = store_state(opened)
    headers, body = whitebit_signed(key, path)
    call = {"method": "POST", "uri": path, "headers": headers, "body": body, "client_ip": "203.0.113.7"}
    status, answer = post_json(opened, "/v1/verify", call)
    assert status == 400 and answer["code"] == "BAD_REQUEST" and "client_ip" in answer["message"]
    assert store_state(opened) == before
    # its own address may be named; it is not on the key's allowlist
    status, answer = post_json(opened, "/v1/verify", {**call, "client_ip": "127.0.0.1"})
    assert status == 200 and answer["code"] == "IP_NOT_ALLOWED"


def test_open_believes_client_ip_from_a_trusted_proxy(tmp_path: Path) -> None:
    server = make_server(tmp_path, {"KEYPLANE_VERIFY_OPEN": "1", "KEYPLANE_TRUSTED_PROXIES": "127.0.0.0/8"})
    server.start()
    try:
        uid = server.main_account("proxied")
        key = server.whitebit_main_key(uid, "--ip", "203.0.113.7")
        path = "/api/v4/trade-account/balance"
        headers, body = whitebit_signed(key, path)
        call = {"method": "POST", "uri": path, "headers": headers, "body": body, "client_ip": "203.0.113.7"}
        status, answer = post_json(server, "/v1/verify", call)
        assert status == 200 and answer["valid"] is True, answer
        # the same caller relaying for an untrusted client (X-Forwarded-For) is that client: not believed
        headers, body = whitebit_signed(key, path)
        call = {**call, "headers": headers, "body": body}
        status, answer = post_json(server, "/v1/verify", call, {"X-Forwarded-For": "198.51.100.1"})
        assert status == 400 and "client_ip" in answer["message"]
    finally:
        server.stop()


def test_with_the_token_the_gateway_names_the_client_ip(tmp_path: Path) -> None:
    server = make_server(tmp_path, {"KEYPLANE_VERIFY_TOKEN": TOKEN})
    server.start()
    try:
        uid = server.main_account("gatewayed")
        key = server.whitebit_main_key(uid, "--ip", "203.0.113.7")
        path = "/api/v4/trade-account/balance"
        headers, body = whitebit_signed(key, path)
        out = verify_call(server, "POST", path, headers, body, client_ip="203.0.113.7")
        assert out["valid"] is True
        headers, body = whitebit_signed(key, path)
        out = verify_call(server, "POST", path, headers, body, client_ip="198.51.100.1")
        assert out["code"] == "IP_NOT_ALLOWED"
    finally:
        server.stop()


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_a_bad_open_switch_stops_the_start_with_one_line(tmp_path: Path, value: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")} | {"KEYPLANE_VERIFY_OPEN": value}
    result = subprocess.run([*KEYPLANE, "serve", "--port", "1"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "KEYPLANE_VERIFY_OPEN" in result.stderr
