"""A hand-made WhiteBIT v4 client for tests that need to send what no real client would: it signs a body
exactly as given (or lets the test spoil the payload, the signature or the nonce) and posts it with httpx.
Real clients (ccxt, whitebit-python-sdk) drive the success paths; this one drives the refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from keyplane.config import Settings
from keyplane.domain.model import Scheme
from keyplane.runtime import build_runtime

_ACCOUNT_NUMBERS = itertools.count(1)

_COUNTER = itertools.count()


def now_ms() -> int:
    return int(time.time() * 1000)


def compact(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha512).hexdigest()


@dataclass
class WhitebitClient:
    """One API key. ``nonce`` grows by at least one per request, like a well-behaved client's."""

    base_url: str
    api_key: str
    secret: str
    last_nonce: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10))

    def next_nonce(self) -> int:
        self.last_nonce = max(self.last_nonce + 1, now_ms())
        return self.last_nonce

    def body(self, path: str, fields: dict[str, Any] | None = None, *, window: bool = False) -> dict[str, Any]:
        nonce = now_ms() + next(_COUNTER) % 1000 if window else self.next_nonce()
        return {"request": path, "nonce": str(nonce), "nonceWindow": window, **(fields or {})}

    def post_raw(
        self,
        path: str,
        body: bytes,
        *,
        payload: str | None = None,
        signature: str | None = None,
        headers: dict[str, str | bytes | None] | None = None,
        api_key: str | None = None,
    ) -> httpx.Response:
        payload = base64.b64encode(body).decode() if payload is None else payload
        signature = sign(self.secret, payload) if signature is None else signature
        sent: dict[str, str | bytes | None] = {
            "Content-Type": "application/json",
            "X-TXC-APIKEY": self.api_key if api_key is None else api_key,
            "X-TXC-PAYLOAD": payload,
            "X-TXC-SIGNATURE": signature,
        }
        for name, value in (headers or {}).items():
            if value is None:
                sent.pop(name, None)
            else:
                sent[name] = value
        sent = {k: v for k, v in sent.items() if v is not None}
        return self.http.post(self.base_url + path, content=body, headers=sent)

    def post(self, path: str, fields: dict[str, Any] | None = None, *, window: bool = False) -> httpx.Response:
        return self.post_raw(path, compact(self.body(path, fields, window=window)))

    def call(self, path: str, fields: dict[str, Any] | None = None, expect: int = 200) -> Any:
        response = self.post(path, fields)
        assert response.status_code == expect, (response.status_code, response.text)
        return response.json()


class Operator:
    """Makes main accounts and main keys straight in a server's store, as ``keyplane accounts create`` and
    ``keyplane keys create`` do, without starting a process per call (the CLI itself is used by
    test_whitebit_ccxt.py). The server loads such a key from the store on its first request."""

    def __init__(self, database_url: str) -> None:
        self.runtime = build_runtime(Settings(database_url=database_url))

    def main_account(self, name: str = "venue") -> str:
        """A new main account named ``name`` and a unique tail (main-account names are unique)."""
        return str(self.runtime.service.accounts.create_main_account(f"{name}-{next(_ACCOUNT_NUMBERS)}").uid)

    def whitebit_main_key(self, uid: str, ips: tuple[str, ...] = ()) -> dict[str, Any]:
        issued = self.runtime.service.keys.issue_main_key(int(uid), Scheme.WHITEBIT, ip_list=ips)
        return {"apiKey": issued.key.api_key, "apiSecret": issued.secret, "id": issued.key.id}

    def bitget_main_key(self, uid: str, ips: tuple[str, ...] = ("127.0.0.1",)) -> dict[str, Any]:
        perms = ("read", "spot_trade", "margin_trade", "contract_trade", "transfer")
        issued = self.runtime.service.keys.issue_main_key(int(uid), Scheme.BITGET, permissions=perms, ip_list=ips)
        return {"apiKey": issued.key.api_key, "secretKey": issued.secret, "passphrase": issued.passphrase}

    def client(self, base_url: str, name: str = "venue") -> WhitebitClient:
        """A new main account with one WhiteBIT key, as a client."""
        key = self.whitebit_main_key(self.main_account(name))
        return WhitebitClient(base_url, key["apiKey"], key["apiSecret"])

    def close(self) -> None:
        self.runtime.close()
