"""Helpers for the Bitget tests: a recording ccxt client, a raw httpx signer, names, and the record of
every secret issued and every response body seen during the run (scanned by ``test_secrets_scan.py``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import secrets
import string
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ccxt
import httpx

from conftest import Server
from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import Runtime, build_runtime

USER = "/api/v2/user/"
# Creation responses legitimately show a new secret once; every other response body must not.
CREATION_PATHS = (USER + "batch-create-subaccount-and-apikey", USER + "create-virtual-subaccount-apikey")


@dataclass
class RunRecord:
    """What the Bitget tests saw: secrets issued, response bodies received, servers' working dirs."""

    secrets: set[str] = field(default_factory=set)
    bodies: list[tuple[str, int, bytes]] = field(default_factory=list)  # (path, status, body)
    workdirs: set[Path] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def secret(self, *values: str | None) -> None:
        with self.lock:
            self.secrets.update(v for v in values if v)

    def body(self, path: str, status: int, body: bytes) -> None:
        with self.lock:
            self.bodies.append((path, status, body))
        if path in CREATION_PATHS and status == 200:
            try:
                data = json.loads(body).get("data")
            except ValueError:
                return
            for entry in data if isinstance(data, list) else [data]:
                if isinstance(entry, dict):
                    self.secret(entry.get("secretKey"))


RECORD = RunRecord()


def track(server: Server) -> Server:
    RECORD.workdirs.add(server.workdir)
    return server


def new_passphrase() -> str:
    """A random 20-character passphrase, recorded as a secret (it must never show up either)."""
    value = "Pp" + secrets.token_hex(9)
    RECORD.secret(value)
    return value


_NAMES = random.Random()
_USED_NAMES: set[str] = set()


def new_name() -> str:
    """A fresh, venue-unique 8-letter sub-account name."""
    while True:
        name = "".join(_NAMES.choice(string.ascii_letters) for _ in range(8))
        if name.lower() not in _USED_NAMES:
            _USED_NAMES.add(name.lower())
            return name


@dataclass
class MainKey:
    uid: str
    api_key: str
    secret: str
    passphrase: str


_RUNTIMES: dict[str, Runtime] = {}


def _operator(server: Server) -> Runtime:
    """The operator's side of ``server`` in this process: what ``keyplane accounts/keys create`` runs."""
    runtime = _RUNTIMES.get(server.database_url)
    if runtime is None:
        runtime = _RUNTIMES[server.database_url] = build_runtime(Settings(database_url=server.database_url))
    return runtime


def main_key(
    server: Server, uid: str | None = None, ips: tuple[str, ...] = ("127.0.0.1",), *, cli: bool = False
) -> MainKey:
    """A main account (made when ``uid`` is None) and a Bitget key of it.

    ``cli=True`` goes through the real ``keyplane`` command; otherwise the same service calls run in this
    process, which saves the command's 1.3 s start-up per call.
    """
    track(server)
    if cli:
        uid = uid or server.main_account("venue-" + secrets.token_hex(3))
        made = server.bitget_main_key(uid, ips=ips)
        key = MainKey(uid=uid, api_key=made["apiKey"], secret=made["secretKey"], passphrase=made["passphrase"])
    else:
        service = _operator(server).service
        uid = uid or str(service.accounts.create_main_account("venue-" + secrets.token_hex(3)).uid)
        issued = service.keys.issue_main_key(
            int(uid), Scheme.BITGET, permissions=["read", "spot_trade", "margin_trade", "contract_trade", "transfer"],
            ip_list=ips,
        )
        assert issued.secret is not None and issued.passphrase is not None
        key = MainKey(uid=uid, api_key=issued.key.api_key, secret=issued.secret, passphrase=issued.passphrase)
    RECORD.secret(key.secret, key.passphrase)
    return key


# ccxt ----------------------------------------------------------------------------------------------


class RecordingBitget(ccxt.bitget):  # type: ignore[misc]
    """ccxt's own ``bitget``, unchanged, except that every response body is recorded."""

    def handle_errors(self, code: int, reason: str, url: str, method: str, headers: Any, body: str,
                      response: Any, request_headers: Any, request_body: Any) -> Any:
        RECORD.body(httpx.URL(url).path, code, (body or "").encode())
        return super().handle_errors(code, reason, url, method, headers, body, response, request_headers,
                                     request_body)


