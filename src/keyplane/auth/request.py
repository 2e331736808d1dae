"""What the verifier takes (a raw signed request) and what it gives back (a result, never an exception)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from keyplane.domain.model import Account, ApiKey, Scheme
from keyplane.domain.requirements import Requirement  # re-exported: it lives below auth/

# Headers whose values are credentials: a repr shows that they were sent, never what they hold.
SECRET_HEADERS = frozenset({"access-sign", "access-passphrase", "x-txc-signature", "authorization", "cookie"})


@dataclass(slots=True)
class SignedRequest:
    """A request exactly as received: header names lower-case, the query string and body as sent.

    Its repr (and so any traceback or log line that formats it) leaves out the signature, passphrase
    and bearer-token headers and the body (a key's create or modify body carries a passphrase).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    client_ip: str

    def __repr__(self) -> str:
        names = sorted(self.headers)
        shown = {name: "***" if name in SECRET_HEADERS else self.headers[name] for name in names}
        return (
            f"SignedRequest(method={self.method!r}, path={self.path!r}, query={self.query!r}, "
            f"headers={shown!r}, body=<{len(self.body)} bytes>, client_ip={self.client_ip!r})"
        )


class Reason(enum.StrEnum):
    VALID = "VALID"
    MALFORMED = "MALFORMED"
    MISSING_KEY = "MISSING_KEY"
    MISSING_SIGNATURE = "MISSING_SIGNATURE"
    MISSING_TIMESTAMP = "MISSING_TIMESTAMP"
    MISSING_PASSPHRASE = "MISSING_PASSPHRASE"
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"
    EXPIRED_TIMESTAMP = "EXPIRED_TIMESTAMP"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    BAD_PASSPHRASE = "BAD_PASSPHRASE"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    KEY_DISABLED = "KEY_DISABLED"
    KEY_EXPIRED = "KEY_EXPIRED"  # past its ``expires_at``: answered as the dialect answers an invalid key
    IP_NOT_ALLOWED = "IP_NOT_ALLOWED"
    MAIN_KEY_NEEDS_IP = "MAIN_KEY_NEEDS_IP"
    NOT_MAIN_ACCOUNT = "NOT_MAIN_ACCOUNT"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RATE_LIMITED = "RATE_LIMITED"
    MISSING_PAYLOAD = "MISSING_PAYLOAD"
    PAYLOAD_MISMATCH = "PAYLOAD_MISMATCH"
    MISSING_REQUEST = "MISSING_REQUEST"
    REQUEST_MISMATCH = "REQUEST_MISMATCH"
    MISSING_NONCE = "MISSING_NONCE"
    INVALID_NONCE_WINDOW = "INVALID_NONCE_WINDOW"
    NONCE_TOO_LOW = "NONCE_TOO_LOW"
    NONCE_OUT_OF_WINDOW = "NONCE_OUT_OF_WINDOW"
    NONCE_REPLAYED = "NONCE_REPLAYED"
    UNAVAILABLE = "UNAVAILABLE"  # the store (or Redis) failed: an outage is an answer, not an exception
    WOULD_BLOCK = "WOULD_BLOCK"  # only ever in the ``WOULD_BLOCK`` result of ``verify(may_block=False)``
    REQUEST_REPLAYED = "REQUEST_REPLAYED"  # Bitget: a replay-protected request already accepted
    # a request target an upstream could read otherwise than the verifier did (domain/target.py)
    BAD_TARGET = "BAD_TARGET"
    # no endpoint rule of the key's dialect names this method and path (endpoints.py)
    UNKNOWN_ENDPOINT = "UNKNOWN_ENDPOINT"


@dataclass(slots=True)  # not frozen: one is made per verification, and frozen costs 4x to construct
class RateLimitState:
    limit: int
    remaining: int
    reset_ms: int


@dataclass(slots=True)
class VerifyResult:
    """Valid, or the reason it is not. ``detail`` names e.g. the missing permission."""

    reason: Reason
    scheme: Scheme | None = None
    key: ApiKey | None = None
    account: Account | None = None
    detail: str = ""
    rate_limit: RateLimitState | None = None
    payload: dict[str, Any] | None = None  # WhiteBIT: the decoded, verified JSON body
    # which secret signed: "current", or "previous" (the one a rotation replaced, in its grace period)
    secret: str = "current"

    @property
    def valid(self) -> bool:
        return self.reason is Reason.VALID


__all__ = ["RateLimitState", "Reason", "Requirement", "SignedRequest", "VerifyResult"]


# What ``Verifier.verify(..., may_block=False)`` answers when the next step would wait: compared by
# identity (``result is WOULD_BLOCK``), never changed, never handed to a client.
WOULD_BLOCK = VerifyResult(Reason.WOULD_BLOCK)
