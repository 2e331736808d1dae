"""Who is signed in: an operator token (``keyplane tokens create``) and what its scopes grant.

The console asks the token service and nothing else: a token is found by its text on sign-in, and by its
id on every later request, so a revoked token ends its sessions at their next request. What each page and
action needs is said in the token layer's own words (``keyplane.domain.tokens.Need``): the console grants
exactly what the native API does.
"""

from __future__ import annotations

from dataclasses import dataclass

READ_ACCOUNTS = "accounts:read"
WRITE_ACCOUNTS = "accounts:write"
READ_KEYS = "keys:read"
WRITE_KEYS = "keys:write"
READ_AUDIT = "audit:read"

# the scopes that give a need, for a refusal's message
SCOPES_FOR = {
    READ_ACCOUNTS: "read, accounts or all",
    WRITE_ACCOUNTS: "accounts or all",
    READ_KEYS: "read, keys or all",
    WRITE_KEYS: "keys or all",
    READ_AUDIT: "audit or all",
}


@dataclass(frozen=True, slots=True)
class Operator:
    token_id: str
    name: str
    scopes: tuple[str, ...]
    grants: frozenset[str]  # the needs its scopes grant

    def may(self, need: str) -> bool:
        return need in self.grants


class TokenDirectory:
    """The token service, as the console asks it (``sign_in`` by the token's text, ``operator`` by its id)."""

    def __init__(self, service: object) -> None:
        self.service = service

    def sign_in(self, text: str) -> Operator | None:
        return None  # the token layer (keyplane.services.tokens) is wired here when it lands

    def operator(self, token_id: str) -> Operator | None:
        return None