def ccxt_client(server: Server, api_key: str, secret: str, passphrase: str) -> ccxt.bitget:
    exchange = RecordingBitget({"apiKey": api_key, "secret": secret, "password": passphrase, "timeout": 20_000,
                               "enableRateLimit": False})
    for group in list(exchange.urls["api"]):
        exchange.urls["api"][group] = server.base_url
    return exchange


def ccxt_main(server: Server, key: MainKey) -> ccxt.bitget:
    return ccxt_client(server, key.api_key, key.secret, key.passphrase)


# raw signed requests ---------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, method: str, path: str, query: str, body: bytes) -> str:
    """Bitget's HMAC: base64(HMAC-SHA256(secret, ts + METHOD + path [+ '?' + query] + body))."""
    prehash = (timestamp + method.upper() + path + ("?" + query if query else "")).encode() + body
    return base64.b64encode(hmac.new(secret.encode(), prehash, hashlib.sha256).digest()).decode()


def now_ms() -> str:
    return str(int(time.time() * 1000))


def _record_response(response: httpx.Response) -> None:
    response.read()
    RECORD.body(response.request.url.path, response.status_code, response.content)


class Raw:
    """Signs exactly the bytes it sends, with httpx; every knob can be bent to make a bad request."""

    def __init__(self, server: Server, api_key: str, secret: str, passphrase: str,
                 local_address: str | None = None) -> None:
        self.server = server
        self.api_key = api_key
        self.secret = secret
        self.passphrase = passphrase
        transport = httpx.HTTPTransport(local_address=local_address) if local_address else None
        self.http = httpx.Client(base_url=server.base_url, timeout=20, transport=transport,
                                 event_hooks={"response": [_record_response]})

    def request(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes | str | Any = b"",
        timestamp: str | None = None,
        headers: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        sign_with: str | None = None,
        signed_query: str | None = None,
        signed_body: bytes | None = None,
    ) -> httpx.Response:
        if not isinstance(body, bytes | str):
            body = json.dumps(body, separators=(",", ":"))
        raw = body.encode() if isinstance(body, str) else body
        ts = timestamp or now_ms()
        signature = sign(
            sign_with or self.secret, ts, method, path,
            query if signed_query is None else signed_query, raw if signed_body is None else signed_body,
        )
        sent = {
            "ACCESS-KEY": self.api_key,
            "ACCESS-SIGN": signature,
            "ACCESS-TIMESTAMP": ts,
            "ACCESS-PASSPHRASE": self.passphrase,
            "Content-Type": "application/json",
            "locale": "en-US",
        }
        sent.update(headers or {})
        for name in drop:
            sent.pop(name, None)
        url = path + ("?" + query if query else "")
        return self.http.request(method, url, content=raw or None, headers=sent)

    def post(self, name: str, body: Any, **kwargs: Any) -> httpx.Response:
        return self.request("POST", USER + name, body=body, **kwargs)

    def get(self, name: str, query: str = "", **kwargs: Any) -> httpx.Response:
        return self.request("GET", USER + name, query=query, **kwargs)

    def close(self) -> None:
        self.http.close()


def raw_main(server: Server, key: MainKey, local_address: str | None = None) -> Raw:
    return Raw(server, key.api_key, key.secret, key.passphrase, local_address)


def assert_error(response: httpx.Response, code: str, msg: str, status: int = 400) -> None:
    body = response.json()
    assert (response.status_code, body["code"], body["msg"]) == (status, code, msg), response.text
    assert body["data"] is None


def assert_ok(response: httpx.Response) -> Any:
    body = response.json()
    assert response.status_code == 200 and body["code"] == "00000" and body["msg"] == "success", response.text
    assert isinstance(body["requestTime"], int)
    return body["data"]


def sub_accounts(raw: Raw) -> list[dict[str, Any]]:
    """Every sub-account of the caller's main account (one page of up to 500)."""
    return list(assert_ok(raw.get("virtual-subaccount-list", "limit=500"))["subAccountList"])


def keys_of(raw: Raw, sub_uid: str) -> list[dict[str, Any]]:
    return list(assert_ok(raw.get("virtual-subaccount-apikey-list", f"subAccountUid={sub_uid}")))


def batch_entry(name: str | None = None, **fields: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"subAccountName": name or new_name(), "passphrase": new_passphrase(), "label": "lbl"}
    entry.update(fields)
    return entry


def paced(seconds: float = 1.05) -> None:
    """Waits out a 1/s rate-limit window."""
    time.sleep(seconds)
