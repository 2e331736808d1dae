"""Bitget API v2 request signing as an ``httpx.Auth``: HMAC-SHA256 or RSA, with the key's passphrase.

``ACCESS-SIGN`` = base64(HMAC-SHA256(secret, prehash)), or base64(RSASSA-PKCS1-v1_5-SHA256(private key,
prehash)) for an RSA key, where prehash = timestamp + METHOD + path ['?' + query] + body [BG-MD 0004-0006].

**The query.** A request's query is sent as ccxt 4.5.90 sends it (``bitget.sign``): parameters sorted
by name (Bitget's docs: "sorted in ascending alphabetical order by key"), names and values
percent-encoded but for ``A-Z a-z 0-9 _ . - ~`` (``urllib.parse.quote``), ``$`` then sent bare; and it
is signed *decoded* (ccxt's ``rawencode``), which is what Bitget checks for values outside ASCII (ccxt's
comment in ``sign``). The query is first read as a form decoder reads it (``+`` is a space, as httpx
writes one), so ``params=`` or a hand-written URL put on the wire what ccxt would for the same
parameters, signed alike.

Where the decoded text could name other parameters than the ones sent (a value holding ``&``, a name
holding ``=``, or text that would decode further, such as a value ``%41``) keyplane does not take it as
the signed text (``keyplane/auth/bitget.py``: one signature, one request), so the encoded query is signed
as sent instead: keyplane checks that reading first, and it is the reading Bitget's RSA sample signs
(``urlencode``, [BG-MD 0006]). ccxt signs the decoded text there too, and keyplane refuses it.

The body is signed exactly as sent (httpx's ``json=`` writes compact JSON, as ccxt does).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Generator
from urllib.parse import quote, unquote_plus

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from keyplane.client._clock import Clock, Increasing

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


def canonical_query(raw: str) -> tuple[str, str]:
    """(the query to send, the text to sign) for a query as httpx built it (``raw``, percent-encoded)."""
    pairs: list[tuple[str, str, str]] = []
    try:
        for part in raw.split("&"):
            if part:
                name, equals, value = part.partition("=")
                pairs.append((unquote_plus(name, errors="strict"), equals, unquote_plus(value, errors="strict")))
    except UnicodeDecodeError:  # escapes that are not UTF-8: no text to sign but the query as written
        return raw, raw
    pairs.sort(key=lambda pair: pair[0])  # stable: repeated names keep their order
    wire = "&".join(quote(name, safe="") + equals + quote(value, safe="") for name, equals, value in pairs)
    wire = wire.replace("%24", "$")  # as ccxt does (its PR #21169)
    decoded = "&".join(name + equals + value for name, equals, value in pairs)
    ambiguous = (
        any("&" in name or "=" in name or "&" in value for name, _, value in pairs)
        or _ESCAPE.search(decoded) is not None
    )
    return wire, wire if ambiguous else decoded


def prehash(timestamp: str, method: str, path: str, query: str, body: bytes) -> bytes:
    head = timestamp + method.upper() + path
    if query:
        head += "?" + query
    return head.encode() + body


class _Hmac:
    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)  # keyed once, copied per request

    def __call__(self, message: bytes) -> str:
        mac = self._keyed.copy()
        mac.update(message)
        return base64.b64encode(mac.digest()).decode()


class _Rsa:
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    def __call__(self, message: bytes) -> str:
        return base64.b64encode(self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


def _load_rsa(private_key: str | bytes | rsa.RSAPrivateKey) -> rsa.RSAPrivateKey:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key
    data = private_key.encode() if isinstance(private_key, str) else private_key
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # from None: the parser's own error may quote the key's bytes
        raise ValueError("private_key must be an unencrypted RSA private key in PEM form "
                         "(load an encrypted one with cryptography and pass the key object)") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private_key is not an RSA key")
    return key


def _required(name: str, value: str | bytes) -> None:
    if not value:
        raise ValueError(f"{name} must not be empty")


class BitgetAuth(httpx.Auth):
    """Signs requests for Bitget API v2, and for keyplane's Bitget dialect, with an API key.

    HMAC key (the secret Bitget or keyplane showed once)::

        auth = BitgetAuth("bg_...", "secret...", "passphrase")
        with httpx.Client(base_url="https://api.bitget.com", auth=auth) as client:
            client.get("/api/v2/spot/account/info")

    RSA key (the private half of the public key registered with the key)::

        auth = BitgetAuth.rsa("bg_...", private_key_pem, "passphrase")

    ``locale`` is sent as Bitget's ``locale`` header (e.g. ``en-US``) when given. ``clock`` gives the
    milliseconds since the epoch to sign with (default: this machine's clock); Bitget refuses a timestamp
    more than 30 s from its own time, so pass one that adds your offset to it if your clock is off.
    Timestamps strictly increase per instance (thread-safe), so two identical requests never carry one
    signature. One instance serves any number of clients, sync or async.

    Leave httpx's ``follow_redirects`` off (its default): httpx re-sends a redirected request with its
    headers, and drops only ``Authorization`` on the way to another host, so the passphrase would go along.
    """

    requires_request_body = True

    def __init__(
        self,
        api_key: str,
        secret: str | bytes,
        passphrase: str,
        *,
        locale: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        _required("secret", secret)
        self._setup(api_key, passphrase, _Hmac(secret.encode() if isinstance(secret, str) else secret),
                    "hmac", locale, clock)

    @classmethod
    def rsa(
        cls,
        api_key: str,
        private_key: str | bytes | rsa.RSAPrivateKey,
        passphrase: str,
        *,
        locale: str | None = None,
        clock: Clock | None = None,
    ) -> BitgetAuth:
        """An RSA key's signer: ``private_key`` is its PEM text (PKCS#1 or PKCS#8) or a loaded key."""
        auth = cls.__new__(cls)
        auth._setup(api_key, passphrase, _Rsa(_load_rsa(private_key)), "rsa", locale, clock)
        return auth

    def _setup(self, api_key: str, passphrase: str, signer: _Hmac | _Rsa, sign_type: str, locale: str | None,
               clock: Clock | None) -> None:
        _required("api_key", api_key)
        _required("passphrase", passphrase)
        self._api_key = api_key
        self._passphrase = passphrase
        self._signer = signer
        self._sign_type = sign_type
        self._locale = locale
        self._timestamps = Increasing(clock)

    @property
    def api_key(self) -> str:
        return self._api_key

    def __repr__(self) -> str:
        # the API key names the key (keyplane logs its first 8 characters); secret, private key and
        # passphrase never appear
        return f"BitgetAuth(api_key={self._api_key[:8] + '...'!r}, sign_type={self._sign_type!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        self._sign(request)
        yield request

    def _sign(self, request: httpx.Request) -> None:
        """Signs ``request`` in place: its query put in Bitget's order and encoding, the ACCESS-* headers set."""
        path, _, query = request.url.raw_path.decode("ascii").partition("?")
        signed_query = ""
        if query:
            wire, signed_query = canonical_query(query)
            if wire != query:
                request.url = request.url.copy_with(query=wire.encode("ascii") if wire else None)
        body = request.content
        if body and "content-type" not in request.headers:
            request.headers["Content-Type"] = "application/json"  # Bitget: "for all POST request"
        timestamp = str(self._timestamps())
        headers = request.headers
        headers["ACCESS-KEY"] = self._api_key
        headers["ACCESS-SIGN"] = self._signer(prehash(timestamp, request.method, path, signed_query, body))
        headers["ACCESS-TIMESTAMP"] = timestamp
        headers["ACCESS-PASSPHRASE"] = self._passphrase
        if self._locale:
            headers["locale"] = self._locale
