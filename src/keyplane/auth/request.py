"""What the verifier takes (a raw signed request) and what it gives back (a result, never an exception)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keyplane.domain.model import Account, ApiKey, Scheme


@dataclass(slots=True)
class SignedRequest:
    """A request exactly as received: header names lower-case, the query string and body as sent."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes
    client_ip: str


@dataclass(frozen=True, slots=True)
class Requirement:
    """What an endpoint needs from the key that signs a request to it."""

    permission: str | None = None  # Bitget permission name; None: any valid key
    key_type: int = 1  # WhiteBIT: 1 info+trading, 2 adds deposits and withdrawals
    main_only: bool = False
    main_needs_ip: bool = False  # Bitget's management endpoints: the main key must be bound to an IP
    rate_limit: str | None = None  # "5/second", counted per caller UID and ``rate_name``
    rate_name: str = "default"


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
