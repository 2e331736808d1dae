"""The nginx gateway (deploy/nginx/) in front of a dummy upstream, verifying through a real keyplane.

Real nginx with libnginx-mod-http-lua (Debian's packages; .ci/run installs them), the config rendered from
deploy/nginx/nginx.conf.template into a temporary directory, free ports on loopback. ccxt signs every
request; the upstream is a tiny HTTP server that echoes what reached it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import ccxt
import httpx
import pytest

from conftest import Server, free_port, make_server
from keyplane.auth import Reason, Requirement, VerifyResult
from keyplane.config import Settings
from keyplane.dialects import bitget, whitebit
from keyplane.domain.model import Scheme
from keyplane.runtime import build_runtime
from keyplane.service import Actor, NewKeySpec

pytestmark = pytest.mark.nginx

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "nginx"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
LUA_MODULE = Path("/usr/lib/nginx/modules/ngx_http_lua_module.so")

if not (Path(NGINX).exists() and LUA_MODULE.exists()):
    pytest.skip(
        "needs Debian's nginx and libnginx-mod-http-lua (apt-get install nginx libnginx-mod-http-lua lua-cjson)",
        allow_module_level=True,
    )

# The operator's table override: two endpoints with a tiny limit, so the over-limit refusals show quickly.
ENDPOINTS = {
    "rules": [
        {
            "path": "/api/v2/spot/account/bills",
            "method": "GET",
            "permission": "read",
            "rate_limit": "2/minute",
            "rate_name": "bills",
        },
        {
            "path": "/api/v4/trade-account/executed-history",
            "method": "POST",
            "key_type": 1,
            "rate_limit": "2/minute",
            "rate_name": "executed-history",
        },
    ]
}


class Upstream:
    """The venue's API stand-in: answers every request with what it received, in its dialect's envelope."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body.decode(),
                }
                upstream.seen.append(record)
                envelope: dict[str, Any] = {"code": "00000", "msg": "success", "requestTime": 0}
                if self.path.startswith("/api/v4/"):  # WhiteBIT answers its data without a code
                    envelope = {}
                out = json.dumps({**envelope, "data": record}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


VERIFY_TOKEN = "gateway-token-" + "7" * 20


def render_config(prefix: Path, listen: int, keyplane: str, upstream: int) -> Path:
    text = (DEPLOY / "nginx.conf.template").read_text()
    values = {
        "PREFIX": str(prefix),
        "LISTEN": f"127.0.0.1:{listen}",
        "KEYPLANE": keyplane,
        "UPSTREAM": f"127.0.0.1:{upstream}",
        "LUA_DIR": str(DEPLOY),
        "USER": "user root;" if os.geteuid() == 0 else "",
        "VERIFY_TOKEN": VERIFY_TOKEN,
    }
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    assert "@@" not in text
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("nginx exited:\n" + (log.read_text() if log.exists() else ""))
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("nginx did not listen")


class Gateway:
    def __init__(self, base_url: str, keyplane: Server, upstream: Upstream) -> None:
        self.base_url = base_url
        self.keyplane = keyplane
        self.upstream = upstream


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    keyplane = make_server(
        root / "keyplane", {"KEYPLANE_ENDPOINTS": json.dumps(ENDPOINTS), "KEYPLANE_VERIFY_TOKEN": VERIFY_TOKEN}
    )
    upstream = Upstream()
    process: subprocess.Popen[bytes] | None = None
    try:  # whatever fails below, nothing started here outlives the module
        keyplane.start()
        prefix = root / "nginx"
        prefix.mkdir()
        port = free_port()
        conf = render_config(prefix, port, keyplane.base_url.removeprefix("http://"), upstream.port)
        command = [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
        test = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert test.returncode == 0, test.stderr
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, process, prefix / "error.log")
        yield Gateway(f"http://127.0.0.1:{port}", keyplane, upstream)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)
        upstream.close()
        keyplane.stop()


