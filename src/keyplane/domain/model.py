"""The things keyplane keeps: accounts (main and sub), API keys and audit events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AccountStatus(enum.StrEnum):
    NORMAL = "normal"
    FREEZE = "freeze"


class Scheme(enum.StrEnum):
    """The signing scheme, and so the dialect, a key belongs to."""

    BITGET = "bitget"
    WHITEBIT = "whitebit"


class SignType(enum.StrEnum):
    HMAC = "hmac"
    RSA = "rsa"


@dataclass(frozen=True, slots=True)
class Account:
    """A main account (``parent_uid`` is None) or one of its sub-accounts.

    ``uid`` is what Bitget calls ``subAccountUid``/``userId``; ``public_id`` is WhiteBIT's UUID ``id``.
    """

    uid: int
    public_id: str
    parent_uid: int | None
    name: str
    label: str
    email: str | None
    share_kyc: bool
    permissions: tuple[str, ...]
    status: AccountStatus
    created_at: int
    updated_at: int

    @property
    def is_main(self) -> bool:
        return self.parent_uid is None

    @property
    def main_uid(self) -> int:
        return self.uid if self.parent_uid is None else self.parent_uid


@dataclass(frozen=True, slots=True)
class EndpointRule:
    """One entry of a key's endpoint allowlist (WhiteBIT's ``urls``/``accessEndpoints``)."""

    url: str
    enabled: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's public record. Its secret never lives here (see ``KeyCredentials``)."""

    id: str
    api_key: str
    account_uid: int
    scheme: Scheme
    sign_type: SignType
    label: str
    permissions: tuple[str, ...]
    key_type: int | None
    ip_list: tuple[str, ...]
    endpoints: tuple[EndpointRule, ...]
    enabled: bool
    created_at: int
    updated_at: int
    # Unix ms after which the key verifies nothing (None: never)
    expires_at: int | None = None
    # Unix ms until which the secret a rotation replaced still verifies (None: there is none)
    previous_until: int | None = None
    # when (Unix ms) and from which address the key last verified; recorded in batches (auth/usage.py)
    last_used_at: int | None = None
    last_used_ip: str | None = None

    @property
    def restricts_endpoints(self) -> bool:
        return any(rule.enabled for rule in self.endpoints)

    def expired(self, at_ms: int) -> bool:
        return self.expires_at is not None and at_ms >= self.expires_at

    def in_grace(self, at_ms: int) -> bool:
        """Whether the secret a rotation replaced still verifies at ``at_ms``."""
        return self.previous_until is not None and at_ms < self.previous_until


@dataclass(frozen=True, slots=True)
class KeyCredentials:
    """What verification needs besides the public record: sealed, never plaintext."""

    # sealed and hashed, but still nothing a repr, log line or traceback should carry
    sealed_secret: bytes | None = field(repr=False)
    public_key_pem: str | None
    passphrase_hash: str | None = field(repr=False)
    # the secret a rotation replaced and the passphrase hash it was used with (see ``ApiKey.previous_until``)
    previous_sealed_secret: bytes | None = field(default=None, repr=False)
    previous_passphrase_hash: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    at: int
    actor_uid: int | None
    actor_key: str | None
    action: str
    target: str
    ip: str | None
    detail: dict[str, object] = field(default_factory=dict)
    actor_token: str | None = None  # the operator token of a native management call (its id)
    account_uid: int | None = None  # the main account whose plane changed
