"""Operator tokens: what the venue's own services present to the native management API (``/v1/``).

A token carries scopes; each management route needs one ``Need``:

- ``read``: read main accounts, sub-accounts and keys;
- ``accounts``: read and change main accounts and sub-accounts;
- ``keys``: read and change keys;
- ``audit``: read audit events;
- ``all``: everything above.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from keyplane.errors import InvalidInput

TOKEN_PREFIX = "kpt_"
ID_PREFIX = "tok_"


class Scope(enum.StrEnum):
    READ = "read"
    ACCOUNTS = "accounts"
    KEYS = "keys"
    AUDIT = "audit"
    ALL = "all"


class Need(enum.StrEnum):
    """What a management route does, in the words of its scopes."""

    READ_ACCOUNTS = "accounts:read"
    WRITE_ACCOUNTS = "accounts:write"
    READ_KEYS = "keys:read"
    WRITE_KEYS = "keys:write"
    READ_AUDIT = "audit:read"


_GRANTS: dict[Scope, frozenset[Need]] = {
    Scope.READ: frozenset({Need.READ_ACCOUNTS, Need.READ_KEYS}),
    Scope.ACCOUNTS: frozenset({Need.READ_ACCOUNTS, Need.WRITE_ACCOUNTS}),
    Scope.KEYS: frozenset({Need.READ_KEYS, Need.WRITE_KEYS}),
    Scope.AUDIT: frozenset({Need.READ_AUDIT}),
    Scope.ALL: frozenset(Need),
}

# the scope that names a need, for the message of a 403
SCOPE_FOR: dict[Need, str] = {
    Need.READ_ACCOUNTS: "read, accounts or all",
    Need.WRITE_ACCOUNTS: "accounts or all",
    Need.READ_KEYS: "read, keys or all",
    Need.WRITE_KEYS: "keys or all",
    Need.READ_AUDIT: "audit or all",
}


def parse_scopes(given: Iterable[object]) -> tuple[Scope, ...]:
    """Known scope names, each once, in the order given; at least one."""
    out: list[Scope] = []
    for entry in given:
        try:
            scope = Scope(str(entry).strip().lower())
        except ValueError:
            names = ", ".join(scope.value for scope in Scope)
            raise InvalidInput(f"unknown scope {entry!r}: use {names}", field="scope") from None
        if scope not in out:
            out.append(scope)
    if not out:
        raise InvalidInput("a token needs at least one scope", field="scope")
    return tuple(out)


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """A token's public record: never the token, never its hash."""

    id: str
    name: str
    scopes: tuple[Scope, ...]
    hint: str  # the prefix and the first characters: enough to tell tokens apart in a list
    created_at: int
    revoked_at: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def grants(self, need: Need) -> bool:
        return any(need in _GRANTS[scope] for scope in self.scopes)