@pytest.fixture(scope="module")
def keys(gateway: Gateway) -> dict[str, Any]:
    server = gateway.keyplane
    uid = server.main_account("gateway")
    out: dict[str, Any] = {
        "uid": uid,
        "bitget": server.bitget_main_key(uid),
        "bitget_read": server.bitget_main_key(uid, "--perm", "read"),
        "bitget_far": server.bitget_main_key(uid, ips=("10.1.2.3",)),
        "whitebit": server.whitebit_main_key(uid),
        "whitebit_far": server.whitebit_main_key(uid, "--ip", "10.1.2.3"),
    }
    # a sub-account key of WhiteBIT type 1 (no withdrawals), made through the service on the same store
    runtime = build_runtime(Settings(database_url=server.database_url))
    try:
        main = runtime.service.account_of(int(uid))
        assert main is not None
        actor = Actor(account=main)
        sub = runtime.service.create_sub_account(actor, Scheme.WHITEBIT, name="gwsubone", permissions=("spot_trade",))
        issued = runtime.service.create_sub_key(
            actor, Scheme.WHITEBIT, NewKeySpec(label="type one", key_type=1), uid=sub.uid
        )
        out["whitebit_type1"] = {"apiKey": issued.key.api_key, "apiSecret": issued.secret, "uid": str(sub.uid)}
    finally:
        runtime.close()
    return out


def bitget_client(gateway: Gateway, key: dict[str, Any], **options: Any) -> Any:
    client = ccxt.bitget(
        {"apiKey": key["apiKey"], "secret": key["secretKey"], "password": key["passphrase"], "options": options}
    )
    for group in client.urls["api"]:
        client.urls["api"][group] = gateway.base_url
    return client


def whitebit_client(gateway: Gateway, key: dict[str, Any]) -> Any:
    client = ccxt.whitebit({"apiKey": key["apiKey"], "secret": key["apiSecret"]})
    client.urls["api"]["v4"] = {"public": gateway.base_url + "/api/v4/public", "private": gateway.base_url + "/api/v4"}
    return client


def signed_request(gateway: Gateway, signed: dict[str, Any], **extra_headers: str) -> httpx.Response:
    """Sends a request ccxt signed (possibly altered since) straight to the gateway."""
    url = gateway.base_url + httpx.URL(signed["url"]).raw_path.decode()
    return httpx.request(
        signed["method"],
        url,
        content=signed["body"] or None,
        headers={**signed["headers"], **extra_headers},
        timeout=10,
    )


def bitget_error(reason: Reason, detail: str = "") -> tuple[int, dict[str, Any]]:
    answer = bitget.verify_error(VerifyResult(reason, detail=detail))
    body = json.loads(answer.body)
    body.pop("requestTime")
    return answer.status, body


def whitebit_error(reason: Reason, requirement: Requirement | None = None, key: Any = None) -> tuple[int, Any]:
    answer = whitebit.verify_error(VerifyResult(reason, key=key), requirement or Requirement())
    return answer.status, json.loads(answer.body)


def assert_refused(gateway: Gateway, response: httpx.Response, expected: tuple[int, dict[str, Any]], seen: int) -> None:
    body = response.json()
    body.pop("requestTime", None)
    assert (response.status_code, body) == expected
    assert len(gateway.upstream.seen) == seen, "a refused request reached the upstream"


# --- accepted ----------------------------------------------------------------------------------------


def test_bitget_request_reaches_upstream_with_identity_headers(gateway: Gateway, keys: dict[str, Any]) -> None:
    client = bitget_client(gateway, keys["bitget"])
    # a client cannot pass itself off as another account: its identity headers are stripped
    client.headers = {"X-Keyplane-Account-Uid": "1", "X-Keyplane-Api-Key": "forged"}
    answer = client.privateSpotGetV2SpotAccountAssets({"coin": "BTC"})
    seen = answer["data"]
    assert seen["path"] == "/api/v2/spot/account/assets?coin=BTC"
    headers = seen["headers"]
    assert headers["x-keyplane-scheme"] == "bitget"
    assert headers["x-keyplane-account-uid"] == keys["uid"] == headers["x-keyplane-main-account-uid"]
    assert headers["x-keyplane-api-key"] == keys["bitget"]["apiKey"]
    assert headers["x-keyplane-key-id"] == keys["bitget"]["id"]
    assert headers["x-keyplane-is-main"] == "true"
    assert set(headers["x-keyplane-permissions"].split(",")) == set(keys["bitget"]["permissions"])
    assert headers["x-keyplane-ratelimit-limit"] == "10"
    assert "access-sign" in headers  # the signed request itself goes on unchanged


def test_bitget_signed_post_body_reaches_upstream_byte_for_byte(gateway: Gateway, keys: dict[str, Any]) -> None:
    client = bitget_client(gateway, keys["bitget"])
    params = {"symbol": "BTCUSDT", "side": "buy", "orderType": "limit", "force": "gtc", "price": "1", "size": "1"}
    seen = client.privateSpotPostV2SpotTradePlaceOrder(params)["data"]
    assert json.loads(seen["body"]) == params
    assert seen["headers"]["x-keyplane-api-key"] == keys["bitget"]["apiKey"]


