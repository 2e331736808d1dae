"""Bitget v2 signing: base64(HMAC-SHA256(secret, timestamp + METHOD + path [+ '?' + query] + body)).

The signature is checked over what the client actually sent. Real clients differ in what they sign:
ccxt puts the percent-encoded query in the URL but signs the *decoded* one; python-bitget signs an
unsorted, unencoded query and JSON with spaces (which arrives byte for byte, so it verifies as is);
Bitget's own SDK signs ``''`` for a body of ``{}``. ``prehash_candidates`` yields each reading of the
received bytes, the exact one first, so a valid request costs one HMAC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import unquote, unquote_plus

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HEADER_KEY = "access-key"
HEADER_SIGN = "access-sign"
HEADER_TIMESTAMP = "access-timestamp"
HEADER_PASSPHRASE = "access-passphrase"

# "The timestamp of the request must be within 30 seconds of the API server time" [BG-MD 0007].
TIMESTAMP_WINDOW_MS = 30_000


def prehash(timestamp: str, method: str, path: str, query: str, body: bytes) -> bytes:
    head = timestamp + method.upper() + path
    if query:
        head += "?" + query
    return head.encode() + body


def prehash_candidates(timestamp: str, method: str, path: str, query: str, body: bytes) -> Iterator[bytes]:
    yield prehash(timestamp, method, path, query, body)
    if query and ("%" in query or "+" in query):
        decoded = unquote(query)
        yield prehash(timestamp, method, path, decoded, body)
        plus_decoded = unquote_plus(query)
        if plus_decoded != decoded:
            yield prehash(timestamp, method, path, plus_decoded, body)
    if body == b"{}":
        yield prehash(timestamp, method, path, query, b"")


def sign_hmac(secret: bytes, message: bytes) -> str:
    return base64.b64encode(hmac.new(secret, message, hashlib.sha256).digest()).decode()


def sign_rsa(private_key_pem: bytes, message: bytes) -> str:
    key = serialization.load_pem_private_key(private_key_pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode()


class HmacChecker:
    """Checks HMAC signatures of one secret; the keyed hash is prepared once and copied per request."""

    __slots__ = ("_template",)

    def __init__(self, secret: bytes) -> None:
        template = hmac.new(secret, digestmod=hashlib.sha256)
        # OpenSSL's keyed state itself when the hmac module exposes it: its copy() is one C call,
        # where hmac.HMAC.copy() builds a Python object first (bench/README.md, the profile)
        self._template = getattr(template, "_hmac", None) or template

    def matches(self, message: bytes, signature: bytes) -> bool:
        mac = self._template.copy()
        mac.update(message)
        return hmac.compare_digest(binascii.b2a_base64(mac.digest(), newline=False), signature)


class RsaChecker:
    """Checks RSA PKCS#1 v1.5 / SHA-256 signatures against a registered public key."""

    __slots__ = ("_public_key",)

    def __init__(self, public_key_pem: str) -> None:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("not an RSA public key")
        self._public_key = key

    def matches(self, message: bytes, signature: bytes) -> bool:
        try:
            raw = base64.b64decode(signature, validate=True)
            self._public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return False
        return True
