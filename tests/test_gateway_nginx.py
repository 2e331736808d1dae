"""The nginx gateway (deploy/nginx/) in front of a dummy upstream, verifying through a real keyplane.

Real nginx with libnginx-mod-http-lua (Debian's packages; .ci/run installs them), the config rendered from
deploy/nginx/nginx.conf.template into a temporary directory, free ports on loopback. ccxt signs every
request; the upstream is a tiny HTTP server that echoes what reached it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
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
from keyplane.services import Actor, NewKeySpec

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
    """The venue's API stand-in: answers every request with what it received, in its dialect's envelope.

    ``lines`` holds the request line of everything that reached it, parsable or not, any method; ``seen``
    the requests it could parse, with their headers as received (``raw_headers`` keeps repeats)."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.lines: list[bytes] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def parse_request(self) -> bool:
                upstream.lines.append(self.raw_requestline)
                return super().parse_request()

            def __getattr__(self, name: str) -> Any:  # do_GET, do_POST, do_PUT, ... any method at all
                if name.startswith("do_"):
                    return self._answer
                raise AttributeError(name)

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {
                    "method": self.command,
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "raw_headers": [[k, v] for k, v in self.headers.items()],
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
    def __init__(self, base_url: str, keyplane: Server, upstream: Upstream, access_log: Path) -> None:
        self.base_url = base_url
        self.keyplane = keyplane
        self.upstream = upstream
        self.access_log = access_log

    def verify_calls(self) -> int:
        """How many calls nginx has made to keyplane's /v1/verify (its access log has one line each).

        nginx writes a request's lines as it finishes it, which may be just after the client has the
        answer: the count is read until it holds still for 0.1 s."""
        count, deadline = -1, time.monotonic() + 3
        while time.monotonic() < deadline:
            now = self.access_log.read_text().count(" /_keyplane/verify ")
            if now == count:
                return count
            count = now
            time.sleep(0.1)
        return count


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
        yield Gateway(f"http://127.0.0.1:{port}", keyplane, upstream, prefix / "access.log")
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
        main = runtime.service.accounts.account_of(int(uid))
        assert main is not None
        actor = Actor(account=main)
        sub = runtime.service.subaccounts.create_sub_account(
            actor, Scheme.WHITEBIT, name="gwsubone", permissions=("spot_trade",)
        )
        issued = runtime.service.keys.create_sub_key(
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


# --- one path, one meaning; identity headers are keyplane's alone (issue 8, item 2) -------------------
#
# Each trick is a request target an upstream could read otherwise than nginx routed it or keyplane
# verified it. The gateway refuses every one on every location itself (keyplane_guard.lua), before any
# location runs, so neither the public locations nor keyplane's own checks are relied on.

PUBLIC = (b"/api/v2/spot/market/", b"/api/v4/public/")
PRIVATE = (b"/api/v2/spot/account/", b"/api/v4/trade-account/")
NOWHERE = (b"/static/",)  # the 404 location

TRICKS: dict[str, bytes] = {  # appended to a location's prefix
    "dot-dot-semicolon": b"..;/..;/spot/wallet/withdrawal",
    "dot-dot": b"../../spot/wallet/withdrawal",
    "dot-dot-at-end": b"tickers/..",
    "dot-dot-before-query": b"x/..?symbol=BTCUSDT",
    "dot": b"./tickers",
    "dot-at-end": b"tickers/.",
    "encoded-dot-dot": b"%2e%2e/%2e%2e/spot/wallet/withdrawal",
    "encoded-dot-dot-upper": b"%2E%2E/x",
    "half-encoded-dot-dot": b".%2e/x",
    "encoded-slash": b"..%2f..%2fspot%2fwallet%2fwithdrawal",
    "encoded-letter": b"%74ickers",
    "encoded-nul": b"tickers%00",
    "doubled-slash": b"/tickers",
    "tripled-slash": b"x///tickers",
    "backslash": b"tickers\\..\\..\\wallet\\withdrawal",
    "semicolon": b"tickers;jsessionid=1",
    "semicolon-segment": b";/tickers",
    "control": b"tick\x01ers",
    "delete": b"tick\x7fers",
    "tab": b"tick\ters",
    "non-ascii": "tickérs".encode(),
    "non-ascii-latin1": b"tick\xe9rs",
    "query-control": b"tickers?symbol=\x01",
    "query-non-ascii": b"tickers?symbol=\xc3\xa9",
    "fragment": b"tickers#x",
    "trailing-slash": b"tickers/",
    "trailing-dot": b"tickers.",
    "leading-dot": b".tickers",
    "dot-dot-in-name": b"tick..ers",
    "colon": b"x:tickers",
    "at": b"@tickers",
}

WHOLE_TARGETS: dict[str, bytes] = {  # tricks that start outside any one location
    "into-public-from-404": b"/static/../api/v2/spot/market/tickers",
    "into-private-from-public": b"/api/v2/spot/market/../../v2/spot/wallet/withdrawal",
    "into-public-from-private": b"/api/v2/spot/account/../market/tickers",
    "leading-double-slash": b"//api/v2/spot/market/tickers",
    "api-dot-dot": b"/api/../api/v4/public/ticker",
}

FORGED: list[tuple[str, str]] = [  # identity headers a client may try to pass off as keyplane's
    ("X-Keyplane-Account-Uid", "1"),
    ("x-keyplane-api-key", "forged"),
    ("X-KEYPLANE-IS-MAIN", "true"),
    ("X-Keyplane-Permissions", "withdraw"),
    ("X-Keyplane-Permissions", "wallet_withdraw"),  # twice: no copy may survive
    ("X-Keyplane-Key-Type", "2"),
    ("X-Keyplane-Something-New", "x"),  # one keyplane does not set today
    ("X_Keyplane_Api_Key", "forged"),  # CGI/WSGI read "_" as "-"
    ("X-Keyplane-", "x"),
]


Answer = tuple[int, dict[str, str], bytes]


def raw_request(
    gateway: Gateway, method: str, target: bytes, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> Answer:
    """Sends ``target`` byte for byte (httpx would normalize it) and returns status, headers and body."""
    port = int(gateway.base_url.rsplit(":", 1)[1])
    head = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode()
    if body:
        head += b"Content-Length: %d\r\n" % len(body)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def bitget_signed_headers(key: dict[str, Any], method: str, target: bytes, body: bytes = b"") -> list[tuple[str, str]]:
    """A correct Bitget signature over the raw target: the trick is signed, so only the path check stops it."""
    timestamp = str(int(time.time() * 1000))
    prehash = timestamp.encode() + method.encode() + target + body
    signature = base64.b64encode(hmac.new(key["secretKey"].encode(), prehash, hashlib.sha256).digest()).decode()
    return [
        ("ACCESS-KEY", key["apiKey"]),
        ("ACCESS-SIGN", signature),
        ("ACCESS-TIMESTAMP", timestamp),
        ("ACCESS-PASSPHRASE", key["passphrase"]),
        ("Content-Type", "application/json"),
    ]


def whitebit_signed(key: dict[str, Any], target: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """A correct WhiteBIT signature whose body names the raw target as its `request`."""
    body = json.dumps({"request": target.decode("latin-1"), "nonce": str(time.time_ns())}).encode()
    payload = base64.b64encode(body).decode()
    signature = hmac.new(key["apiSecret"].encode(), payload.encode(), hashlib.sha512).hexdigest()
    headers = [
        ("Content-Type", "application/json"),
        ("X-TXC-APIKEY", key["apiKey"]),
        ("X-TXC-PAYLOAD", payload),
        ("X-TXC-SIGNATURE", signature),
    ]
    return headers, body


def assert_guard_refused(gateway: Gateway, target: bytes, answer: Answer, lines: int) -> None:
    status, headers, body = answer
    assert gateway.upstream.lines[lines:] == [], f"{target!r} reached the upstream"
    if target.startswith(NOWHERE) and status == 404:  # `return 404` answers before the guard runs
        return
    assert status == 400, (target, status, body)
    if headers.get("x-keyplane-code") is None:  # nginx itself refused it before any location ran
        assert b"400 Bad Request" in body, (target, body)
        return
    assert headers["x-keyplane-code"] == "BAD_TARGET"
    error = json.loads(body)
    if target.startswith(b"/api/v2/"):  # Bitget's envelope, as keyplane's verifier answers BAD_TARGET
        assert error["code"] == "40017" and error["msg"] == "Parameter verification failed"
        assert error["data"] is None and isinstance(error["requestTime"], int)
    elif target.startswith(b"/api/v4/"):
        assert error == {"code": 9, "message": "Invalid payload."}
    else:
        assert error == {"code": "400", "msg": "bad path"}


@pytest.mark.parametrize("trick", TRICKS, ids=list(TRICKS))
def test_non_canonical_targets_never_reach_the_upstream(gateway: Gateway, keys: dict[str, Any], trick: str) -> None:
    verify_calls = gateway.verify_calls()
    for prefix in (*PUBLIC, *PRIVATE, *NOWHERE):
        target = prefix + TRICKS[trick]
        lines = len(gateway.upstream.lines)
        assert_guard_refused(gateway, target, raw_request(gateway, "GET", target, FORGED), lines)
        # signed right: a key's signature over the trick does not carry it through either
        answer = raw_request(gateway, "GET", target, bitget_signed_headers(keys["bitget"], "GET", target))
        assert_guard_refused(gateway, target, answer, lines)
        headers, body = whitebit_signed(keys["whitebit"], target)
        assert_guard_refused(gateway, target, raw_request(gateway, "POST", target, headers, body), lines)
    assert gateway.verify_calls() == verify_calls, "the gateway left a path check to keyplane"


@pytest.mark.parametrize("name", WHOLE_TARGETS, ids=list(WHOLE_TARGETS))
def test_targets_that_cross_locations_never_reach_the_upstream(
    gateway: Gateway, keys: dict[str, Any], name: str
) -> None:
    target = WHOLE_TARGETS[name]
    lines = len(gateway.upstream.lines)
    assert_guard_refused(gateway, target, raw_request(gateway, "GET", target), lines)
    verify_calls = gateway.verify_calls()
    answer = raw_request(gateway, "GET", target, bitget_signed_headers(keys["bitget_read"], "GET", target))
    assert_guard_refused(gateway, target, answer, lines)
    assert gateway.verify_calls() == verify_calls, "the gateway left a path check to keyplane"


def keyplane_headers(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (name.lower(), value)
        for name, value in record["raw_headers"]
        if name.lower().replace("_", "-").startswith("x-keyplane")
    ]


def test_public_locations_strip_forged_identity_headers(gateway: Gateway) -> None:
    for target in (b"/api/v2/spot/market/tickers?symbol=BTCUSDT", b"/api/v4/public/ticker"):
        status, _, body = raw_request(gateway, "GET", target, [*FORGED, ("X-Real-IP", "10.9.9.9")])
        assert status == 200
        record = json.loads(body)["data"]
        assert record["path"] == target.decode()
        assert keyplane_headers(record) == [], "a forged identity header reached the upstream"
        assert record["headers"]["x-real-ip"] == "127.0.0.1"
        assert gateway.upstream.seen[-1] == record


def test_the_404_location_passes_nothing(gateway: Gateway) -> None:
    lines = len(gateway.upstream.lines)
    for target in (b"/", b"/static/x", b"/API/v2/spot/market/tickers", b"/v1/verify", b"/_keyplane/verify"):
        status, headers, _ = raw_request(gateway, "POST", target, FORGED, b"{}")
        assert status == 404 and "x-keyplane-api-key" not in headers
    assert gateway.upstream.lines[lines:] == []


def test_private_locations_send_only_keyplanes_identity(gateway: Gateway, keys: dict[str, Any]) -> None:
    key = keys["bitget_read"]
    target = b"/api/v2/spot/account/assets?coin=BTC"
    verify_calls = gateway.verify_calls()
    status, _, body = raw_request(gateway, "GET", target, [*bitget_signed_headers(key, "GET", target), *FORGED])
    assert status == 200, body
    assert gateway.verify_calls() == verify_calls + 1
    record = json.loads(body)["data"]
    got = keyplane_headers(record)
    names = [name for name, _ in got]
    assert len(names) == len(set(names)), "an identity header arrived twice"
    assert dict(got)["x-keyplane-api-key"] == key["apiKey"]
    assert dict(got)["x-keyplane-account-uid"] == keys["uid"]
    assert dict(got)["x-keyplane-permissions"] == "read"
    assert "x-keyplane-something-new" not in dict(got) and "x-keyplane-key-type" not in dict(got)

    # refused requests carry nothing anywhere
    lines = len(gateway.upstream.lines)
    status, _, _ = raw_request(gateway, "GET", target, FORGED)
    assert status == 400 and gateway.upstream.lines[lines:] == []


def test_too_many_headers_are_refused_not_half_stripped(gateway: Gateway) -> None:
    lines = len(gateway.upstream.lines)
    padding = [(f"X-Pad-{i}", "x") for i in range(200)]
    for target in (b"/api/v2/spot/market/tickers", b"/api/v4/public/ticker"):
        status, _, _ = raw_request(gateway, "GET", target, [*padding, ("X-Keyplane-Account-Uid", "1")])
        assert status == 400
    assert gateway.upstream.lines[lines:] == []


def test_the_upstream_gets_the_verified_target_byte_for_byte(gateway: Gateway, keys: dict[str, Any]) -> None:
    # ccxt percent-encodes the query and signs it as sent; the upstream reads those very bytes
    client = bitget_client(gateway, keys["bitget"])
    signed = client.sign("v2/spot/account/assets", ["private", "spot"], "GET", {"coin": "BTC/USDT x,y"})
    target = httpx.URL(signed["url"]).raw_path
    assert b"%2F" in target
    response = signed_request(gateway, signed)
    assert response.status_code == 200
    assert response.json()["data"]["path"] == target.decode()

    public = b"/api/v2/spot/market/tickers?symbol=BTC%2FUSDT&note=a+b&x=%25"
    status, _, body = raw_request(gateway, "GET", public)
    assert status == 200 and json.loads(body)["data"]["path"] == public.decode()

    # an absolute-form target: nginx's $request_uri is its path and query, and only that goes on
    status, _, body = raw_request(gateway, "GET", b"http://venue.example/api/v4/public/ticker?x=1")
    assert status == 200 and json.loads(body)["data"]["path"] == "/api/v4/public/ticker?x=1"


def test_a_signing_header_sent_twice_or_a_query_moved_into_the_body_never_reaches_the_upstream(
    gateway: Gateway, keys: dict[str, Any]
) -> None:
    key = keys["bitget_read"]
    target = b"/api/v2/spot/account/assets?coin=BTC"
    lines = len(gateway.upstream.lines)
    signed = bitget_signed_headers(key, "GET", target)
    # the key twice (the same value, or another key after it): nginx hands keyplane both, an upstream
    # could read either; keyplane reads the one header their values make, which no key is
    for second in (key["apiKey"], keys["bitget"]["apiKey"]):
        status, headers, body = raw_request(gateway, "GET", target, [*signed, ("ACCESS-KEY", second)])
        assert status == 400 and headers["x-keyplane-code"] == "UNKNOWN_KEY", body
    status, headers, body = raw_request(gateway, "GET", target, [*signed, signed[1]])  # ACCESS-SIGN twice
    assert status == 400 and headers["x-keyplane-code"] == "BAD_SIGNATURE", body
    # the signed query cut short, its tail sent as a body the upstream would ignore
    short = b"/api/v2/spot/account/assets?co"
    status, headers, body = raw_request(gateway, "GET", short, signed, b"in=BTC")
    assert status == 400 and headers["x-keyplane-code"] == "BAD_TARGET", body
    assert json.loads(body)["code"] == "40017"
    assert gateway.upstream.lines[lines:] == []
    # the request as signed passes
    status, _, body = raw_request(gateway, "GET", target, bitget_signed_headers(key, "GET", target))
    assert status == 200, body