def test_whitebit_request_reaches_upstream_with_identity_headers(gateway: Gateway, keys: dict[str, Any]) -> None:
    client = whitebit_client(gateway, keys["whitebit"])
    seen = client.v4PrivatePostTradeAccountBalance({"ticker": "BTC"})["data"]
    assert seen["path"] == "/api/v4/trade-account/balance"
    headers = seen["headers"]
    assert headers["x-keyplane-scheme"] == "whitebit"
    assert headers["x-keyplane-api-key"] == keys["whitebit"]["apiKey"]
    assert headers["x-keyplane-account-uid"] == keys["uid"]
    assert headers["x-keyplane-key-type"] == "2"
    assert json.loads(seen["body"])["ticker"] == "BTC"


def test_whitebit_sub_account_identity(gateway: Gateway, keys: dict[str, Any]) -> None:
    client = whitebit_client(gateway, keys["whitebit_type1"])
    headers = client.v4PrivatePostTradeAccountBalance()["data"]["headers"]
    assert headers["x-keyplane-account-uid"] == keys["whitebit_type1"]["uid"]
    assert headers["x-keyplane-main-account-uid"] == keys["uid"]
    assert headers["x-keyplane-is-main"] == "false" and headers["x-keyplane-key-type"] == "1"


def test_public_market_data_passes_without_a_key(gateway: Gateway) -> None:
    response = httpx.get(gateway.base_url + "/api/v2/spot/market/tickers")
    assert response.status_code == 200 and "x-keyplane-api-key" not in response.json()["data"]["headers"]


# --- refused: each with the dialect's own error, and the upstream never sees it -----------------------


def test_tampered_body_is_refused(gateway: Gateway, keys: dict[str, Any]) -> None:
    seen = len(gateway.upstream.seen)
    params = {"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"}
    signed = bitget_client(gateway, keys["bitget"]).sign(
        "v2/spot/trade/place-order", ["private", "spot"], "POST", params
    )
    signed["body"] = signed["body"].replace('"1"', '"1000"')
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, bitget_error(Reason.BAD_SIGNATURE), seen)
    assert response.json()["code"] == "40009" and response.headers["x-keyplane-code"] == "BAD_SIGNATURE"

    signed = whitebit_client(gateway, keys["whitebit"]).sign(
        "trade-account/balance", ["v4", "private"], "POST", {"ticker": "BTC"}
    )
    signed["body"] = signed["body"].replace("BTC", "ETH")  # the signed payload header still says BTC
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, whitebit_error(Reason.PAYLOAD_MISMATCH), seen)
    assert response.status_code == 400 and response.json()["message"] == "Invalid payload."


