"""The one error tree of keyplane.

Every rule the domain or the service enforces fails with one of these; each dialect maps them to its
own wire codes in one table at its edge (``dialects/bitget.py``, ``dialects/whitebit.py``).
Verification failures are *not* exceptions: the verifier returns a ``VerifyResult`` with a reason.

    KeyplaneError
    ├── InvalidInput                 a field breaks a documented rule (carries ``field``)
    │   ├── InvalidName              sub-account name / alias
    │   ├── InvalidPassphrase
    │   ├── InvalidLabel
    │   ├── InvalidIp
    │   ├── InvalidPermission
    │   └── InvalidEndpoint          an endpoint that a sub-account key may not be allowed
    ├── NotFound
    │   ├── AccountNotFound          unknown account, or not a sub-account of the caller
    │   ├── ApiKeyNotFound           unknown key, or not a key of the caller's sub-accounts
    │   └── TokenNotFound            unknown operator token
    ├── Conflict
    │   ├── NameTaken                the name is used by another sub-account (venue-wide)
    │   ├── DuplicateInRequest       the same name twice in one batch
    │   ├── IpAlreadyListed
    │   ├── IpNotListed
    │   ├── AlreadyInState           block an already blocked sub-account, and so on
    │   ├── KeyNotUsable             rotate an expired key, or a disabled one with a grace period
    │   ├── IdempotencyKeyReused     an Idempotency-Key sent again with another request
    │   └── IdempotencyInProgress    the first request with this Idempotency-Key is still running
    ├── LimitReached                 a policy limit (carries ``limit``)
    │   ├── SubAccountLimit
    │   ├── ApiKeyLimit
    │   ├── IpLimit
    │   └── BatchTooLarge
    ├── Forbidden
    │   ├── NotMainAccount           a sub-account's key called a main-account endpoint
    │   ├── WrongPassphrase          a passphrase given to confirm a change does not match
    │   └── GrantExceeded            a key would grant what the caller's own key lacks (``field``: what)
    └── Unavailable                  the store (or Redis) cannot be reached now: an outage, not a rule
"""

from __future__ import annotations


class KeyplaneError(Exception):
    """Base of every error keyplane raises on purpose."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(KeyplaneError):
    """A request field breaks a documented rule."""


class InvalidName(InvalidInput):
    pass


class InvalidPassphrase(InvalidInput):
    pass


class InvalidLabel(InvalidInput):
    pass


class InvalidIp(InvalidInput):
    pass


class InvalidPermission(InvalidInput):
    pass


class InvalidEndpoint(InvalidInput):
    pass


class NotFound(KeyplaneError):
    pass


class AccountNotFound(NotFound):
    pass


class ApiKeyNotFound(NotFound):
    pass


class TokenNotFound(NotFound):
    pass


class Conflict(KeyplaneError):
    pass


class NameTaken(Conflict):
    pass


class DuplicateInRequest(Conflict):
    pass


class IpAlreadyListed(Conflict):
    pass


class IpNotListed(Conflict):
    pass


class KeyNotUsable(Conflict):
    """The key's state forbids the change (an expired key is not rotated, see services/lifecycle.py)."""


class AlreadyInState(Conflict):
    pass


class IdempotencyKeyReused(Conflict):
    pass


class IdempotencyInProgress(Conflict):
    pass


class LimitReached(KeyplaneError):
    """A policy limit; ``limit`` is the number in force."""

    def __init__(self, message: str, *, limit: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.limit = limit


class SubAccountLimit(LimitReached):
    pass


class ApiKeyLimit(LimitReached):
    pass


class IpLimit(LimitReached):
    pass


class BatchTooLarge(LimitReached):
    pass


class Forbidden(KeyplaneError):
    pass


class NotMainAccount(Forbidden):
    pass


class WrongPassphrase(Forbidden):
    pass


class GrantExceeded(Forbidden):
    """The caller's key cannot make or change a key that holds more than it does itself; ``field`` names
    the permission it lacks (``read_and_write`` for a read-only key, which grants nothing)."""


class Unavailable(KeyplaneError):
    """The store (or Redis) could not be reached; each dialect answers its 503-class error.

    Raised at the edges (``keyplane.outages.unavailable``) from the driver's connection errors, so that
    an outage becomes an answer. A transaction that fails this way before its commit changed nothing.
    """
