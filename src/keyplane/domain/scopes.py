"""What a key may do: Bitget permission names, WhiteBIT key types, and the account ceiling."""

from __future__ import annotations

from keyplane.domain.model import Account, ApiKey

# WhiteBIT's spotEnabled/collateralEnabled map onto the shared permission vocabulary, so that a
# sub-account made through either dialect carries one set of permissions.
SPOT = ("spot_trade",)
COLLATERAL = ("margin_trade", "contract_trade")


def permissions_from_whitebit(spot_enabled: bool, collateral_enabled: bool) -> tuple[str, ...]:
    return (SPOT if spot_enabled else ()) + (COLLATERAL if collateral_enabled else ())


def whitebit_flags(permissions: tuple[str, ...]) -> tuple[bool, bool]:
    """``(spotEnabled, collateralEnabled)`` of an account's permissions."""
    return "spot_trade" in permissions, any(p in permissions for p in COLLATERAL)


def bitget_grants(key: ApiKey, account: Account, need: str) -> bool:
    """Whether a Bitget key of ``account`` holds permission ``need``.

    Any trading or transfer permission implies ``read`` (Bitget's read-write keys can read). For a
    sub-account, its own permission list is a ceiling on its keys, except for ``read``.
    """
    if need == "read":
        return bool(key.permissions)
    if need not in key.permissions:
        return False
    return account.is_main or need in account.permissions


def whitebit_grants(key: ApiKey, need_type: int, path: str) -> bool:
    """A WhiteBIT key needs a type at least ``need_type`` and, if it restricts endpoints, ``path``."""
    key_type = key.key_type or 1
    if key_type < need_type:
        return False
    if key.restricts_endpoints:
        return any(rule.enabled and rule.url == path for rule in key.endpoints)
    return True