def test_wrong_ip_is_refused_even_with_a_forged_forwarded_for(gateway: Gateway, keys: dict[str, Any]) -> None:
    seen = len(gateway.upstream.seen)
    signed = bitget_client(gateway, keys["bitget_far"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    response = signed_request(gateway, signed, **{"X-Forwarded-For": "10.1.2.3", "X-Real-IP": "10.1.2.3"})
    assert_refused(gateway, response, bitget_error(Reason.IP_NOT_ALLOWED), seen)
    assert response.json()["msg"] == "Invalid IP"

    client = whitebit_client(gateway, keys["whitebit_far"])
    signed = client.sign("trade-account/balance", ["v4", "private"], "POST", {})
    response = signed_request(gateway, signed, **{"X-Forwarded-For": "10.1.2.3"})
    assert_refused(gateway, response, whitebit_error(Reason.IP_NOT_ALLOWED), seen)
    with pytest.raises(ccxt.PermissionDenied):
        client.v4PrivatePostTradeAccountBalance()


def test_missing_permission_is_refused(gateway: Gateway, keys: dict[str, Any]) -> None:
    seen = len(gateway.upstream.seen)
    client = bitget_client(gateway, keys["bitget_read"])
    params = {"symbol": "BTCUSDT", "side": "buy", "orderType": "market", "size": "1"}
    signed = client.sign("v2/spot/trade/place-order", ["private", "spot"], "POST", params)
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, bitget_error(Reason.PERMISSION_DENIED, "spot_trade"), seen)
    assert response.json()["msg"] == "Incorrect permissions, need spot_trade permissions"
    with pytest.raises(ccxt.PermissionDenied):
        client.privateSpotPostV2SpotTradePlaceOrder(params)

    # WhiteBIT: a type 1 key may trade but not withdraw (type 2 in the endpoint table)
    client = whitebit_client(gateway, keys["whitebit_type1"])
    signed = client.sign(
        "main-account/withdraw",
        ["v4", "private"],
        "POST",
        {"ticker": "BTC", "amount": "1", "address": "x", "uniqueId": "1"},
    )
    response = signed_request(gateway, signed)
    type1 = Requirement(key_type=2)
    key = type("Key", (), {"key_type": 1})()
    assert_refused(gateway, response, whitebit_error(Reason.PERMISSION_DENIED, type1, key), seen)
    assert response.status_code in (401, 403)


def test_replayed_request_is_refused(gateway: Gateway, keys: dict[str, Any]) -> None:
    # WhiteBIT: the same signed request twice; the nonce was spent by the first
    signed = whitebit_client(gateway, keys["whitebit"]).sign("trade-account/balance", ["v4", "private"], "POST", {})
    assert signed_request(gateway, signed).status_code == 200
    seen = len(gateway.upstream.seen)
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, whitebit_error(Reason.NONCE_TOO_LOW), seen)
    assert response.status_code == 429 and response.json()["message"] == "Too many requests."

    # Bitget has no nonce: a request replayed after its 30 s window is refused as expired
    old = bitget_client(gateway, keys["bitget"], timeDifference=31_000)
    signed = old.sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, bitget_error(Reason.EXPIRED_TIMESTAMP), seen)
    assert response.json()["code"] == "40008"


def test_over_limit_request_is_refused(gateway: Gateway, keys: dict[str, Any]) -> None:
    client = bitget_client(gateway, keys["bitget"])
    for _ in range(2):  # the operator's table allows 2 a minute on this endpoint
        client.privateSpotGetV2SpotAccountBills()
    seen = len(gateway.upstream.seen)
    signed = client.sign("v2/spot/account/bills", ["private", "spot"], "GET", {})
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, bitget_error(Reason.RATE_LIMITED), seen)
    assert response.status_code == 429 and response.json()["code"] == "429"

    client = whitebit_client(gateway, keys["whitebit"])
    for _ in range(2):
        client.v4PrivatePostTradeAccountExecutedHistory()
    seen = len(gateway.upstream.seen)
    signed = client.sign("trade-account/executed-history", ["v4", "private"], "POST", {})
    response = signed_request(gateway, signed)
    assert_refused(gateway, response, whitebit_error(Reason.RATE_LIMITED), seen)
    assert response.status_code == 429
    with pytest.raises((ccxt.DDoSProtection, ccxt.RateLimitExceeded)):
        client.v4PrivatePostTradeAccountExecutedHistory()


def test_unsigned_private_request_is_refused(gateway: Gateway) -> None:
    seen = len(gateway.upstream.seen)
    response = httpx.get(gateway.base_url + "/api/v2/spot/account/assets")
    assert_refused(gateway, response, bitget_error(Reason.MISSING_KEY), seen)
    response = httpx.post(gateway.base_url + "/api/v4/trade-account/balance", json={})
    assert_refused(gateway, response, whitebit_error(Reason.MISSING_PAYLOAD), seen)


def test_keyplane_verify_wants_the_gateway_token(gateway: Gateway, keys: dict[str, Any]) -> None:
    """The gateway's calls carry KEYPLANE_VERIFY_TOKEN (the tests above pass through it); a call that
    reaches keyplane directly without it, or with another, is refused before anything is verified."""
    signed = bitget_client(gateway, keys["bitget"]).sign("v2/spot/account/assets", ["private", "spot"], "GET", {})
    call = {"method": "GET", "uri": httpx.URL(signed["url"]).raw_path.decode(), "headers": signed["headers"]}
    url = gateway.keyplane.base_url + "/v1/verify"
    for headers in ({}, {"Authorization": "Bearer " + "x" * len(VERIFY_TOKEN)}, {"Authorization": VERIFY_TOKEN}):
        answer = httpx.post(url, json=call, headers=headers)
        assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHORIZED"
        assert answer.headers["www-authenticate"] == "Bearer"
    answer = httpx.post(url, json=call, headers={"Authorization": f"Bearer {VERIFY_TOKEN}"})
    assert answer.status_code == 200 and answer.json()["valid"] is True
