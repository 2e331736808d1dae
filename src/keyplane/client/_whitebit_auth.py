"""WhiteBIT API v4 request signing as an ``httpx.Auth``.

A private call is a POST whose JSON body carries ``request`` (the URL's path), ``nonce`` and
``nonceWindow`` beside the call's own fields; ``X-TXC-PAYLOAD`` = base64(body) and ``X-TXC-SIGNATURE`` =
hex(HMAC-SHA512(secret, payload)) [WB-DOCS authentication]. The body is built as ccxt 4.5.90 builds it
(``whitebit.sign``): those three fields first, the nonce as a JSON string, then the call's fields, compact
JSON with non-ASCII text as UTF-8 (WhiteBIT answers spaced JSON "Invalid payload.").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Generator
from typing import Any

import httpx

from keyplane.client._clock import Clock, Increasing

_OWNED = ("request", "nonce")
_STALE = ("content-length", "transfer-encoding")  # the body is replaced: httpx sets them anew


def encode_body(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class WhiteBITAuth(httpx.Auth):
    """Signs requests for WhiteBIT API v4, and for keyplane's WhiteBIT dialect, with an API key.

    Send the call's own fields as a JSON object (``json=``); the signer adds ``request``, ``nonce`` and
    ``nonceWindow`` and signs the body::

        auth = WhiteBITAuth("api key", "secret")
        with httpx.Client(base_url="https://whitebit.com", auth=auth) as client:
            client.post("/api/v4/main-account/balance", json={"ticker": "USDT"})

    Nonces are Unix milliseconds (from ``clock``, default this machine's clock), strictly increasing per
    instance and thread-safe. WhiteBIT refuses a nonce not above the key's last one, so requests that may
    arrive out of order (several threads or tasks on one key) want ``nonce_window=True``: then any unique
    nonce within 5 s of the server's time is taken. A request's own ``"nonceWindow"`` field overrides the
    instance's setting, as it does in ccxt. Leave httpx's ``follow_redirects`` off (its default): a
    redirected request would carry the signed headers to wherever it points.
    """

    requires_request_body = True

    def __init__(self, api_key: str, secret: str | bytes, *, nonce_window: bool = False,
                 clock: Clock | None = None) -> None:
        if not api_key:
            raise ValueError("api_key must not be empty")
        if not secret:
            raise ValueError("secret must not be empty")
        self._api_key = api_key
        self._keyed = hmac.new(secret.encode() if isinstance(secret, str) else secret, digestmod=hashlib.sha512)
        self._nonce_window = bool(nonce_window)
        self._nonces = Increasing(clock)

    @property
    def api_key(self) -> str:
        return self._api_key

    def __repr__(self) -> str:
        return f"WhiteBITAuth(api_key={self._api_key[:8] + '...'!r}, nonce_window={self._nonce_window!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        yield self._signed(request)

    def _signed(self, request: httpx.Request) -> httpx.Request:
        path, _, query = request.url.raw_path.decode("ascii").partition("?")
        if query:
            # WhiteBIT signs the body alone: query parameters would travel unsigned (keyplane refuses them)
            raise ValueError("WhiteBIT signs the JSON body only: send the parameters with json=, not params=")
        fields = self._fields(request.content)
        window = fields.pop("nonceWindow", self._nonce_window)
        if not isinstance(window, bool):
            raise ValueError("nonceWindow must be true or false")
        body = encode_body({"request": path, "nonce": str(self._nonces()), "nonceWindow": window, **fields})
        payload = base64.b64encode(body)
        headers = request.headers.copy()
        for name in _STALE:
            headers.pop(name, None)
        headers["Content-Type"] = "application/json"
        headers["X-TXC-APIKEY"] = self._api_key
        headers["X-TXC-PAYLOAD"] = payload.decode()
        headers["X-TXC-SIGNATURE"] = self._signature(payload)
        return httpx.Request(request.method, request.url, headers=headers, content=body,
                             extensions=request.extensions)

    def _signature(self, payload: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(payload)
        return mac.hexdigest()

    @staticmethod
    def _fields(content: bytes) -> dict[str, Any]:
        if not content.strip():
            return {}
        try:
            fields = json.loads(content)
        except ValueError:
            raise ValueError("a WhiteBIT request's body must be a JSON object (send it with json=)") from None
        if not isinstance(fields, dict):
            raise ValueError("a WhiteBIT request's body must be a JSON object (send it with json=)")
        owned = [name for name in _OWNED if name in fields]
        if owned:
            raise ValueError(f"the signer sets {' and '.join(owned)}: leave it out of the body")
        return fields
