"""The values the use-cases take and give back; none of them knows HTTP or a dialect."""

from __future__ import annotations

from dataclasses import dataclass, field

from keyplane.domain.model import Account, ApiKey


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: the calling account, the key it signed with, and the IP it came from."""

    account: Account
    api_key: str | None = None
    ip: str | None = None
    token: str | None = None  # the operator token's id, for a native management call made for the account
    # which of the key's secrets signed: "current", or "previous" (a rotation's grace period): the audit says
    secret: str = "current"


@dataclass(frozen=True, slots=True)
class Operator:
    """The operator through the native management API: the id of the token it presented and its IP. The
    command line is the operator with neither (``by=None``)."""

    token: str | None = None
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just made or reset: the only time its secret (and a generated passphrase) is shown."""

    key: ApiKey
    secret: str | None = field(repr=False)  # shown to its owner once; never in a repr or traceback
    passphrase: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class NewKeySpec:
    """What a new sub-account key is made of, already in keyplane's terms."""

    label: str
    passphrase: str | None = field(default=None, repr=False)  # never in a repr or traceback
    permissions: tuple[str, ...] = ()
    ip_list: tuple[str, ...] = ()
    key_type: int | None = None
    expires_at: int | None = None  # Unix ms (services/lifecycle.py); None: the key does not expire


@dataclass(frozen=True, slots=True)
class NewSubAccountWithKey:
    name: str
    key: NewKeySpec  # its repr leaves out the passphrase
    label: str = ""
    permissions: tuple[str, ...] = ()


@dataclass(slots=True)
class SubAccountOutcome:
    """Per-name result of a create that documents partial failure (Bitget's failureList)."""

    created: list[Account] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
