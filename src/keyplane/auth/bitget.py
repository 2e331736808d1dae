"""Bitget v2 signing: base64(HMAC-SHA256(secret, timestamp + METHOD + path [+ '?' + query] + body)).

The signature is checked over what the client actually sent. Real clients differ in what they sign:
ccxt puts the percent-encoded query in the URL but signs the *decoded* one; python-bitget signs an
unsorted, unencoded query and JSON with spaces (which arrives byte for byte, so it verifies as is);
Bitget's own SDK signs ``''`` for a body of ``{}``. ``prehash_candidates`` yields each reading of the
received bytes, the exact one first, so a valid request costs one HMAC.

**One signature, one request.** A second reading must never let one signature stand for other
parameters than the ones it was made for. The decoded reading (ccxt's: ``rawencode`` = ``unquote`` of
the ``quote``-encoded, key-sorted query; ``%24`` is sent back as ``$``) is accepted only where the
decoded text names exactly the parameters the raw query names, compared name by name and value by value
after percent-decoding each one (``decoded_query``):

- split on ``&``, then on the first ``=``, the raw query's percent-decoded names and values must equal
  the decoded text's own split (so no escape may decode to ``&`` anywhere, nor to ``=`` in a name:
  ``a=1%26b%3D2`` is one parameter ``a`` = ``1&b=2``, and never passes for the signature of ``a=1&b=2``);
- the decoded text must not decode any further (no ``%XX`` left in it): a signature over ``x=%41``
  is valid for the raw ``x=%41`` (meaning ``A``), so ``x=%2541`` (meaning ``%41``) must not take it;
- no raw ``+`` in the query: a form decoder (Python's ``parse_qsl``, servlet containers) reads it as a
  space and others as ``+``, so no one decoded text is its meaning. ccxt sends ``+`` as ``%2B`` and a
  space as ``%20``: values holding ``+``, ``/``, spaces or non-ASCII text still verify;
- every ``%`` starts a valid escape and the escapes decode as UTF-8 (``%FF`` and ``%FE`` would both
  decode to U+FFFD otherwise: two byte strings behind one signature).

What stays: a signature over text holding ``+`` is valid both for ``%2B`` (ccxt) and for the raw ``+``
(a client that signs as it sends); an upstream that reads ``+`` as a space sees a space in the second.
That changes a character inside a value, never which parameters there are. A value holding ``&`` (sent
as ``%26``) cannot verify in its decoded reading: the signed text does not say whether ``&`` separated.

**Where the query ends.** The prehash puts the body right after the query (or the path) with nothing
between: a signature over ``GET /p?a=1&b=2`` is as valid for ``GET /p?a=1`` with the body ``&b=2``, or
``GET /p`` with the body ``?a=1&b=2``, and an upstream ignores a GET's body. So the verifier takes a body
only where no query was sent and only if it opens a JSON value (``{`` or ``[``, what every client sends:
ccxt's GETs have no body and its POSTs no query, [clients.md]); then the first ``?`` after the path
starts the query and nothing else does, and no byte of one part can be read as the other's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

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


_HEX = frozenset("0123456789abcdefABCDEF")


def _has_escape(text: str, *, only_valid: bool) -> bool:
    """Whether ``text`` holds a ``%XX`` escape (``only_valid``), or a ``%`` that starts no valid one."""
    at = text.find("%")
    while at >= 0:
        valid = at + 2 < len(text) and text[at + 1] in _HEX and text[at + 2] in _HEX
        if valid is only_valid:
            return True
        at = text.find("%", at + 1)
    return False


def _decode_component(text: str) -> str | None:
    """A query name or value percent-decoded, or None when an escape is malformed or not UTF-8."""
    if _has_escape(text, only_valid=False):
        return None
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        return None


def decoded_query(query: str) -> str | None:
    """The query as ccxt signs it (each name and value percent-decoded), or None where that text could name
    other parameters than the query as sent, or where it is the query itself (the module's rule)."""
    if "%" not in query or "+" in query:
        return None
    parts: list[str] = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        decoded_name = _decode_component(name)
        if decoded_name is None or "&" in decoded_name or "=" in decoded_name:
            return None
        decoded = decoded_name
        if equals:
            decoded_value = _decode_component(value)
            if decoded_value is None or "&" in decoded_value:
                return None
            decoded += "=" + decoded_value
        if "%" in decoded and _has_escape(decoded, only_valid=True):  # it would decode further: ambiguous
            return None
        parts.append(decoded)
    return "&".join(parts)


def prehash_candidates(timestamp: str, method: str, path: str, query: str, body: bytes) -> Iterator[bytes]:
    yield prehash(timestamp, method, path, query, body)
    if query:
        decoded = decoded_query(query)
        if decoded is not None and decoded != query:
            yield prehash(timestamp, method, path, decoded, body)
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

    def matches(self, message: bytes, signature: bytes) -> bytes | None:
        """The signature's bytes (the digest, which the base64 text encodes) if it signs ``message``, else
        None: the verifier takes a replay record's token from them without decoding the text again."""
        mac = self._template.copy()
        mac.update(message)
        digest = mac.digest()
        return digest if hmac.compare_digest(binascii.b2a_base64(digest, newline=False), signature) else None


class RsaChecker:
    """Checks RSA PKCS#1 v1.5 / SHA-256 signatures against a registered public key."""

    __slots__ = ("_public_key",)

    def __init__(self, public_key_pem: str) -> None:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("not an RSA public key")
        self._public_key = key

    def matches(self, message: bytes, signature: bytes) -> bytes | None:
        """The signature's bytes if it signs ``message``, else None (as ``HmacChecker.matches``)."""
        try:
            raw = base64.b64decode(signature, validate=True)
            self._public_key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError):
            return None
        return raw


Checker = HmacChecker | RsaChecker  # what a Bitget key's cache entry holds
