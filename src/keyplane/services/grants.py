"""What a calling key may grant or change (issue 8, item 6): a key never mints or widens what it lacks."""

from __future__ import annotations

from collections.abc import Iterable

from keyplane.domain.model import ApiKey, Scheme
from keyplane.errors import GrantExceeded

# What ``GrantExceeded`` names when a read-only Bitget key tries to grant: the permission type of Bitget's
# older API (``permType``: ``read_and_write`` | ``readonly``), the one word for "any write permission".
READ_WRITE = "read_and_write"


def bitget_held(caller: ApiKey) -> set[str]:
    """What a Bitget key may grant: its permissions, and ``read``, which any permission implies (as the
    verifier's ``bitget_grants`` reads them)."""
    return {*caller.permissions, "read"} if caller.permissions else set()


def check_grant(caller: ApiKey | None, scheme: Scheme, permissions: Iterable[str], key_type: int | None) -> None:
    """A key made or changed by ``caller`` holds nothing ``caller`` lacks.

    Bitget: every permission must be the caller's own, and a read-only caller (nothing but ``read``)
    grants nothing at all, not even ``read``. WhiteBIT: the new key's type (1 info and trading, 2 adds
    deposits and withdrawals) is at most the caller's. The operator (no caller key) grants anything.
    """
    if caller is None:
        return
    if scheme is Scheme.BITGET:
        held = bitget_held(caller)
        if not held - {"read"}:
            raise GrantExceeded("a read-only key cannot grant keys", field=READ_WRITE)
        for permission in permissions:
            if permission not in held:
                raise GrantExceeded(f"the caller's key lacks {permission}", field=permission)
    elif (key_type or 1) > (caller.key_type or 1):
        raise GrantExceeded("the caller's key type is lower than the key's", field="type")


def check_manages(caller: ApiKey | None, key: ApiKey) -> None:
    """``caller`` may change ``key`` (its label, addresses, secret) only if it holds all ``key`` holds:
    otherwise a weaker main key could, say, lift the IP allowlist of a withdrawal key."""
    check_grant(caller, key.scheme, key.permissions, key.key_type)
