"""Who is signed in: an operator token (``keyplane tokens create``) and what its scopes grant.

The console asks the token service and nothing else: a token is found by its text on sign-in, and by its
id on every later request, so a revoked token ends its sessions at their next request. What each page and
action needs is said in the token layer's own words (``keyplane.domain.tokens.Need``): the console grants
exactly what the native API does (``keyplane.domain.tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass

from keyplane.domain.tokens import Need, OperatorToken, Scope
from keyplane.services.tokens import TokenService
from keyplane.store import Store
from keyplane.store import tokens as token_rows

READ_ACCOUNTS = Need.READ_ACCOUNTS.value
WRITE_ACCOUNTS = Need.WRITE_ACCOUNTS.value
READ_KEYS = Need.READ_KEYS.value
WRITE_KEYS = Need.WRITE_KEYS.value
READ_AUDIT = Need.READ_AUDIT.value



def scopes_granting(needs: tuple[str, ...]) -> str:
    """The scopes that grant one of ``needs``, for a refusal's message: "read, accounts or all"."""
    names = [
        scope.value for scope in Scope
        if any(OperatorToken(id="", name="", scopes=(scope,), hint="", created_at=0).grants(Need(need))
               for need in needs)
    ]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


@dataclass(frozen=True, slots=True)
class Operator:
    token_id: str
    name: str
    scopes: tuple[str, ...]
    grants: frozenset[str]  # the needs its scopes grant

    def may(self, need: str) -> bool:
        return need in self.grants


class TokenDirectory:
    """The token service, as the console asks it: ``sign_in`` by the token's text, ``operator`` by its id
    (one indexed read each, no cache: a revoked token is refused at its sessions' next request)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.tokens = TokenService(store)

    def sign_in(self, text: str) -> Operator | None:
        token = self.tokens.authenticate(text)
        return _operator(token) if token is not None else None

    def operator(self, token_id: str) -> Operator | None:
        with self.store.reading() as tx:
            token = token_rows.get_token(tx, token_id)
        return _operator(token) if token is not None and not token.revoked else None

    def record(self, action: str, operator: Operator, ip: str) -> None:
        """A sign-in or sign-out in the audit log, under the token's id."""
        with self.store.transaction() as tx:
            tx.add_audit(action=action, target=operator.token_id, account_uid=None, actor_uid=None, actor_key=None,
                         ip=ip or None, actor_token=operator.token_id, detail={"name": operator.name})


def _operator(token: OperatorToken) -> Operator:
    return Operator(
        token_id=token.id, name=token.name, scopes=tuple(scope.value for scope in token.scopes),
        grants=frozenset(need.value for need in Need if token.grants(need)),
    )
