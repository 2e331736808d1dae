"""What the verifier takes (a raw signed request) and what it gives back (a result, never an exception)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyplane.domain.model import Account, ApiKey, Scheme
from keyplane.domain.requirements import Requirement  # re-exported: it lives below auth/


@dataclass(slots=True)
class SignedRequest:
    """A request exactly as received: header names lower-case, the query string and body as sent."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str


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

    @property
    def valid(self) -> bool:
        return self.reason is Reason.VALID


__all__ = ["RateLimitState", "Reason", "Requirement", "SignedRequest", "VerifyResult"]
