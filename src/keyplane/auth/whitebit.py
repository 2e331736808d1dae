"""WhiteBIT v4 signing: hex(HMAC-SHA512(secret, X-TXC-PAYLOAD)), where the payload is base64(body).

The payload must decode to the body byte for byte, and the body must be compact JSON: WhiteBIT
"rejects spaced JSON with HTTP 400 Invalid payload.", so keyplane does too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

HEADER_KEY = "x-txc-apikey"
HEADER_PAYLOAD = "x-txc-payload"
HEADER_SIGNATURE = "x-txc-signature"

# With nonceWindow the nonce is a Unix-ms timestamp "within ±5 seconds of server time".
NONCE_WINDOW_MS = 5_000

_WHITESPACE = b" \t\r\n"


def payload_of(body: bytes) -> str:
    return base64.b64encode(body).decode()


def sign(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha512).hexdigest()


def payload_matches_body(payload: str, body: bytes) -> bool:
    try:
        # strict: only the base64 alphabet, exact padding (base64.b64decode(validate=True), without its wrapper)
        return binascii.a2b_base64(payload, strict_mode=True) == body
    except (binascii.Error, ValueError):
        return False


def is_spaced_json(body: bytes) -> bool:
    """True when the body has whitespace outside JSON strings (the common compact case is one C call)."""
    if len(body.translate(None, _WHITESPACE)) == len(body):  # no whitespace byte at all
        return False
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b" \t\r\n":
            return True
    return False


NONCE_MAX = (1 << 63) - 1  # the store's BIGINT: a larger nonce is not one keyplane can keep


def parse_nonce(value: object) -> int | None:
    """A nonce may be a JSON integer or a string of digits (ccxt sends a string, the SDK an int)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and 0 <= value <= NONCE_MAX:
        return value
    return None


class HmacChecker:
    """Checks signatures of one secret; the keyed hash is prepared once and copied per request."""

    __slots__ = ("_template",)

    def __init__(self, secret: bytes) -> None:
        template = hmac.new(secret, digestmod=hashlib.sha512)
        # OpenSSL's keyed state itself when the hmac module exposes it: its copy() is one C call,
        # where hmac.HMAC.copy() builds a Python object first (bench/README.md, the profile)
        self._template = getattr(template, "_hmac", None) or template

    def matches(self, payload: bytes, signature: bytes) -> bool:
        mac = self._template.copy()
        mac.update(payload)
        expected = binascii.hexlify(mac.digest())
        # clients send lower-case hex; upper-case is accepted too, at the cost of a second compare
        return hmac.compare_digest(expected, signature) or hmac.compare_digest(expected, signature.lower())
